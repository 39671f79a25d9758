"""A scripted OpenAI-compatible upstream for the cost and budget tests (an httpx.MockTransport, no network).

It answers with exactly ``max_tokens`` completion tokens and reports as prompt tokens the gateway's own upper
bound for the messages, so a request costs exactly what the budget reserved for it: tests can then say
precisely how many requests fit in a budget.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.token_estimate import max_prompt_tokens

MASTER = "sk-budget-master-0000"
ALICE = "sk-budget-alice-0001"
BOB = "sk-budget-bob-0002"
CAROL = "sk-budget-carol-0003"
FREE = "sk-budget-free-0004"


def config_text(
    *, database: str = ":memory:", redis_url: str | None = None, cache: bool = False, extra: str = ""
) -> str:
    """A gateway config: route `priced` at $1/$1000 per 1M, an upstream served by :class:`FakeUpstream`.

    alice: daily budget 0.1 USD (soft limit 50%); bob and carol share team `lab` with 0.05 USD per month;
    free: no budget.
    """
    # fail_closed: an unreachable Redis must fail the test, not let requests through unbudgeted; a generous
    # timeout, because a busy test machine can take more than the default second to answer 100 requests.
    settings = "on_error: fail_closed, timeout_seconds: 30"
    state = f"state: {{redis_url: '{redis_url}', {settings}}}\n" if redis_url else ""
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}, budget: {{limit_usd: 0.1, period: daily, soft_limit: 0.5}}}}
    - {{name: bob, key: {BOB}, team: lab}}
    - {{name: carol, key: {CAROL}, team: lab}}
    - {{name: free, key: {FREE}}}
teams:
  - {{name: lab, budget: {{limit_usd: 0.05, period: monthly}}}}
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
  - {{name: slow, type: mock, options: {{chunk_delay_ms: 50, chunk_size: 4, reply: "{"slow " * 100}"}}}}
models:
  - name: priced
    routes: [{{provider: up, model: up-model, pricing: {{input_per_1m: 1, output_per_1m: 1000}}}}]
  - name: gpt-4o-mini
    routes: [{{provider: up}}]
  - name: slow
    routes: [{{provider: slow, pricing: {{input_per_1m: 1, output_per_1m: 1000}}}}]
  - name: embed
    routes: [{{provider: slow, model: mock-embed, pricing: {{input_per_1m: 1000, output_per_1m: 0}}}}]
usage:
  database: "{database}"
features:
  budgets: {{default_max_tokens: 50}}
{"  cache: {}" if cache else ""}
{state}{extra}"""


def auth(key: str) -> dict[str, str]:
    """Bearer headers."""
    return {"authorization": f"Bearer {key}"}


def chat(content: str, model: str = "priced", **extra: Any) -> dict[str, Any]:
    """A chat body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@dataclass
class FakeUpstream:
    """Answers chat completions with ``max_tokens`` tokens of 'x'; records the bodies it received."""

    report_usage: bool = True
    fail_status: int | None = None
    completion_tokens: int | None = None  # answer this many tokens instead of max_tokens
    delay: float = 0.0  # seconds each answer takes, so that concurrent requests overlap
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        """The transport to give ``create_app``."""
        return httpx.MockTransport(self.handle_async if self.delay else self.handle)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay)
        return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.fail_status is not None:
            return httpx.Response(self.fail_status, json={"error": {"message": "scripted failure"}})
        completion = (
            self.completion_tokens or body.get("max_completion_tokens") or body.get("max_tokens") or 7
        )
        prompt = max_prompt_tokens(body["messages"])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        text = "x" * (completion * 4)
        base = {"id": "chatcmpl-fake", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
            }
            if self.report_usage:
                answer["usage"] = usage
            return httpx.Response(200, json=answer)
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            *(
                {**chunk, "choices": [{"index": 0, "delta": {"content": text[i : i + 16]}}]}
                for i in range(0, len(text), 16)
            ),
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if self.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})


# Defined here rather than imported from tests/gateway/conftest.py: `from conftest import` picks whichever
# conftest was imported last when several test folders run together.


@asynccontextmanager
async def serve(
    config: GatewayConfig, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``create_app(config)`` in process, lifespan (start and close) included."""
    app = create_app(config, transport=transport)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


@contextmanager
def run_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL, stops after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
