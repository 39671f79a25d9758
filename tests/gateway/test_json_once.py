"""One parse, one serialise: how many JSON encodes and decodes a chat request costs the gateway.

Every hot-path encode and decode goes through :mod:`gateway.jsonio`; these tests count its calls while the
real ``openai`` SDK sends a chat request through the gateway to an ``openai`` provider on an in-memory
upstream. A second parse of the client body, a second encode of the upstream body or of the answer, or a
stage falling back to the standard library for wire JSON would change a count (or the bytes compared).
Counts, not timings: nothing here is timed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from gateway_testing import KEY, openai_config

from gateway import jsonio
from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config

pytestmark = pytest.mark.anyio

ANSWER = {
    "id": "chatcmpl-upstream",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "mock-echo",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "héllo back"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}
PIECES = ["Hel", "lo ", "wörld"]


def stream_body() -> bytes:
    """An upstream SSE stream: a role chunk, three content chunks, a finish chunk, a usage chunk, [DONE]."""
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "mock-echo"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in PIECES)]
    chunks += [chunk({}, "stop"), {**base, "choices": [], "usage": ANSWER["usage"]}]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


@dataclass
class Upstream:
    """The in-memory upstream: answers chat requests and keeps the bodies it received."""

    bodies: list[bytes] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, content=stream_body(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=ANSWER)


@dataclass
class Counts:
    """The arguments and results of every ``jsonio`` call, by function."""

    calls: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)

    def wrap(self, name: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def counted(value: Any) -> Any:
            result = function(value)
            self.calls.setdefault(name, []).append((value, result))
            return result

        return counted

    def __getitem__(self, name: str) -> list[tuple[Any, Any]]:
        return self.calls.get(name, [])


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    found = Counts()
    for name in ("loads", "dumps", "dumps_sorted"):
        monkeypatch.setattr(jsonio, name, found.wrap(name, getattr(jsonio, name)))
    return found


@asynccontextmanager
async def sdk(config: GatewayConfig, upstream: Upstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai SDK talking to the gateway in process (lifespan run), the gateway to ``upstream``."""
    app = create_app(config, transport=httpx.MockTransport(upstream.handle))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway/v1") as http,
    ):
        yield openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=KEY, http_client=http, max_retries=0)


PRODUCTION = """
features:
  cache: {enabled: true}
models:
  - name: echo
    routes: [{provider: up, model: mock-echo}]
    pricing: {input_per_1m: 2.5, output_per_1m: 10.0}
"""


def production_config() -> GatewayConfig:
    """Alice with a budget, the cache on, the model priced: every stage that reads the body runs."""
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}, budget: {{limit_usd: 1000, period: monthly}}}}]
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
usage: {{database: ":memory:"}}
{PRODUCTION}"""
    )


async def test_a_chat_request_is_parsed_once_and_each_body_encoded_once(counts: Counts) -> None:
    upstream = Upstream()
    async with sdk(openai_config("http://upstream.test/v1"), upstream) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "héllo"}], temperature=0.5
        )
    reply = raw.parse()
    assert reply.choices[0].message.content == "héllo back"
    # Decodes: the client's body once (the same dict then feeds validation, routing and the estimates)
    # and the upstream's answer once.
    [(client_body, parsed), (upstream_answer, _)] = counts["loads"]
    assert json.loads(client_body) == parsed
    assert parsed["messages"] == [{"role": "user", "content": "héllo"}]
    assert json.loads(upstream_answer) == ANSWER
    # Encodes: the upstream body once (the bytes the upstream received) and the answer once (the bytes the
    # client received); nothing else (no cache, no budget) serialises anything.
    [(_, upstream_body), (_, answer)] = counts["dumps"]
    assert upstream.bodies == [upstream_body]
    assert json.loads(upstream_body)["model"] == "mock-echo"
    assert raw.http_response.content == answer
    assert counts["dumps_sorted"] == []


async def test_each_stream_chunk_is_parsed_once_and_encoded_once(counts: Counts) -> None:
    upstream = Upstream()
    async with sdk(openai_config("http://upstream.test/v1"), upstream) as client:
        stream = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(PIECES)
    # The client's body, then each of the upstream's six chunks ([DONE] is no JSON): seven decodes.
    assert len(counts["loads"]) == 1 + 6
    # The upstream body once; the prompt's bound (a stream's cost header is sent before its usage is known,
    # so it is the most the prompt can cost: the messages' UTF-8 length); then each chunk the client gets,
    # once: the usage chunk is not forwarded (the client did not ask for it), so five encodes, five chunks.
    [(_, upstream_body), (bound_input, _), *encoded] = counts["dumps"]
    assert upstream.bodies == [upstream_body]
    assert bound_input == [{"role": "user", "content": "hi"}]
    assert len(encoded) == len(chunks) == 5
    assert [json.loads(data) for chunk, data in encoded] == [chunk for chunk, data in encoded]


async def test_the_cache_key_and_the_budget_bound_add_one_encode_each(counts: Counts) -> None:
    upstream = Upstream()
    messages = [{"role": "user", "content": "héllo"}]
    async with sdk(production_config(), upstream) as client:
        first = await client.chat.completions.with_raw_response.create(model="echo", messages=messages)
        counted = {name: len(counts[name]) for name in ("loads", "dumps", "dumps_sorted")}
        second = await client.chat.completions.with_raw_response.create(model="echo", messages=messages)
    assert first.headers["x-gateway-cache"] == "MISS" and second.headers["x-gateway-cache"] == "HIT"
    # A miss: the wire as above (2 decodes; upstream body and answer), plus the budget's prompt bound (the
    # messages' UTF-8 length), the cache entry, and the cache key's one sorted dump.
    assert counted == {"loads": 2, "dumps": 4, "dumps_sorted": 1}
    bound_input, _ = counts["dumps"][0]
    assert bound_input == messages
    # A hit: the client's body and the stored entry decoded, the key dumped and the answer encoded; the
    # upstream is not asked, no entry is written, and the budget's bound is not worked out (a hit reserves
    # nothing: in process its admission never builds the reservation).
    assert len(counts["loads"]) - counted["loads"] == 2
    assert len(counts["dumps"]) - counted["dumps"] == 1
    assert len(counts["dumps_sorted"]) - counted["dumps_sorted"] == 1
    assert len(upstream.bodies) == 1
