"""The `gateway` command line: check, the demo banner, `gateway run` and `mock-upstream` as processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from click.testing import CliRunner

from gateway.cli import demo_banner, main
from gateway.config import load_config


def test_check_embedded_default() -> None:
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("embedded default: ok")


def test_check_reports_every_problem_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "providers:\n  - {name: a, type: opnai}\nmodels:\n  - {name: m, routes: [{provider: b}]}\n"
    )
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    assert (
        f"{path}:2: providers[0].type: unknown provider type 'opnai', did you mean 'openai'?" in result.output
    )
    assert f"{path}:4: models[0].routes[0].provider: unknown provider 'b'" in result.output
    assert "Traceback" not in result.output


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("sever: {}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "unknown key 'sever', did you mean 'server'?" in result.output


def test_demo_banner_has_key_curl_and_sdk_example() -> None:
    config = load_config(None)
    banner = demo_banner(config, "http://127.0.0.1:8080")
    key = "sk-gateway-demo"  # the embedded default's demo key (the loaded config holds only its digest)
    assert f"demo key:   {key}" in banner
    assert (
        f'curl http://127.0.0.1:8080/v1/chat/completions \\\n    -H "Authorization: Bearer {key}"' in banner
    )
    assert 'OpenAI(base_url="http://127.0.0.1:8080/v1"' in banner


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "gateway" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(*args: str) -> Iterator[tuple[str, list[str]]]:
    """Run ``gateway <args> --port N``; yields (base URL, a list that receives its output once stopped)."""
    port = _free_port()
    command = [sys.executable, "-m", "gateway.cli", *args, "--port", str(port)]
    # A scratch working directory: the demo config keeps its usage ledger in the current directory.
    workdir = tempfile.TemporaryDirectory()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir.name
    )
    url = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield url, output
    finally:
        process.terminate()
        output.append(process.communicate(timeout=10)[0])
        workdir.cleanup()


def test_gateway_run_serves_the_demo_and_prints_how_to_use_it() -> None:
    with _process("run") as (url, output):
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "mock-echo", "messages": [{"role": "user", "content": "from a fresh checkout"}]},
            headers={"authorization": "Bearer sk-gateway-demo"},
        )
        assert response.json()["choices"][0]["message"]["content"] == "from a fresh checkout"
    banner, _, log = output[0].partition(" listening on ")
    assert "demo key:   sk-gateway-demo" in banner and "curl " in banner
    # The access log (stderr, merged here) has one JSON line per request, without the key.
    assert '"path":"/v1/chat/completions"' in log and '"key":"demo"' in log
    assert "sk-gateway-demo" not in log


def test_gateway_run_with_workers(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "auth: {keys: [{name: a, key: sk-worker-test}]}\n"
        "providers: [{name: m, type: mock}]\nmodels: [{name: w, routes: [{provider: m}]}]\n"
    )
    with _process("run", "--config", str(path), "--workers", "2") as (url, _):
        models = httpx.get(f"{url}/v1/models", headers={"x-api-key": "sk-worker-test"})
        assert [m["id"] for m in models.json()["data"]] == ["w"]


def test_mock_upstream_command() -> None:
    with _process("mock-upstream", "--fail-rate", "1", "--fail-status", "429") as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": []})
        assert response.status_code == 429 and response.headers["retry-after"] == "1"


def test_run_with_an_unreachable_usage_database_exits_3_in_one_line(tmp_path: Path) -> None:
    from redis_server import free_port

    path = tmp_path / "gw.yaml"
    url = f"postgresql://gw:Not-Shown-Pw-1@127.0.0.1:{free_port()}/usage"
    path.write_text(f"usage:\n  sink: postgres\n  postgres_url: {url}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 3
    assert "error: cannot open the usage ledger 'postgresql://gw:***@127.0.0.1" in result.output
    assert "Not-Shown-Pw-1" not in result.output and "Traceback" not in result.output
