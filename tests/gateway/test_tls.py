"""TLS on both sides, with certificates made by trustme: HTTPS serving (httpx and the openai SDK verifying
against the test CA), the TLS version floor, mTLS, upstream verification with a private CA and a client
certificate, and config errors for missing and mismatched files."""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from starlette.types import ASGIApp
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions
from gateway.providers.registry import build_providers
from gateway.tls import (
    ServerTLSConfig,
    TLSFileError,
    UpstreamTransport,
    certificate_not_after,
    server_context,
    upstream_transport,
    uvicorn_ssl_options,
)
from gateway.transport import GatewayTransport, default_transport
from gateway.upstream_client import UpstreamSender

KEY = "sk-tls-test-key-0001"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CA, server cert/key for 127.0.0.1, a client cert/key, a second unrelated key, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.org")
    other = ca.issue_cert("other.example.org")
    files = {
        "ca": root / "ca.pem",
        "cert": root / "server.crt",
        "key": root / "server.key",
        "client_cert": root / "client.crt",
        "client_key": root / "client.key",
        "other_key": root / "other.key",
        "not_pem": root / "junk.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["key"]))
    files["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    files["not_pem"].write_text("this is not a certificate\n")
    return files


def client_context(
    pki: dict[str, Path], *, cert: bool = False, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert:
        context.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    if max_version is not None:
        context.maximum_version = max_version
    return context


def gateway_yaml(tls: str = "", providers: str = "  - {name: mock, type: mock}", route: str = "mock") -> str:
    server = f"server:\n{tls}" if tls else "server: {}"
    return f"""
{server}
auth:
  keys:
    - {{name: t, key: {KEY}}}
providers:
{providers}
models:
  - {{name: echo, routes: [{{provider: {route}, model: mock-echo}}]}}
usage: {{database: ":memory:"}}
"""


def server_tls_yaml(pki: dict[str, Path], **extra: str) -> str:
    lines = [f"    cert_file: {pki['cert']}", f"    key_file: {pki['key']}"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "  tls:\n" + "\n".join(lines)


@contextmanager
def serve_tls(app: ASGIApp, tls: ServerTLSConfig | None) -> Iterator[int]:
    """Serve ``app`` like ``gateway run`` does (uvicorn with our TLS options) on a free loopback port."""
    with run_server(app, **uvicorn_ssl_options(tls)) as url:
        port = httpx.URL(url).port
        assert port is not None
        yield port


def chat_body(text: str = "hello over tls") -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": text}]}


# --- config validation ---------------------------------------------------------------------------------


def test_valid_server_tls_loads(pki: dict[str, Path]) -> None:
    config = parse_config(gateway_yaml(server_tls_yaml(pki)), "gw.yaml")
    assert config.server.tls is not None
    assert config.server.tls.min_version == "1.2"


def test_missing_certificate_file_is_a_config_error(pki: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    text = gateway_yaml(f"  tls:\n    cert_file: {missing}\n    key_file: {pki['key']}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml")
    assert f"server.tls.cert_file: cert_file {missing} does not exist" in str(caught.value)
    assert "gw.yaml:4:" in str(caught.value)


def test_mismatched_key_is_a_config_error_naming_both_files(pki: dict[str, Path]) -> None:
    text = gateway_yaml(f"  tls:\n    cert_file: {pki['cert']}\n    key_file: {pki['other_key']}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml")
    message = str(caught.value)
    assert "server.tls:" in message
    assert f"key_file {pki['other_key']} does not match the certificate in cert_file {pki['cert']}" in message


def test_certificate_that_is_not_pem_is_a_config_error(pki: dict[str, Path]) -> None:
    text = gateway_yaml(f"  tls:\n    cert_file: {pki['not_pem']}\n    key_file: {pki['key']}")
    with pytest.raises(ConfigError, match=r"cert_file .*junk\.pem is not a PEM certificate"):
        parse_config(text, "gw.yaml")


def test_encrypted_key_needs_the_right_password(pki: dict[str, Path], tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki["key"].read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    good = ServerTLSConfig(cert_file=pki["cert"], key_file=encrypted, key_password="s3cret")
    assert server_context(good).minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(TLSFileError, match="wrong password"):
        server_context(good.model_copy(update={"key_password": "wrong"}))


def test_client_ca_that_is_not_pem_is_a_config_error(pki: dict[str, Path]) -> None:
    text = gateway_yaml(server_tls_yaml(pki, client_ca_file=str(pki["not_pem"])))
    with pytest.raises(ConfigError, match=r"client_ca_file .* is not a PEM certificate bundle"):
        parse_config(text, "gw.yaml")


def test_upstream_tls_files_are_checked(pki: dict[str, Path], tmp_path: Path) -> None:
    providers = (
        "  - name: up\n    type: openai\n    base_url: https://127.0.0.1:1/v1\n    tls:\n"
        f"      ca_file: {tmp_path / 'missing-ca.pem'}\n"
        f"      client_cert_file: {pki['client_cert']}\n      client_key_file: {pki['other_key']}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(gateway_yaml(providers=providers, route="up"), "gw.yaml")
    assert "providers[0].tls.ca_file: ca_file" in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_providers_sharing_an_origin_must_share_tls_settings(pki: dict[str, Path]) -> None:
    providers = (
        "  - {name: a, type: openai, base_url: 'https://127.0.0.1:9/v1'}\n"
        f"  - {{name: b, type: openai, base_url: 'https://127.0.0.1:9/v2', tls: {{ca_file: {pki['ca']}}}}}"
    )
    with pytest.raises(
        ConfigError, match=r"providers\[1\]\.base_url: provider 'a' uses the same host and port"
    ):
        parse_config(gateway_yaml(providers=providers, route="a"), "gw.yaml")


def test_server_context_settings(pki: dict[str, Path]) -> None:
    context = server_context(ServerTLSConfig(cert_file=pki["cert"], key_file=pki["key"], min_version="1.3"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_NONE
    assert context.options & ssl.OP_NO_COMPRESSION
    mtls = server_context(
        ServerTLSConfig(
            cert_file=pki["cert"], key_file=pki["key"], client_ca_file=pki["ca"], client_auth="optional"
        )
    )
    assert mtls.verify_mode == ssl.CERT_OPTIONAL


# --- serving HTTPS -------------------------------------------------------------------------------------


def tls_gateway(pki: dict[str, Path], **extra: str) -> GatewayConfig:
    return parse_config(gateway_yaml(server_tls_yaml(pki, **extra)), "gw.yaml")


def test_https_answers_httpx_and_the_openai_sdk_verifying_the_ca(pki: dict[str, Path]) -> None:
    config = tls_gateway(pki)
    with serve_tls(create_app(config), config.server.tls) as port:
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, verify=client_context(pki)) as client:
            response = client.post(
                "/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {KEY}"}
            )
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "hello over tls"
            assert response.http_version == "HTTP/1.1"

        with httpx.Client(verify=client_context(pki)) as http_client:
            sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, http_client=http_client, max_retries=0)
            reply = sdk.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "sdk over tls"}]
            )
            assert reply.choices[0].message.content == "sdk over tls"

        # A client that does not trust the CA refuses the connection.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/health")


def test_plain_http_is_not_served_on_the_tls_port(pki: dict[str, Path]) -> None:
    config = tls_gateway(pki)
    with serve_tls(create_app(config), config.server.tls) as port:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health")
        except httpx.TransportError:
            return  # the TLS server hung up on a plain-text request
        assert response.status_code != 200


def negotiated(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def test_tls_version_floor_is_enforced(pki: dict[str, Path]) -> None:
    config = tls_gateway(pki)
    with serve_tls(create_app(config), config.server.tls) as port:
        assert negotiated(port, client_context(pki)) == "TLSv1.3"
        assert negotiated(port, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    strict = tls_gateway(pki, min_version='"1.3"')
    with serve_tls(create_app(strict), strict.server.tls) as port, pytest.raises(ssl.SSLError):
        negotiated(port, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: dict[str, Path]) -> None:
    config = tls_gateway(pki, client_ca_file=str(pki["ca"]))
    with serve_tls(create_app(config), config.server.tls) as port:
        url = f"https://127.0.0.1:{port}/health"
        assert httpx.get(url, verify=client_context(pki, cert=True)).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(url, verify=client_context(pki))


def test_optional_client_certificates(pki: dict[str, Path]) -> None:
    config = tls_gateway(pki, client_ca_file=str(pki["ca"]), client_auth="optional")
    with serve_tls(create_app(config), config.server.tls) as port:
        url = f"https://127.0.0.1:{port}/health"
        assert httpx.get(url, verify=client_context(pki)).status_code == 200
        assert httpx.get(url, verify=client_context(pki, cert=True)).status_code == 200


# --- upstream verification -----------------------------------------------------------------------------


def upstream_config(port: int, tls: str) -> GatewayConfig:
    head = f"  - name: up\n    type: openai\n    base_url: https://127.0.0.1:{port}/v1\n"
    providers = head + f"    api_key: sk-up\n{tls}"
    return parse_config(gateway_yaml(providers=providers, route="up"), "gw.yaml")


async def ask(config: GatewayConfig) -> httpx.Response:
    app = create_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        return await client.post(
            "/v1/chat/completions",
            json=chat_body("via private ca"),
            headers={"authorization": f"Bearer {KEY}"},
        )


def test_upstream_behind_a_private_ca_needs_its_ca_bundle(pki: dict[str, Path]) -> None:
    upstream = ServerTLSConfig(cert_file=pki["cert"], key_file=pki["key"])
    with serve_tls(MockUpstream(MockOptions()), upstream) as port:
        trusted = asyncio.run(ask(upstream_config(port, f"    tls: {{ca_file: {pki['ca']}}}")))
        assert trusted.status_code == 200
        assert trusted.json()["choices"][0]["message"]["content"] == "via private ca"

        # Without the CA the default trust store refuses the certificate: the upstream is unreachable.
        untrusted = asyncio.run(ask(upstream_config(port, "")))
        assert untrusted.status_code == 502
        error = untrusted.json()["error"]
        assert error["type"] == "upstream_error" and error["code"] == "upstream_unreachable"
        assert error["message"] == "Upstream 'up' is unreachable (TLS certificate not trusted)."


def test_a_tls_upstream_gets_its_own_pool_and_the_direct_path(pki: dict[str, Path]) -> None:
    # Its origin's pool is the gateway's own transport with the origin's context, so the provider sends
    # through the gateway's own client (gateway/upstream_client.py); the private-CA test above uses it.
    config = upstream_config(8443, f"    tls: {{ca_file: {pki['ca']}}}")
    default = default_transport()
    built = upstream_transport(config.providers, default)
    assert isinstance(built, UpstreamTransport)
    sender = build_providers(config, built)["up"].sender()  # type: ignore[attr-defined]
    assert isinstance(sender, UpstreamSender)
    origin = built.by_origin[("https", "127.0.0.1", 8443)]
    assert isinstance(origin, GatewayTransport) and origin is not default
    assert sender.client is origin.upstream
    assert sender.client.context.verify_mode == ssl.CERT_REQUIRED


def test_upstream_client_certificate(pki: dict[str, Path]) -> None:
    upstream = ServerTLSConfig(cert_file=pki["cert"], key_file=pki["key"], client_ca_file=pki["ca"])
    with serve_tls(MockUpstream(MockOptions()), upstream) as port:
        with_cert = (
            f"    tls:\n      ca_file: {pki['ca']}\n"
            f"      client_cert_file: {pki['client_cert']}\n      client_key_file: {pki['client_key']}"
        )
        assert asyncio.run(ask(upstream_config(port, with_cert))).status_code == 200
        without = asyncio.run(ask(upstream_config(port, f"    tls: {{ca_file: {pki['ca']}}}")))
        assert without.status_code == 502
        assert without.json()["error"]["type"] == "upstream_error"


def test_min_version_may_be_written_as_a_number(pki: dict[str, Path]) -> None:
    config = parse_config(gateway_yaml(server_tls_yaml(pki, min_version="1.3")), "gw.yaml")
    assert config.server.tls is not None and config.server.tls.min_version == "1.3"
    with pytest.raises(ConfigError, match=r"server\.tls\.min_version: Input should be '1\.2' or '1\.3'"):
        parse_config(gateway_yaml(server_tls_yaml(pki, min_version="1.1")), "gw.yaml")


def test_provider_tls_needs_a_base_url(pki: dict[str, Path]) -> None:
    providers = f"  - {{name: a, type: openai, api_key: sk-x, tls: {{ca_file: {pki['ca']}}}}}"
    with pytest.raises(ConfigError, match=r"providers\[0\]\.base_url: required with tls"):
        parse_config(gateway_yaml(providers=providers, route="a"), "gw.yaml")


def test_an_expired_certificate_is_a_config_error(
    ca: trustme.CA, pki: dict[str, Path], tmp_path: Path
) -> None:
    old = ca.issue_cert(
        "127.0.0.1", not_before=datetime.datetime(2020, 1, 1), not_after=datetime.datetime(2021, 3, 4, 5, 6)
    )
    cert, key = tmp_path / "old.pem", tmp_path / "old.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in old.cert_chain_pems))
    old.private_key_pem.write_to_path(str(key))
    with pytest.raises(ConfigError) as caught:
        parse_config(gateway_yaml(f"  tls:\n    cert_file: {cert}\n    key_file: {key}"), "gw.yaml")
    assert f"cert_file {cert}: the certificate expired on 2021-03-04 05:06 UTC" in str(caught.value)


def test_a_certificate_about_to_expire_is_a_warning(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    soon = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(days=3)
    leaf = ca.issue_cert("127.0.0.1", not_after=soon)
    cert, key = tmp_path / "soon.pem", tmp_path / "soon.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    assert certificate_not_after(cert) == soon.replace(microsecond=0, tzinfo=datetime.UTC)
    with caplog.at_level(logging.WARNING, logger="gateway.tls"):
        ServerTLSConfig(cert_file=cert, key_file=key)
    assert f"cert_file {cert} expires on" in caplog.text
    caplog.clear()
    far = ca.issue_cert("127.0.0.1")  # trustme's default: valid for decades
    cert.write_bytes(b"".join(blob.bytes() for blob in far.cert_chain_pems))
    far.private_key_pem.write_to_path(str(key))
    with caplog.at_level(logging.WARNING, logger="gateway.tls"):
        ServerTLSConfig(cert_file=cert, key_file=key)
    assert "expires on" not in caplog.text
