"""`planner serve` on a busy port says so first, naming the port, and never claims to serve (issue 13)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.starter import init_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("how", ["--port", "--dev-addr"])
def test_a_busy_port_is_reported_before_serving(project: Path, how: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--port", str(port)] if how == "--port" else ["--dev-addr", f"127.0.0.1:{port}"]
        result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 1, result.output
    assert f"Address already in use: cannot serve on 127.0.0.1:{port}" in result.output
    assert "--dev-addr 127.0.0.1:PORT" in result.output and "--port" in result.output
    assert "serving the roadmap" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("addr", ["8000", "localhost:", "127.0.0.1:99999", ":8000"])
def test_a_malformed_dev_addr_is_a_usage_error(project: Path, addr: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--dev-addr", addr])
    assert result.exit_code == 2
    assert "is not HOST:PORT" in result.output
