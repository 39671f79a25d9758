"""The gateway's own HTTP/1.1 client for its POSTs upstream: a keep-alive pool per origin, one
``asyncio.Protocol`` per connection, responses parsed by ``httptools`` (the parser uvicorn serves with).

Why not aiohttp: under load its request/response machinery was the largest single piece of a production miss
(``AiohttpSender.post`` 15.6% of the event loop's samples, plus the body read). The gateway needs far less:
POST a body it already encoded, read a status, a few headers and a body whole or line by line. So a request
is one ``transport.write`` (request line, headers, body), the answer is fed to the parser as it arrives, and a
small JSON answer arriving in one read is complete before :meth:`UpstreamSender.post` returns.

What it does (the :class:`~gateway.transport.Sender` seam, with httpx's exceptions):

- one :class:`Pool` per origin: idle connections reused last-in first-out, at most ``max_connections`` open
  (others wait up to the ``pool`` timeout; one being closed no longer counts, see :meth:`Connection.close`),
  at most ``max_keepalive_connections`` idle, each idle at most
  ``keepalive_expiry`` seconds. A connection goes back only when its answer was read to the end and the
  server keeps it alive (no ``Connection: close``, not HTTP/1.0); one the server closed while idle is dropped
  at once.
- timeouts: ``connect`` (TCP and TLS handshake), ``read`` (waiting for any next bytes), ``pool``.
- errors as the aiohttp path mapped them: refused/DNS/TLS -> ``httpx.ConnectError`` (the ``OSError`` as cause,
  so the 502 can say why), closed before an answer -> ``httpx.RemoteProtocolError``, reset before an answer ->
  ``httpx.NetworkError``, not HTTP -> ``httpx.RemoteProtocolError``, a body cut short -> ``httpx.ReadError``,
  silence -> ``httpx.ReadTimeout`` / ``httpx.ConnectTimeout`` / ``httpx.PoolTimeout``.
- it asks for no compression (``accept-encoding: identity``); a gzip or deflate body sent anyway is decoded.

Interim answers (``100 Continue``, ``103 Early Hints``) before the final one are read past, as RFC 9110
asks of every client; ``101 Switching Protocols`` (never asked for) is not.

Not done (the gateway does not need them): redirects, proxies, cookies, ``Expect: 100-continue``, HTTP/2,
request bodies streamed in pieces.

Flow control: a connection stops reading (``pause_reading``) once more than :data:`READ_HIGH_WATER` bytes of
its answer wait unread while nobody is waiting for them (a stream whose client reads slowly), and resumes when
its reader asks for more, so a fast upstream cannot fill the gateway's memory through a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast

import httptools
import httpx
from multidict import CIMultiDict
from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}
_COMPRESSED = ("gzip", "x-gzip", "deflate")
_AUTO_HEADER = 32 + zlib.MAX_WBITS  # zlib reads a gzip or a zlib header, whichever the body has
READ_HIGH_WATER = 256 * 1024
"""Unread answer bytes past which a connection stops reading from the upstream until its reader catches up."""
TLS_SHUTDOWN_SECONDS = 2.0
"""How long a TLS connection the gateway closes waits for the server to answer its ``close_notify`` before the
socket is closed anyway. asyncio's default is 30 s, but TLS 1.3 servers need not answer at all, and an answer
takes one round trip when it comes; meanwhile the socket stays open in the background."""
CLOSE_WAIT_SECONDS = 1.0
"""How long closing the client waits for its aborted connections' sockets to close (a loop turn or two)."""


class Connection(asyncio.Protocol):
    """One upstream connection and the state of the answer it is reading (one request at a time)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False  # connection_lost seen: never reuse
        self.freed = False  # its place in the pool given back (closing or closed)
        self.active = False  # a request is using it
        self.idle_since = 0.0
        # The answer being read.
        self.status = 0
        self.raw_headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.interim = False  # between an interim (1xx) answer's headers and its end
        self.complete = False
        self.reusable = False
        self.chunks: list[bytes] = []
        self.unread = 0  # bytes in chunks
        self.paused = False  # reading paused until the reader takes what is buffered
        self.failure: BaseException | None = None  # what broke the connection (None for a plain EOF)
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout: float | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            # Bytes nobody asked for on an idle connection: its next answer could not be trusted.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.failure = exc
            self.close()
        if self.unread > READ_HIGH_WATER and self.waiter is None and not self.paused and not self.lost:
            # The reader is busy elsewhere (a slow client of a stream): stop taking more until it asks.
            self.paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.active and self.headers_done and not self.complete and exc is None and self._until_eof():
            self.complete = True  # a body with neither length nor chunks ends when the server closes
        elif self.failure is None:
            self.failure = exc
        self._free()
        self.pool.lost(self)
        self._wake()

    # --- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.reusable = False  # a second answer to one request: this connection is out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints), bodiless, which a client must read past
            # even unasked (RFC 9110 15.2): the final answer follows on the same connection, with its own
            # headers (the interim one's are dropped).
            self.interim = True
            self.raw_headers = []
            return
        self.status = status
        self.headers_done = True

    def _until_eof(self) -> bool:
        names = {name.lower() for name, _ in self.raw_headers}
        return "content-length" not in names and "transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.unread += len(body)

    def take(self) -> bytes:
        """The answer's bytes arrived so far and not yet taken."""
        chunks = self.chunks
        self.chunks = []
        self.unread = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        self.reusable = self.parser.should_keep_alive()

    # --- the request side ---------------------------------------------------------------------------------

    def send(self, request: bytes, read_timeout: float | None) -> None:
        """Start a request: reset the answer's state and write ``request`` whole."""
        self.active = True
        self.status = 0
        self.raw_headers = []
        self.headers_done = self.interim = self.complete = self.reusable = False
        self.chunks = []
        self.unread = 0
        self.read_timeout = read_timeout
        assert self.transport is not None
        self.transport.write(request)

    async def read_more(self) -> None:
        """Wait for the next bytes (or the end); raises the httpx exception of a broken or silent upstream."""
        if self.failure is not None or self.lost:
            raise self.error()
        if self.paused:
            self.paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timeout = self.read_timeout
        timer = None if timeout is None else loop.call_later(timeout, self._expire, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.failure is not None or (self.lost and not self.complete):
            raise self.error()

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(httpx.ReadTimeout("Timed out reading from the upstream"))

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def error(self) -> httpx.TransportError:
        """The httpx exception for how this connection broke (the cause attached, for the 502's reason)."""
        failure = self.failure
        kind: type[httpx.TransportError]
        if isinstance(failure, httptools.HttpParserError):
            kind = httpx.RemoteProtocolError  # the answer is not HTTP
        elif self.headers_done:
            kind = httpx.ReadError  # the body was cut short
        elif failure is None:
            kind = httpx.RemoteProtocolError  # closed without an answer
        else:
            kind = httpx.NetworkError
        error = kind("Server disconnected" if failure is None else str(failure) or type(failure).__name__)
        error.__cause__ = failure
        return error

    def close(self) -> None:
        """Close the connection (it is never reused) and give its place in the pool back at once.

        The socket may take a while to close: a TLS close waits for the server to answer its ``close_notify``,
        which TLS 1.3 servers need not do (it waits up to :data:`TLS_SHUTDOWN_SECONDS`). Counting it till then
        would let an upstream that times out or drops streams fill ``max_connections`` with dead connections.
        """
        self.reusable = False
        if self.transport is not None:
            self._free()
            self.transport.close()

    def abort(self) -> None:
        """Close the connection at once: no TLS closing handshake (see :meth:`Pool.aclose`)."""
        self.reusable = False
        if self.transport is not None:
            self._free()
            self.transport.abort()

    def _free(self) -> None:
        if not self.freed:
            self.freed = True
            self.pool.free(self)

    def release(self) -> None:
        """The request is done with this connection: back to the pool when the answer was read whole and
        the server keeps the connection alive, closed otherwise."""
        self.active = False
        if self.complete and self.reusable and not self.lost and not self.chunks:
            self.pool.put(self)
        else:
            self.close()


class Pool:
    """The keep-alive connections to one origin (scheme, host, port, TLS context)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None, limits: httpx.Limits) -> None:
        self.host = host
        self.port = port
        self.context = context
        # httpx's None is "no limit".
        self.max_connections = limits.max_connections or 1 << 30
        idle = limits.max_keepalive_connections
        self.max_idle = self.max_connections if idle is None else idle
        self.expiry = limits.keepalive_expiry
        self.idle: list[Connection] = []  # most recently used last
        self.open = 0  # connections open or being opened, not those closing (the places taken)
        self.connections: set[Connection] = set()  # every socket not yet closed, closing too (aclose)
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False
        self.all_lost: asyncio.Event | None = None  # set once closed and every connection is gone

    async def acquire(self, connect_timeout: float | None, pool_timeout: float | None) -> Connection:
        """An idle connection (the most recent), a new one within the limit, or the next one freed."""
        while True:
            idle = self.idle
            while idle:
                connection = idle.pop()
                if self.expiry is not None and time.monotonic() - connection.idle_since > self.expiry:
                    # The rest are older still.
                    for stale in (connection, *idle):
                        stale.close()
                    idle.clear()
                    break
                if not connection.lost:
                    return connection
            if self.closed:
                raise httpx.ConnectError("The upstream client is closed")
            if self.open < self.max_connections:
                return await self._connect(connect_timeout)
            await self._wait(pool_timeout)

    async def _connect(self, timeout: float | None) -> Connection:
        self.open += 1
        loop = asyncio.get_running_loop()
        connection = Connection(self)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection,
                    self.host,
                    self.port,
                    ssl=self.context,
                    server_hostname=self.host if self.context is not None else None,
                    ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS if self.context is not None else None,
                )
        except BaseException as exc:
            if connection.transport is None:
                self.open -= 1  # never made: nothing else will give its place back
                self._wake_one()
            else:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout("Timed out connecting to the upstream") from exc
            if isinstance(exc, OSError):
                # Refused, no such host, certificate not trusted: the cause says which.
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        if self.closed:  # closed while this one was connecting: it would outlive aclose
            connection.abort()
            raise httpx.ConnectError("The upstream client is closed")
        self.connections.add(connection)
        return connection

    async def _wait(self, timeout: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpx.PoolTimeout("Timed out waiting for a connection to the upstream") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken but leaving: pass the turn on
            raise
        finally:
            if not waiter.done():
                self.waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def put(self, connection: Connection) -> None:
        """Keep ``connection`` for reuse (or close it when enough are idle or the pool is closed)."""
        if self.closed or len(self.idle) >= self.max_idle:
            connection.close()
            return
        now = connection.idle_since = time.monotonic()
        idle = self.idle
        # Most-recent-first reuse leaves the oldest at the front unused after a burst: close the expired
        # ones there, so idle connections do not outlive keepalive_expiry while the origin is busy.
        while idle and self.expiry is not None and now - idle[0].idle_since > self.expiry:
            idle.pop(0).close()
        idle.append(connection)
        self._wake_one()

    def free(self, connection: Connection) -> None:
        """``connection`` is closing or closed (by either side): it is never used again; let a waiter open
        another in its place."""
        self.open -= 1
        if not connection.active and connection in self.idle:
            self.idle.remove(connection)
        self._wake_one()

    def lost(self, connection: Connection) -> None:
        """``connection``'s socket is closed (after :meth:`free`)."""
        self.connections.discard(connection)
        if self.all_lost is not None and not self.connections:
            self.all_lost.set()

    async def aclose(self) -> None:
        """Close every connection, idle or in use (a request still reading gets a ReadError, as with
        aiohttp's session closed under it), and return once each socket is closed; no new connections after.

        Connections are aborted, not closed: asyncio's TLS close sends ``close_notify`` and then keeps the
        socket open until the server answers it (up to :data:`TLS_SHUTDOWN_SECONDS`). Whoever closes the
        client (the gateway stopping, a test) may end the event loop right after, which would leave that
        socket open and unowned. HTTP framing already tells a whole answer from a cut one, so the closing
        handshake protects nothing here.
        """
        self.closed = True
        for connection in (*self.connections, *self.idle):
            connection.abort()
        self.idle.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it will find the pool closed
        if self.connections:
            # An abort closes the socket a loop turn or two later, then connection_lost runs (Pool.lost).
            self.all_lost = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                    await self.all_lost.wait()


class UpstreamClient:
    """The pools of one TLS context and set of limits, one per origin (made on first use)."""

    def __init__(self, context: ssl.SSLContext, limits: httpx.Limits) -> None:
        self.context = context
        self.limits = limits
        self.pools: dict[tuple[str, str, int], Pool] = {}

    def pool(self, url: URL) -> Pool:
        """The pool for ``url``'s origin."""
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS or not url.host:
            raise httpx.UnsupportedProtocol(
                f"Only http:// and https:// upstreams are supported, not {scheme}://"
            )
        port = url.port or _DEFAULT_PORTS[scheme]
        key = (scheme, url.host, port)
        pool = self.pools.get(key)
        if pool is None:
            context = self.context if scheme == "https" else None
            pool = self.pools[key] = Pool(url.host, port, context, self.limits)
        return pool

    def sender(self, base_url: str, timeout: Mapping[str, float]) -> UpstreamSender:
        """A sender for POSTs to ``base_url`` plus a path."""
        return UpstreamSender(self, base_url, timeout)

    async def aclose(self) -> None:
        """Close every pool's connections (:meth:`Pool.aclose`); the pools refuse new requests after."""
        for pool in self.pools.values():
            await pool.aclose()


class UpstreamSender:
    """POSTs to one base URL through its origin's :class:`Pool` (a :class:`~gateway.transport.Sender`)."""

    def __init__(self, client: UpstreamClient, base_url: str, timeout: Mapping[str, float]) -> None:
        self.client = client
        self.base_url = base_url
        self.connect_timeout: float | None = timeout.get("connect")
        self.read_timeout: float | None = timeout.get("read")
        self.pool_timeout: float | None = timeout.get("pool")
        self._heads: dict[str, tuple[Pool, str]] = {}

    def _head(self, path: str) -> tuple[Pool, str]:
        url = URL(self.base_url + path)
        pool = self.client.pool(url)
        host = url.raw_host or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6
        if url.port is not None and url.port != _DEFAULT_PORTS[url.scheme]:
            host = f"{host}:{url.port}"
        head = f"POST {url.raw_path_qs} HTTP/1.1\r\nhost: {host}\r\n"
        self._heads[path] = (pool, head)
        return pool, head

    async def post(self, path: str, headers: dict[str, str], content: bytes) -> UpstreamReply:
        """Send; the reply once its status and headers arrived (a small body has usually arrived too)."""
        pool, head = self._heads.get(path) or self._head(path)
        block = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if block.count("\n") != len(headers) or block.count("\r") != len(headers):
            # A CR or LF inside a name or value would end the header early (header injection).
            raise httpx.LocalProtocolError("A header name or value holds a line break")
        defaults = ""
        if "accept" not in headers:
            defaults = "accept: */*\r\n"
        if "accept-encoding" not in headers:
            defaults += "accept-encoding: identity\r\n"  # bodies arrive as sent: nothing to decompress
        request = f"{head}{defaults}{block}content-length: {len(content)}\r\n\r\n".encode() + content
        connection = await pool.acquire(self.connect_timeout, self.pool_timeout)
        try:
            connection.send(request, self.read_timeout)
            while not connection.headers_done:
                await connection.read_more()
        except BaseException:
            connection.active = False
            connection.close()  # cancelled or broken mid-request: never reused
            raise
        return UpstreamReply(connection)


class UpstreamReply:
    """A :class:`~gateway.transport.Reply` over one :class:`Connection`'s answer."""

    __slots__ = ("_connection", "_decoder", "headers", "status")

    def __init__(self, connection: Connection) -> None:
        self._connection: Connection | None = connection
        self.status = connection.status
        self.headers: Mapping[str, str] = CIMultiDict(connection.raw_headers)
        # Asked for identity, an upstream (or a proxy before it) may compress anyway: decode gzip and deflate
        # as aiohttp did, so providers always see the body as sent.
        encoding = self.headers.get("content-encoding")
        self._decoder = None
        if encoding is not None and encoding.strip().lower() in _COMPRESSED:
            self._decoder = zlib.decompressobj(_AUTO_HEADER)

    async def body(self) -> bytes:
        """The whole body; the connection goes back to the pool after (or is closed)."""
        connection = self._connection
        if connection is None:
            return b""
        try:
            while not connection.complete:
                await connection.read_more()
            data = connection.take()
            return data if self._decoder is None else self._decoded(data, end=True)
        finally:
            self._release()

    async def lines(self) -> AsyncIterator[str]:
        """What arrived up to its last LF is decoded and split at once (a stream's events mostly come many to
        a network read); the rest waits for more. Splitting at an LF never cuts a UTF-8 character."""
        connection = self._connection
        if connection is None:
            return
        pending = b""
        while True:
            if connection.chunks:
                data = connection.take()
                if self._decoder is not None:
                    data = self._decoded(data, end=False)
                if b"\n" not in data:
                    pending += data
                    continue
                complete, _, pending = (pending + data if pending else data).rpartition(b"\n")
                # A CR right before the last LF is that line's CRLF ending.
                for line in split_lines(complete.removesuffix(b"\r").decode("utf-8", "replace")):
                    yield line
            elif connection.complete:
                if self._decoder is not None:
                    pending += self._decoder.flush()
                break
            else:
                await connection.read_more()
        self._release()
        if pending:
            for line in split_lines(pending.removesuffix(b"\r").decode("utf-8", "replace")):
                yield line

    def _decoded(self, data: bytes, *, end: bool) -> bytes:
        assert self._decoder is not None
        try:
            data = self._decoder.decompress(data)
            return data + self._decoder.flush() if end else data
        except zlib.error as exc:
            # What aiohttp's ClientPayloadError was mapped to: a body that cannot be read.
            raise httpx.ReadError(f"The upstream's compressed body is broken: {exc}") from exc

    async def aclose(self) -> None:
        """Release the answer: its connection is reused only if it was read to the end."""
        self._release()

    def _release(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.release()


def split_lines(text: str) -> list[str]:
    """``text`` split at CRLF, LF or a lone CR (SSE allows all three; str.splitlines would also split at
    characters such as U+2028 that JSON may hold raw)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")
