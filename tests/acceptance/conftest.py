"""The `gateway` fixture every acceptance test uses: black-box HTTP against one gateway.

By default each test module gets its own in-process gateway serving `gateway.yaml` (next to this file)
with uvicorn on a free loopback port, started before the module's first test and stopped after its last.
With `--gateway-url URL --gateway-key KEY [--gateway-master-key KEY]` (options of planner's pytest plugin)
the tests run against that live gateway instead; a live gateway keeps state between tests, so tests use
unique prompts and their own keys rather than assuming a fresh gateway.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import gateway as gateway_package
from gateway.app import create_app
from gateway.config import ConfigError, load_config
from planner.pytest_plugin import record_gateway

CONFIG = Path(__file__).with_name("gateway.yaml")
IN_PROCESS_KEY = "sk-acceptance"
IN_PROCESS_MASTER_KEY = "sk-acceptance-master"
STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class GatewayUnderTest:
    """The gateway a test talks to: base URL, keys, and an HTTP client bound to that URL."""

    url: str
    key: str
    master_key: str | None  # None against a live gateway given no --gateway-master-key
    client: httpx.Client
    live: bool

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Authorization headers for `key` (default: the acceptance key allowed every model)."""
        return {"Authorization": f"Bearer {key or self.key}"}

    def admin_headers(self) -> dict[str, str]:
        """Master-key headers; skips the test when the live gateway's master key was not given."""
        if self.master_key is None:
            pytest.skip("needs --gateway-master-key for the live gateway's admin API")
        return {"Authorization": f"Bearer {self.master_key}"}


class _ServerThread:
    """uvicorn serving an app on an already bound loopback socket, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))  # binding here, not in uvicorn, means no race for the port
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> _ServerThread:
        self.thread.start()
        waited = 0.0
        while not self.server.started and self.thread.is_alive() and waited < STARTUP_SECONDS:
            self.thread.join(timeout=0.05)
            waited += 0.05
        if not self.server.started:
            self.__exit__()
            raise RuntimeError(f"the in-process gateway did not start serving {CONFIG}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_SECONDS)
        self.socket.close()


def _report_gateway(request: pytest.FixtureRequest, gw: GatewayUnderTest) -> None:
    """Tell planner's evidence recorder which gateway build and features these tests verified."""
    version: str | None = None if gw.live else gateway_package.__version__
    features: dict[str, bool] | None = None
    try:
        if gw.master_key is not None:
            reply = gw.client.get("/admin/features", headers={"Authorization": f"Bearer {gw.master_key}"})
            if reply.status_code == 200:
                body = reply.json()
                version = str(body.get("version") or version)
                features = {slug: bool(f.get("enabled")) for slug, f in body.get("features", {}).items()}
        if version is None:
            version = httpx.get(f"{gw.url}/health", timeout=10).json().get("version")
    except (httpx.HTTPError, ValueError, AttributeError):
        pass  # a gateway without these endpoints is still tested; its evidence just says less
    record_gateway(request.config, url=gw.url if gw.live else None, version=version, features=features)


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest) -> Iterator[GatewayUnderTest]:
    """The gateway under test (see the module docstring)."""
    url = request.config.getoption("gateway_url")
    if url:
        key = request.config.getoption("gateway_key")
        if not key:
            raise pytest.UsageError("--gateway-url needs --gateway-key (a key allowed every model)")
        url = url.rstrip("/")
        with httpx.Client(base_url=url, timeout=30) as client:
            gw = GatewayUnderTest(url, key, request.config.getoption("gateway_master_key"), client, True)
            _report_gateway(request, gw)
            yield gw
        return
    try:
        config = load_config(CONFIG)
    except ConfigError as exc:
        problem = str(exc)  # failing outside the handler keeps pytest from printing the chained traceback
    else:
        problem = ""
    if problem:
        pytest.fail(f"the acceptance gateway's config is invalid:\n{problem}", pytrace=False)
    app = create_app(config)
    with _ServerThread(app) as server:
        url = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            gw = GatewayUnderTest(url, IN_PROCESS_KEY, IN_PROCESS_MASTER_KEY, client, False)
            _report_gateway(request, gw)
            yield gw
