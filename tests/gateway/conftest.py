"""Fixtures for the gateway's own tests: a test config and an in-process client through the real app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

KEY = "sk-test-alice-0001"
LIMITED_KEY = "sk-test-bob-0002"
MASTER_KEY = "sk-test-master-0003"

TEST_CONFIG = f"""
server:
  max_body_bytes: 4096
auth:
  master_key: {MASTER_KEY}
  keys:
    - {{name: alice, key: {KEY}, team: research}}
    - {{name: bob, key: {LIMITED_KEY}, models: [echo]}}
providers:
  - {{name: mock, type: mock}}
  - {{name: fixed, type: mock, options: {{reply: "fixed answer", chunk_size: 4}}}}
  - {{name: busy, type: mock, options: {{fail_rate: 1.0, fail_status: 429}}}}
  - {{name: broken, type: mock, options: {{fail_rate: 1.0, fail_status: 503}}}}
models:
  - {{name: echo, routes: [{{provider: mock, model: mock-echo-v1}}]}}
  - {{name: fixed, routes: [{{provider: fixed}}]}}
  - {{name: busy, routes: [{{provider: busy}}]}}
  - {{name: broken, routes: [{{provider: broken}}]}}
"""


def auth(key: str = KEY) -> dict[str, str]:
    """Bearer headers for ``key``."""
    return {"authorization": f"Bearer {key}"}


def chat(content: str = "hello", model: str = "echo", **extra: object) -> dict[str, object]:
    """A chat completion body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
def config() -> GatewayConfig:
    """The test config: keys alice (all models), bob (echo only), mock providers incl. failing ones."""
    return parse_config(TEST_CONFIG, "test.yaml")


@asynccontextmanager
async def serve(
    config: GatewayConfig, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``create_app(config)`` in process, lifespan included."""
    app = create_app(config, transport=transport)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


@pytest.fixture
async def client(config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the test config's app."""
    async with serve(config) as c:
        yield c


@contextmanager
def run_server(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL, stops after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[tuple[str, MockUpstream]]:
    """A ``gateway mock-upstream`` app on a free loopback port: (base URL with /v1, the app for its stats)."""
    upstream = MockUpstream(MockOptions(chunk_size=4))
    with run_server(upstream) as url:
        yield f"{url}/v1", upstream
