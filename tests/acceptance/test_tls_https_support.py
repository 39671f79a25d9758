"""Acceptance: TLS/HTTPS support (plan HIGH-tls-https-support), black box over HTTPS.

In-process mode cannot reuse the plain-HTTP acceptance gateway, so these tests start `gateway run` itself
as a subprocess with certificates made by trustme (a test CA, a server certificate for 127.0.0.1, a client
certificate) and talk to it like any client: the openai SDK and httpx verifying the server against the CA,
raw TLS handshakes, mutual TLS, and `gateway check` on a broken TLS config.

Against a live gateway (`--gateway-url https://...`) the HTTPS checks run against it with the system trust
store; a live gateway on plain HTTP skips them, and the checks that need a gateway started with special
settings (mTLS, broken files) run in-process only.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import trustme

pytestmark = pytest.mark.feature("tls-https-support")

KEY = "sk-acceptance-tls"
STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class HTTPSGateway:
    url: str
    key: str
    verify: ssl.SSLContext | bool
    live: bool


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.org")
    other = ca.issue_cert("other.example.org")
    root = tmp_path_factory.mktemp("tls-acceptance")
    files = {name: root / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    files["server.pem"].write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["server.key"]))
    files["client.pem"].write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client.key"]))
    files["other.key"] = root / "other.key"
    other.private_key_pem.write_to_path(str(files["other.key"]))
    return files


def trusting(pki: dict[str, Path], *, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    if client_cert:
        context.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    return context


def write_config(path: Path, pki: dict[str, Path], extra_tls: str = "", key_file: Path | None = None) -> Path:
    path.write_text(
        f"""server:
  tls:
    cert_file: {pki["server.pem"]}
    key_file: {key_file or pki["server.key"]}
{extra_tls}auth:
  keys:
    - {{name: tls, key: {KEY}}}
providers:
  - {{name: mock, type: mock}}
models:
  - {{name: mock-echo, routes: [{{provider: mock, model: mock-echo}}]}}
"""
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def run_gateway(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start `gateway run --config FILE` on a free port; waits until it answers over HTTPS."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(extra_tls: str = "") -> str:
        workdir = tmp_path_factory.mktemp("gw")
        config = write_config(workdir / "gateway.yaml", pki, extra_tls)
        log = workdir / "gateway.log"
        port = free_port()
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--port", str(port)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gateway run exited:\n{log.read_text()}")
            try:
                httpx.get(f"{url}/health", verify=trusting(pki, client_cert=True), timeout=1)
                return url
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway run did not start serving HTTPS:\n{log.read_text()}")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def https_gateway(gateway, pki: dict[str, Path], run_gateway) -> HTTPSGateway:
    if gateway.live:
        if not gateway.url.startswith("https://"):
            pytest.skip("the live gateway is served over plain HTTP")
        return HTTPSGateway(gateway.url, gateway.key, True, True)
    return HTTPSGateway(run_gateway(), KEY, trusting(pki), False)


def in_process_only(gateway) -> None:
    if gateway.live:
        pytest.skip("needs a gateway started with test certificates")


@contextmanager
def verifying_sdk_client(gateway: HTTPSGateway) -> Iterator[openai.OpenAI]:
    """The real openai SDK over httpx, trusting only the test CA: a certificate it cannot verify fails."""
    with httpx.Client(verify=gateway.verify) as http_client:
        yield openai.OpenAI(
            base_url=f"{gateway.url}/v1", api_key=gateway.key, http_client=http_client, max_retries=0
        )


@pytest.mark.feature("tls-https-support", step=(3, 4, 5, 6))
def test_openai_sdk_talks_to_the_gateway_over_verified_https(https_gateway: HTTPSGateway) -> None:
    with verifying_sdk_client(https_gateway) as client:
        reply = client.chat.completions.create(
            model="mock-echo", messages=[{"role": "user", "content": "hello over https"}]
        )
    assert reply.choices[0].message.content == "hello over https"


@pytest.mark.feature("tls-https-support", step=(3, 6))
def test_streaming_works_over_https(https_gateway: HTTPSGateway) -> None:
    with verifying_sdk_client(https_gateway) as client:
        stream = client.chat.completions.create(
            model="mock-echo", messages=[{"role": "user", "content": "stream over https"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "stream over https"


@pytest.mark.feature("tls-https-support", step=(2, 6))
def test_handshake_is_tls_1_2_or_newer_with_http_1_1(https_gateway: HTTPSGateway) -> None:
    url = httpx.URL(https_gateway.url)
    context = (
        https_gateway.verify
        if isinstance(https_gateway.verify, ssl.SSLContext)
        else ssl.create_default_context()
    )
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((url.host, url.port or 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=url.host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.selected_alpn_protocol() == "http/1.1"


def handshake(url: str, context: ssl.SSLContext) -> str | None:
    parsed = httpx.URL(url)
    with (
        socket.create_connection((parsed.host, parsed.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parsed.host) as tls,
    ):
        return tls.version()


@pytest.mark.feature("tls-https-support", step=(2, 5, 6))
def test_the_minimum_tls_version_is_enforced_by_the_server(
    gateway, https_gateway: HTTPSGateway, pki: dict[str, Path], run_gateway
) -> None:
    in_process_only(gateway)
    tls12_client = trusting(pki)
    tls12_client.maximum_version = ssl.TLSVersion.TLSv1_2
    # The default floor (TLS 1.2) admits a TLS 1.2 client...
    assert handshake(https_gateway.url, tls12_client) == "TLSv1.2"
    # ...and a gateway configured with `min_version: "1.3"` refuses that same client.
    strict = run_gateway('    min_version: "1.3"\n')
    assert handshake(strict, trusting(pki)) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(strict, tls12_client)


@pytest.mark.feature("tls-https-support", step=(5, 6))
def test_a_client_that_does_not_trust_the_certificate_is_refused(
    gateway, https_gateway: HTTPSGateway
) -> None:
    in_process_only(gateway)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_gateway.url}/health")


@pytest.mark.feature("tls-https-support", step=(2, 5, 6))
def test_mutual_tls_admits_only_clients_with_a_certificate(
    gateway, pki: dict[str, Path], run_gateway
) -> None:
    in_process_only(gateway)
    url = run_gateway(f"    client_ca_file: {pki['ca.pem']}\n    client_auth: required\n")
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": "mtls"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(verify=trusting(pki, client_cert=True)) as client:
        response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "mtls"
    with pytest.raises(httpx.TransportError), httpx.Client(verify=trusting(pki)) as client:
        client.post(f"{url}/v1/chat/completions", json=body, headers=headers)


@pytest.mark.feature("tls-https-support", step=(1, 5, 6))
def test_mismatched_certificate_and_key_are_a_clear_config_error(
    gateway, pki: dict[str, Path], tmp_path: Path
) -> None:
    in_process_only(gateway)
    config = write_config(tmp_path / "broken.yaml", pki, key_file=pki["other.key"])
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.tls" in result.stderr
    assert f"key_file {pki['other.key']} does not match the certificate" in result.stderr
    assert "Traceback" not in result.stderr
