"""Helpers for the gateway's own tests, importable as ``from gateway_testing import ...``.

A module with a unique name, because ``from conftest import`` picks whichever conftest.py was imported
first when the whole suite runs. Fixtures live in ``conftest.py`` and use these.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from uvicorn_server import run_server as run_server  # re-exported: one import line for gateway tests

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config

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
usage: {{database: ":memory:"}}  # tests leave no ledger file in the working directory
"""


def auth(key: str = KEY) -> dict[str, str]:
    """Bearer headers for ``key``."""
    return {"authorization": f"Bearer {key}"}


def chat(content: str = "hello", model: str = "echo", **extra: object) -> dict[str, object]:
    """A chat completion body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def openai_config(
    base_url: str, api_key: str = "sk-upstream-secret", *, extra: str = "", **provider: Any
) -> GatewayConfig:
    """Key alice and one ``openai`` provider ``up`` at ``base_url`` serving models ``echo`` and ``embed``.

    ``provider`` adds keys to the provider entry (``timeout_s=0.2``); ``extra`` is appended at top level.
    """
    settings = "".join(f"\n    {k}: {v}" for k, v in provider.items())
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - name: up
    type: openai
    base_url: {base_url}
    api_key: {api_key}{settings}
models:
  - name: echo
    routes: [{{provider: up, model: mock-echo}}]
  - name: embed
    routes: [{{provider: up, model: mock-embed}}]
usage: {{database: ":memory:"}}
{extra}"""
    )


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


def http_scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    """The ASGI scope of an HTTP request from a loopback client, for tests that call the app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def sse_chunks(text: str) -> list[Any]:
    """The decoded data payloads of an SSE body (``[DONE]`` kept as a string)."""
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def tokens(usage: dict[str, Any]) -> dict[str, Any]:
    """The token counts of a usage object (features may add fields such as cost)."""
    return {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
