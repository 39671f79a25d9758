"""The gateway's own upstream client (``gateway/upstream_client.py``) against loopback servers scripted
byte by byte: which connections are reused and which are closed, the pool's limits, timeouts and errors,
cancellation, closing the transport, and the request it writes.

The end-to-end behaviour through the gateway (answers split across reads, streams, errors as 502/504) is in
``test_upstream_direct.py`` and ``test_transport.py``; TLS and mTLS upstreams in ``test_tls.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import httpx
import pytest
import trustme
from test_upstream_direct import SSE_HEAD, Exchange, RawUpstream, Script, chunked, write

from gateway import upstream_client
from gateway.transport import GatewayTransport
from gateway.upstream_client import READ_HIGH_WATER, Pool, UpstreamSender

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[{}, {"use_uvloop": True}], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Every test on asyncio's loop and on uvloop's, which ``gateway run`` serves on (its transports are not
    ``asyncio.Transport`` subclasses, for one)."""
    return ("asyncio", request.param)


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
TIMEOUT = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


def answer(raw: bytes, *, keep: bool = True) -> Script:
    """A script answering every request with ``raw``; ``keep=False`` closes the connection after."""

    async def reply(exchange: Exchange) -> bool:
        exchange.writer.write(raw)
        await exchange.writer.drain()
        return keep

    return reply


@dataclass
class Client:
    transport: GatewayTransport
    sender: UpstreamSender

    @property
    def pool(self) -> Pool:
        return next(iter(self.transport.upstream.pools.values()))

    async def call(self) -> bytes:
        return await (await self.sender.post("/v1/x", {}, b"{}")).body()


@asynccontextmanager
async def client(
    upstream: RawUpstream, limits: httpx.Limits | None = None, **timeout: float
) -> AsyncIterator[Client]:
    transport = GatewayTransport(limits=limits or httpx.Limits())
    try:
        sender = transport.upstream.sender(f"http://127.0.0.1:{upstream.port}", {**TIMEOUT, **timeout})
        yield Client(transport, sender)
    finally:
        await transport.aclose()


async def until(condition: object, what: str) -> None:
    """Wait (at most 5 s) for ``condition()`` to hold: the other side's close takes a loop turn or two."""
    for _ in range(500):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# --- reuse ----------------------------------------------------------------------------------------------


async def test_a_kept_alive_connection_is_reused_most_recent_first() -> None:
    upstream = RawUpstream(answer(OK))
    async with upstream.running(), client(upstream) as up:
        # Two connections at once, then one at a time: always the one released last.
        assert await asyncio.gather(up.call(), up.call()) == [b"{}", b"{}"]
        assert upstream.connections == 2 and len(up.pool.idle) == 2
        newest = up.pool.idle[-1]
        await up.call()
        assert up.pool.idle[-1] is newest and upstream.connections == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_an_answer_that_does_not_keep_the_connection_alive_closes_it(raw: bytes) -> None:
    upstream = RawUpstream(answer(raw))
    async with upstream.running(), client(upstream) as up:
        assert await up.call() == b"{}"
        assert await up.call() == b"{}"
        assert up.pool.idle == []
    assert upstream.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_never_reused() -> None:
    upstream = RawUpstream(answer(OK, keep=False))  # answers with keep-alive, then closes anyway
    async with upstream.running(), client(upstream) as up:
        assert await up.call() == b"{}"
        await until(lambda: not up.pool.idle and up.pool.open == 0, "the closed connection left the pool")
        assert await up.call() == b"{}"
    assert upstream.connections == 2


async def test_a_body_read_until_the_server_closes() -> None:
    no_length = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"
    upstream = RawUpstream(answer(no_length, keep=False))
    async with upstream.running(), client(upstream) as up:
        assert await up.call() == b"until the end"
        assert up.pool.idle == []


async def test_a_stream_closed_before_its_end_closes_its_connection() -> None:
    async def reply(exchange: Exchange) -> bool:
        if len(upstream.requests) == 1:
            await write(exchange.writer, SSE_HEAD, chunked(b"data: one\n\n"))
            await asyncio.sleep(0.2)  # the rest never comes in time: the client leaves first
            return False
        await write(exchange.writer, OK)
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        reply_ = await up.sender.post("/v1/x", {}, b"{}")
        lines = reply_.lines()
        assert await anext(lines) == "data: one"
        await lines.aclose()  # type: ignore[attr-defined]
        await reply_.aclose()
        assert up.pool.idle == []
        assert await up.call() == b"{}"
    assert upstream.connections == 2


async def test_a_stream_read_to_its_end_returns_its_connection() -> None:
    async def reply(exchange: Exchange) -> bool:
        events = chunked(b"data: one\r\n\r\n"), chunked(b"data: two\r")
        await write(exchange.writer, SSE_HEAD, *events, b"0\r\n\r\n")
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        for _ in range(2):
            got = await up.sender.post("/v1/x", {}, b"{}")
            assert [line async for line in got.lines()] == ["data: one", "", "data: two"]
            await got.aclose()
    assert upstream.connections == 1


async def test_a_stream_its_reader_does_not_take_stops_being_read_until_it_does() -> None:
    # A fast upstream and a slow client: the gateway holds about READ_HIGH_WATER of the stream, not all of it.
    event = b"data: " + b"x" * 1000 + b"\n\n"
    events = 30_000  # about 30 MB: more than the kernel's socket buffers hold on both sides
    written = 0

    async def reply(exchange: Exchange) -> bool:
        nonlocal written
        exchange.writer.write(SSE_HEAD)
        for _ in range(events):
            exchange.writer.write(chunked(event))
            await exchange.writer.drain()
            written += 1
        exchange.writer.write(b"0\r\n\r\n")
        await exchange.writer.drain()
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        got = await up.sender.post("/v1/x", {}, b"{}")
        lines = got.lines()
        assert (await anext(lines)).startswith("data: x")
        connection = next(iter(up.pool.connections))
        await until(lambda: connection.paused, "reading paused")
        await asyncio.sleep(0.2)  # the upstream stays blocked while nobody reads
        assert connection.unread < 2 * READ_HIGH_WATER
        assert written < events
        rest = [line async for line in lines]
        assert len([line for line in rest if line]) == events - 1
        assert not connection.paused
        await got.aclose()
        assert up.pool.idle == [connection]  # read to its end: kept for the next request


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_compressed_though_identity_was_asked_is_decoded(encoding: str) -> None:
    text = b'{"said": "' + b"compressible " * 200 + b'"}'
    packed = gzip.compress(text) if encoding == "gzip" else zlib.compress(text)
    events = b"data: one\n\n" * 50 + b"data: last\n\n"
    packed_events = gzip.compress(events) if encoding == "gzip" else zlib.compress(events)

    async def reply(exchange: Exchange) -> bool:
        head = f"HTTP/1.1 200 OK\r\ncontent-encoding: {encoding}\r\n".encode()
        if exchange.body == b"stream":  # in two chunks, cut inside the compressed data
            cut = len(packed_events) // 2
            parts = chunked(packed_events[:cut]), chunked(packed_events[cut:])
            await write(exchange.writer, head + b"transfer-encoding: chunked\r\n\r\n", *parts, b"0\r\n\r\n")
        else:
            exchange.writer.write(head + b"content-length: %d\r\n\r\n%s" % (len(packed), packed))
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        assert await up.call() == text
        got = await up.sender.post("/v1/x", {}, b"stream")
        assert [line async for line in got.lines()] == ["data: one", ""] * 50 + ["data: last", ""]
    assert upstream.connections == 1


async def test_a_broken_compressed_body_is_a_read_error() -> None:
    raw = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 5\r\n\r\nnope!"
    upstream = RawUpstream(answer(raw))
    async with upstream.running(), client(upstream) as up:
        with pytest.raises(httpx.ReadError):
            await up.call()


# --- limits ---------------------------------------------------------------------------------------------


async def test_requests_beyond_max_connections_wait_for_a_free_one_or_time_out() -> None:
    release = asyncio.Event()

    async def reply(exchange: Exchange) -> bool:
        await release.wait()
        exchange.writer.write(OK)
        return True

    upstream = RawUpstream(reply)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with upstream.running(), client(upstream, limits, pool=0.1) as up:
        first = asyncio.ensure_future(up.call())
        await until(lambda: len(upstream.requests) == 1, "the first request arrived")
        with pytest.raises(httpx.PoolTimeout):  # the only connection is busy past the pool timeout
            await up.call()
        up.sender.pool_timeout = 5.0
        second = asyncio.ensure_future(up.call())
        await asyncio.sleep(0.05)
        release.set()
        assert await asyncio.gather(first, second) == [b"{}", b"{}"]
    assert upstream.connections == 1  # the waiter got the released connection


async def test_idle_connections_beyond_max_keepalive_or_expiry_are_closed() -> None:
    upstream = RawUpstream(answer(OK))
    async with upstream.running(), client(upstream, httpx.Limits(max_keepalive_connections=1)) as up:
        await asyncio.gather(up.call(), up.call(), up.call())
        assert len(up.pool.idle) == 1
        await until(lambda: up.pool.open == 1, "the two extra connections closed")
    upstream = RawUpstream(answer(OK))
    async with upstream.running(), client(upstream, httpx.Limits(keepalive_expiry=0)) as up:
        await up.call()
        await up.call()  # the idle one expired at once: a new connection
        assert upstream.connections == 2
        # Returning a connection also closes the expired ones left unused at the bottom of the stack.
        await asyncio.gather(up.call(), up.call(), up.call())
        assert len(up.pool.idle) == 1
        await until(lambda: up.pool.open == 1, "the expired idle connections closed")


# --- errors and timeouts --------------------------------------------------------------------------------


async def test_a_refused_connection_is_a_connect_error_with_its_cause() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
        transport = GatewayTransport()
        sender = transport.upstream.sender(f"http://127.0.0.1:{sock.getsockname()[1]}", TIMEOUT)
        try:
            with pytest.raises(httpx.ConnectError) as refused:
                await sender.post("/v1/x", {}, b"{}")
        finally:
            await transport.aclose()
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    assert transport.upstream.pools and next(iter(transport.upstream.pools.values())).open == 0


async def test_a_silent_upstream_is_a_read_timeout_and_its_connection_is_closed() -> None:
    async def reply(exchange: Exchange) -> bool:
        await asyncio.sleep(5)
        return False

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream, read=0.1) as up:
        with pytest.raises(httpx.ReadTimeout):
            await up.call()
        await until(lambda: up.pool.open == 0, "the timed-out connection closed")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", httpx.RemoteProtocolError),  # closed without an answer
        (b"not HTTP at all\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{", httpx.ReadError),  # body cut short
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{", httpx.ReadError),
    ],
    ids=["no-answer", "not-http", "cut-length", "cut-chunked"],
)
async def test_a_broken_answer_raises_what_the_aiohttp_path_raised(
    raw: bytes, error: type[httpx.TransportError]
) -> None:
    upstream = RawUpstream(answer(raw, keep=False))
    async with upstream.running(), client(upstream) as up:
        with pytest.raises(error):
            await up.call()
        assert up.pool.idle == []


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def reply(exchange: Exchange) -> bool:
        await asyncio.sleep(5)
        return False

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        task = asyncio.ensure_future(up.call())
        await until(lambda: len(upstream.requests) == 1, "the request arrived")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: up.pool.open == 0, "the cancelled request's connection closed")
        assert up.pool.idle == []


async def test_closing_the_transport_closes_its_connections() -> None:
    async def reply(exchange: Exchange) -> bool:
        if exchange.body == b"stream":
            await write(exchange.writer, SSE_HEAD, chunked(b"data: one\n\n"))
            await asyncio.sleep(5)  # the rest would come much later
            return False
        exchange.writer.write(OK)
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        await up.call()
        assert len(up.pool.idle) == 1
        streaming = await up.sender.post("/v1/x", {}, b"stream")  # a second connection, in use
        lines = streaming.lines()
        assert [await anext(lines), await anext(lines)] == ["data: one", ""]
        await up.transport.aclose()
        with pytest.raises(httpx.ReadError):  # the stream in flight is cut, as aiohttp's session did
            await anext(lines)
        await streaming.aclose()
        await until(lambda: up.pool.open == 0, "both connections closed")
        with pytest.raises(httpx.ConnectError):
            await up.call()


@asynccontextmanager
async def deaf_tls_upstream(limits: httpx.Limits) -> AsyncIterator[Client]:
    """A client of an HTTPS upstream that answers every request and then stops reading, so it never answers
    a TLS ``close_notify`` (TLS 1.3 servers need not: asyncio's TLS close then waits up to 30 s)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    deaf: list[asyncio.Transport] = []

    async def reply(exchange: Exchange) -> bool:
        exchange.writer.write(OK)
        await exchange.writer.drain()
        server_side = cast(asyncio.Transport, exchange.writer.transport)
        server_side.pause_reading()
        deaf.append(server_side)
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(tls=server_context):
        transport = GatewayTransport(verify=client_context, limits=limits)
        try:
            yield Client(transport, transport.upstream.sender(f"https://127.0.0.1:{upstream.port}", TIMEOUT))
        finally:
            await transport.aclose()
            # Cut the server's side too and wait for its handlers: a TLS close there would wait for the
            # client's answer, and a socket still open when the test's event loop ends is an error.
            for server_side in deaf:
                server_side.abort()
            await until(lambda: upstream.ended == upstream.connections, "the upstream's handlers ended")


async def test_closing_the_transport_closes_tls_sockets_before_it_returns() -> None:
    # Whoever closes the transport (the gateway stopping, a test) may end the event loop next: no socket may
    # be left to the closing handshake's wait.
    async with deaf_tls_upstream(httpx.Limits()) as up:
        await up.call()
        (connection,) = up.pool.idle
        raw = connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
        await up.transport.aclose()
        assert up.pool.open == 0 and not up.pool.connections and connection.lost
        assert raw.fileno() == -1


async def test_a_connection_made_while_the_transport_closes_is_not_used() -> None:
    upstream = RawUpstream(answer(OK))
    async with upstream.running(), client(upstream) as up:
        call = asyncio.create_task(up.call())
        await asyncio.sleep(0)  # connecting
        await up.transport.aclose()
        with pytest.raises(httpx.ConnectError, match="closed"):
            await call
        assert up.pool.open == 0 and not up.pool.connections and upstream.requests == []


async def test_a_closing_tls_connection_does_not_hold_a_place_in_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One connection allowed, none kept idle: each answer's connection is closed, and its socket waits for a
    # close_notify that never comes. The next request must not wait for it, and the sockets close once the
    # wait for the answer gives up.
    monkeypatch.setattr(upstream_client, "TLS_SHUTDOWN_SECONDS", 0.2)
    async with deaf_tls_upstream(httpx.Limits(max_connections=1, max_keepalive_connections=0)) as up:
        up.sender.pool_timeout = 1.0
        for _ in range(3):
            assert await up.call() == b"{}"
        assert up.pool.open == 0 and len(up.pool.connections) == 3  # three sockets still closing
        await until(lambda: not up.pool.connections, "the sockets closed after the TLS shutdown timeout")


# --- the request and the answer's headers ---------------------------------------------------------------


async def test_the_request_carries_host_length_identity_encoding_and_the_given_headers() -> None:
    raw = b"HTTP/1.1 200 OK\r\nRetry-After: 7\r\nX-Thing: a\r\nx-thing: b\r\ncontent-length: 0\r\n\r\n"
    upstream = RawUpstream(answer(raw))
    async with upstream.running(), client(upstream) as up:
        headers = {"user-agent": "llm-gateway/test", "authorization": "Bearer sk-x", "x-request-id": "r1"}
        got = await up.sender.post("/v1/chat/completions?api-version=1", headers, '{"a": "é"}'.encode())
        assert await got.body() == b""
        assert got.status == 200 and got.headers["retry-after"] == "7"
        assert got.headers.get("RETRY-AFTER") == "7" and got.headers["x-thing"] in ("a", "b")
    sent = upstream.requests[0]
    assert sent.head["host"] == f"127.0.0.1:{upstream.port}"
    assert sent.head["content-length"] == "11" and sent.body == '{"a": "é"}'.encode()
    assert sent.head["accept-encoding"] == "identity"  # answers arrive uncompressed
    assert sent.head["user-agent"] == "llm-gateway/test" and sent.head["x-request-id"] == "r1"
    assert sent.head["authorization"] == "Bearer sk-x"


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    upstream = RawUpstream(answer(OK))
    async with upstream.running(), client(upstream) as up:
        with pytest.raises(httpx.LocalProtocolError):
            await up.sender.post("/v1/x", {"x-request-id": "a\r\nx-injected: 1"}, b"{}")
    assert upstream.connections == 0


# --- interim (1xx) answers --------------------------------------------------------------------------------

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    "interim", [EARLY_HINTS, CONTINUE, CONTINUE + EARLY_HINTS], ids=["103", "100", "100-then-103"]
)
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "interim-read-first"])
async def test_interim_answers_before_the_final_one_are_skipped(interim: bytes, split: bool) -> None:
    # RFC 9110 15.2: a client must parse 1xx answers sent before the final one, even unasked. The reply is the
    # final answer (its status, its headers only), and the connection stays usable.
    final = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-final: yes\r\ncontent-length: 2\r\n\r\n"
    final += b"{}"

    async def reply(exchange: Exchange) -> bool:
        if split:
            exchange.writer.write(interim)
            await exchange.writer.drain()
            await asyncio.sleep(0.05)
            exchange.writer.write(final)
        else:
            exchange.writer.write(interim + final)
        await exchange.writer.drain()
        return True

    upstream = RawUpstream(reply)
    async with upstream.running(), client(upstream) as up:
        for _ in range(2):  # the second request reuses the connection: it is still in step
            answered = await up.sender.post("/v1/x", {}, b"{}")
            assert answered.status == 200
            assert answered.headers.get("x-final") == "yes" and "link" not in answered.headers
            assert await answered.body() == b"{}"
        assert upstream.connections == 1
