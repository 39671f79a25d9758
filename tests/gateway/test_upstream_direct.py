"""The providers' direct path (``gateway/upstream_client.py``: ``UpstreamSender``) against loopback upstreams
scripted byte by byte: answers split across reads, errors mapped as the httpx path maps them, bodies and
streams cut short, streams forwarded chunk by chunk, the headers the gateway sends and reads, keepalive.

The default transport takes this path (``serve(config)`` with no transport); an injected httpx transport
takes httpx's interface (``HttpxSender``), as the tests with ``httpx.MockTransport`` do.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from gateway_testing import auth, chat, openai_config, serve

from gateway.config import GatewayConfig
from gateway.pipeline import Call, KeyIdentity, Stream
from gateway.providers.base import HttpProvider
from gateway.providers.registry import build_providers
from gateway.transport import UPSTREAM_LIMITS, GatewayTransport, HttpxSender, default_transport
from gateway.upstream_client import UpstreamSender

pytestmark = pytest.mark.anyio

UPSTREAM_KEY = "sk-upstream-direct-0007"


@dataclass
class Exchange:
    """One request the upstream got, and the writer to answer it on."""

    head: dict[str, str]
    body: bytes
    writer: asyncio.StreamWriter


Script = Callable[[Exchange], Awaitable[bool]]  # answers; False closes the connection


@dataclass
class RawUpstream:
    """An HTTP/1.1 server on a loopback port that answers each request with ``script`` (keepalive kept)."""

    script: Script
    requests: list[Exchange] = field(default_factory=list)
    connections: int = 0
    ended: int = 0  # connections whose handler returned
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = raw.decode("latin-1").split("\r\n")
                head = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(head.get("content-length", "0")))
                exchange = Exchange(head, body, writer)
                self.requests.append(exchange)
                if not await self.script(exchange):
                    return
        finally:
            writer.close()
            self.ended += 1

    @asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[RawUpstream]:
        """Serve until the block ends (HTTPS with ``tls``, a server-side context)."""
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


def config(upstream: RawUpstream, **provider: Any) -> GatewayConfig:
    """Provider ``up`` at the raw upstream, one attempt per request (each test scripts a single answer)."""
    return openai_config(
        f"http://127.0.0.1:{upstream.port}/v1",
        UPSTREAM_KEY,
        extra="features:\n  routing: {max_attempts: 1}",
        **provider,
    )


def answer_json(content: str = "direct hello") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-direct",
            "object": "chat.completion",
            "created": 1,
            "model": "mock-echo",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    ).encode()


def event(content: str, finish: str | None = None) -> bytes:
    delta = {"content": content} if content else {}
    chunk = {
        "id": "chatcmpl-direct",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "mock-echo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\r\n\r\n"


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)


async def write(writer: asyncio.StreamWriter, *pieces: bytes, pause: float = 0.01) -> None:
    """Each piece in its own write and drain, with a pause, so the gateway reads them separately."""
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(pause)


# --- which path a provider takes ------------------------------------------------------------------------


async def test_the_default_transport_sends_directly_and_an_injected_one_through_httpx() -> None:
    cfg = openai_config("http://127.0.0.1:9/v1")
    default = default_transport()
    mock = httpx.MockTransport(lambda request: httpx.Response(500))
    try:
        for transport, kind in ((default, UpstreamSender), (mock, HttpxSender)):
            provider = build_providers(cfg, transport)["up"]
            assert isinstance(provider, HttpProvider) and isinstance(provider.sender(), kind)
        # The direct path sends through the transport's own client: its pools, with the configured limits.
        assert isinstance(default, GatewayTransport)
        sender = build_providers(cfg, default)["up"].sender()  # type: ignore[attr-defined]
        assert sender.client is default.upstream and default.upstream.limits == UPSTREAM_LIMITS
    finally:
        await default.aclose()


# --- answers, headers, keepalive ------------------------------------------------------------------------


async def test_an_answer_split_across_reads_is_read_whole_over_one_kept_alive_connection() -> None:
    async def reply(exchange: Exchange) -> bool:
        body = answer_json("héllo ✓ direct")  # multi-byte characters split across the writes below
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        await write(
            exchange.writer, head, chunked(body[:7]), chunked(body[7:60]), chunked(body[60:]), b"0\r\n\r\n"
        )
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        first = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        second = await client.post("/v1/chat/completions", json=chat("again"), headers=auth())
    for response in (first, second):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "héllo ✓ direct"
        assert response.json()["usage"]["total_tokens"] == 5
    assert upstream.connections == 1 and len(upstream.requests) == 2  # keepalive: one connection, reused
    sent = upstream.requests[0]
    # What the gateway sends: its credentials, the request id the client got back, the encoded body.
    assert sent.head["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.head["x-request-id"] == first.headers["x-request-id"]
    assert sent.head["content-type"] == "application/json"
    assert json.loads(sent.body)["messages"] == [{"role": "user", "content": "hello"}]


async def test_an_early_hints_answer_before_the_final_one_is_read_past() -> None:
    # An upstream (or a CDN before it) may send 103 Early Hints first: the client gets the final answer.
    async def reply(exchange: Exchange) -> bool:
        body = answer_json("after the hints")
        await write(
            exchange.writer,
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body),
            body,
        )
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "after the hints"
    assert "link" not in response.headers


async def test_an_upstream_429_passes_on_with_its_retry_after() -> None:
    async def reply(exchange: Exchange) -> bool:
        body = b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
        exchange.writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["message"] == "Upstream rate limit: slow down"


# --- bodies and connections cut short -------------------------------------------------------------------


async def test_a_body_cut_short_is_a_502_read_error() -> None:
    async def reply(exchange: Exchange) -> bool:
        await write(exchange.writer, b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n", answer_json()[:40])
        return False  # closes with 460 bytes still owed

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_read"
    assert error["message"] == "Upstream 'up' broke off the response (ReadError)."


async def test_a_server_closing_without_an_answer_is_502_unreachable() -> None:
    async def reply(exchange: Exchange) -> bool:
        return False

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["message"] == "Upstream 'up' is unreachable (RemoteProtocolError)."


async def test_an_answer_that_is_not_http_is_a_502() -> None:
    # A parser error: httpx-aiohttp let aiohttp's escape unmapped (a 500); the direct path makes it a 502.
    async def reply(exchange: Exchange) -> bool:
        await write(exchange.writer, b"this is not HTTP at all\r\n\r\n")
        return False

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"


async def test_a_silent_upstream_mid_body_is_a_502_after_the_read_timeout() -> None:
    async def reply(exchange: Exchange) -> bool:
        await write(exchange.writer, b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n", b"{")
        await asyncio.sleep(5)
        return False

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream, timeout_s=0.2)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "Upstream 'up' broke off the response (ReadTimeout)."


# --- streams --------------------------------------------------------------------------------------------

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_a_stream_is_forwarded_chunk_by_chunk() -> None:
    # The upstream sends its second event only once the first reached the consumer: nothing is buffered.
    first_seen = asyncio.Event()

    async def reply(exchange: Exchange) -> bool:
        second = event("naïve ✓", "stop")
        cut = second.index("✓".encode()) + 1  # inside the multi-byte character
        await write(exchange.writer, SSE_HEAD, chunked(event("one")))
        await asyncio.wait_for(first_seen.wait(), 5)
        await write(exchange.writer, chunked(second[:cut]), chunked(second[cut:] + b"data: [DONE]\r\n\r\n"))
        await write(exchange.writer, b"0\r\n\r\n")
        return True

    upstream = RawUpstream(reply)
    transport = default_transport()
    async with upstream.running():
        cfg = config(upstream)
        provider = build_providers(cfg, transport)["up"]
        route = cfg.models[0].routes[0]
        call = Call(
            request_id="req-direct",
            key=KeyIdentity(name="alice", key_id="kid"),
            endpoint="chat",
            model="echo",
            model_config=None,  # type: ignore[arg-type]
            body=chat(stream=True),
            headers={},
            stream=True,
        )
        try:
            result = await provider.chat(call, route)
            assert isinstance(result, Stream)
            chunks = aiter(result)
            assert (await anext(chunks))["choices"][0]["delta"] == {"content": "one"}
            first_seen.set()
            rest = [chunk async for chunk in chunks]
        finally:
            await transport.aclose()
    assert [c["choices"][0]["delta"] for c in rest] == [{"content": "naïve ✓"}]
    assert rest[0]["choices"][0]["finish_reason"] == "stop"


def _reference_lines(body: bytes) -> list[str]:
    """The lines of ``body`` as SSE defines them: ended by CRLF, LF or a lone CR; nothing else splits."""
    parts = re.split(r"\r\n|\r|\n", body.decode("utf-8", "replace"))
    return parts[:-1] if parts and parts[-1] == "" else parts


BODIES = [
    b"data: one\n\ndata: two\n\n",
    b"data: crlf\r\n\r\ndata: also\r\n\r\n",
    b"data: lone cr\r\rdata: next\r\r",
    b"data: mixed\r\n\ndata: b\r\rdata: c\n\r\n",
    'data: {"content": "na\u00efve \u2713 \u2028 kept \u2029 whole"}\n\n'.encode(),
    b"data: \xff\xfe not utf-8\n\n",
    b"data: no ending at the end",
    b"data: ends with a cr\r",
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
async def test_stream_lines_split_as_sse_defines_however_the_bytes_arrive(body: bytes) -> None:
    # Every way of cutting the body into two reads (a CRLF or a UTF-8 character split between them
    # included), plus one read per byte.
    cuts = [[body[:i], body[i:]] for i in range(1, len(body))] + [[body[i : i + 1] for i in range(len(body))]]

    async def reply(exchange: Exchange) -> bool:
        pieces = cuts[len(upstream.requests) - 1]
        parts = [chunked(piece) for piece in pieces if piece]
        await write(exchange.writer, SSE_HEAD, *parts, b"0\r\n\r\n", pause=0.001)
        return True

    upstream = RawUpstream(reply)
    transport = default_transport()
    try:
        async with upstream.running():
            assert isinstance(transport, GatewayTransport)
            sender = transport.upstream.sender(f"http://127.0.0.1:{upstream.port}", {"read": 5.0})
            for _ in cuts:
                got = await sender.post("/sse", {}, b"{}")
                assert [line async for line in got.lines()] == _reference_lines(body)
                await got.aclose()
    finally:
        await transport.aclose()


async def test_a_stream_cut_mid_way_ends_with_an_in_band_error() -> None:
    async def reply(exchange: Exchange) -> bool:
        await write(exchange.writer, SSE_HEAD, chunked(event("partial")))
        return False  # no terminating chunk: the body is cut short

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert response.status_code == 200  # the headers left with the first chunk
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"] == {"content": "partial"}
    error = json.loads(events[-1])["error"]
    assert error["code"] == "upstream_stream"
    assert error["message"] == "Upstream 'up' broke off the stream (ReadError)."


async def test_a_stream_request_answered_with_json_is_a_502() -> None:
    async def reply(exchange: Exchange) -> bool:
        body = answer_json()
        exchange.writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), serve(config(upstream)) as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert response.status_code == 502
    assert "application/json, not text/event-stream" in response.json()["error"]["message"]
