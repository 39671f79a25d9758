"""gateway/server_stack.py: uvloop and httptools by name, and a said fallback where they cannot load."""

from __future__ import annotations

import gc
import importlib
import weakref
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from gateway import cli, server_stack
from gateway.server_protocol import OneWriteHttpToolsProtocol
from gateway.server_stack import fast_stack, forwarded_allow_ips, freeze_startup_heap


def test_the_fast_stack_is_installed_and_chosen() -> None:
    stack = fast_stack()
    assert stack.uvicorn_options() == {"loop": "uvloop", "http": "httptools"}
    assert stack.fallbacks == []
    described = dict(part.split("=", 1) for part in stack.describe().split("; "))
    assert set(described) == {"server", "loop", "http", "json"}
    assert described["server"].startswith("uvicorn ") and described["loop"].startswith("uvloop ")
    assert described["http"].startswith("httptools ") and described["json"].startswith("orjson ")
    assert "?" not in stack.describe()
    assert stack.describe(json=None).endswith("; json=none")


def test_a_missing_part_falls_back_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = importlib.import_module

    def no_uvloop(name: str, package: str | None = None) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_uvloop)
    caplog.set_level("WARNING", logger="gateway.server")
    stack = fast_stack()
    assert stack.uvicorn_options() == {"loop": "asyncio", "http": "httptools"}
    [line] = stack.fallbacks
    assert "uvloop unavailable (ImportError: No module named 'uvloop')" in line
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.server"] == [line]
    assert "loop=asyncio (stdlib)" in stack.describe()


def test_gateway_run_hands_the_stack_to_uvicorn_and_prints_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run(self: Any) -> None:  # the server's run, replaced: the config it got is what matters here
        seen["loop"], seen["http"] = self.config.loop, self.config.http
        seen["proxy_headers"] = self.config.proxy_headers  # applied by the app instead (gateway/front.py)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    # Frozen once the app is built, before serving; not this test process's heap.
    monkeypatch.setattr(
        server_stack, "freeze_startup_heap", lambda: seen.setdefault("frozen_before_run", not seen)
    )
    # `gateway run` points the gateway's loggers at stderr: not in this process, where caplog reads them.
    monkeypatch.setattr("gateway.logging.configure_logging", lambda level: None)
    result = CliRunner().invoke(cli.main, ["run", "--port", "0", "--log-level", "error"])
    assert result.exit_code == 0, result.output
    assert seen == {
        "frozen_before_run": True,
        "loop": "uvloop",
        "http": OneWriteHttpToolsProtocol,  # httptools, a response written once (gateway/server_protocol.py)
        "proxy_headers": False,
    }
    assert "server stack: server=uvicorn " in result.output and "; loop=uvloop " in result.output


def test_the_start_up_heap_is_frozen_out_of_the_collectors_reach() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    garbage = weakref.ref(Cycle())  # before the freeze: collected, not frozen with the heap
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert garbage() is None
    finally:
        gc.unfreeze()  # this test process's heap is pytest's, not a server's


def test_the_trusted_forwarding_peers_are_uvicorns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert forwarded_allow_ips() == uvicorn.Config(app=None).forwarded_allow_ips
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.7")
    assert forwarded_allow_ips() == uvicorn.Config(app=None).forwarded_allow_ips == "10.0.0.7"
