"""The upstream HTTP transport, chosen by measurement: httpx's API over aiohttp's connection handling.

``python bench/transport.py`` (mock-upstream in a subprocess, 32 concurrent POSTs from one event loop,
2-core machine shared with other work; the mock alone serves about 4,600 req/s under wrk):

    httpx default     500-550 req/s   p50 36-43 ms   p99 ~290 ms
    httpx + aiohttp  1080-2240 req/s  p50 13-27 ms   p99 43-71 ms

So the gateway keeps httpx's transport interface as its seam (``MockTransport``/``ASGITransport`` in tests,
per-origin TLS pools in ``gateway/tls.py``) and sends through ``httpx_aiohttp.AiohttpTransport``, 2-4x the
throughput of httpx's own pool. Sequential round trips to the mock upstream (median, same machine):
``AsyncClient`` over aiohttp 0.53 ms, the same transport called directly 0.38-0.42 ms, raw aiohttp 0.31 ms;
so providers call the transport directly and skip the ``AsyncClient`` layer (``providers/base.py``).

httpx-aiohttp 0.2 maps every ``aiohttp.ClientConnectionError`` that is not a timeout (a refused connection,
a failed DNS lookup, a rejected certificate, a server closing the connection) to ``httpx.ConnectTimeout``,
so a dead upstream would answer 504 "timed out". :class:`GatewayTransport` maps them again from the
aiohttp exception it keeps as the cause: only a real timeout stays a timeout.

Providers send through a :class:`Sender` (:func:`sender`): over the gateway's own transport they talk to
aiohttp directly (:class:`AiohttpSender`: no ``httpx.Request``/``Response`` objects, no httpx-aiohttp
stream adaptation, the body read with one ``await response.read()``), since under load the upstream attempt
was 18% of a production request's event-loop samples and httpx's objects and the adaptation about a third
of it. Any other transport (``MockTransport``/``ASGITransport`` in tests, one a test wraps) is called
through httpx's interface (:class:`HttpxSender`), so it stays the seam. Both raise httpx's exceptions,
the direct one mapped from aiohttp's exactly as the httpx path maps them (:func:`transport_error`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from yarl import URL

# Enough connections for a busy replica; aiohttp keeps idle ones for keepalive_expiry seconds.
UPSTREAM_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30)


def connection_error(exc: httpx.TransportError, request: httpx.Request | None) -> httpx.TransportError:
    """``exc`` with a connection failure that httpx-aiohttp reported as a timeout mapped to what it is.

    A refused connection, DNS failure or TLS failure (``aiohttp.ClientConnectorError``) becomes
    ``httpx.ConnectError``, a server closing the connection ``httpx.RemoteProtocolError``, any other
    connection error ``httpx.NetworkError``; timeouts and every other error are returned unchanged.
    """
    cause = exc.__cause__
    if (
        not isinstance(exc, httpx.TimeoutException)
        or not isinstance(cause, aiohttp.ClientConnectionError)
        or isinstance(cause, TimeoutError)  # aiohttp's ServerTimeoutError and its subclasses
    ):
        return exc
    kind: type[httpx.TransportError]
    if isinstance(cause, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(cause, aiohttp.ServerDisconnectedError):
        kind = httpx.RemoteProtocolError
    else:
        kind = httpx.NetworkError
    mapped = kind(str(exc), request=request)
    mapped.__cause__ = cause
    return mapped


class GatewayTransport(AiohttpTransport):
    """httpx-aiohttp's transport with connection failures reported as such (see the module docstring).

    Its aiohttp session (one connection pool) also serves :class:`AiohttpSender`, the providers' direct path.
    """

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session, made on first use (it needs the running event loop), as httpx-aiohttp does."""
        client = self.client
        if not isinstance(client, aiohttp.ClientSession):
            client = self.client = self.get_client()
        return client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; a connection failure raises ``httpx.ConnectError`` (or another non-timeout)."""
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise connection_error(exc, request) from exc.__cause__
        response.stream = _MappedStream(response.stream)
        return response


class _MappedStream(httpx.AsyncByteStream):
    """The response body with the same mapping: a server closing mid-body is no timeout either."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as exc:
            raise connection_error(exc, None) from exc.__cause__

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except httpx.TransportError as exc:
            raise connection_error(exc, None) from exc.__cause__


def default_transport() -> httpx.AsyncBaseTransport:
    """The transport upstream requests use unless one is injected."""
    return GatewayTransport(limits=UPSTREAM_LIMITS)


class Reply(Protocol):
    """An upstream's response once its status and headers arrived; the body is read once, whole or by lines.

    Reading raises httpx's exceptions (``httpx.ReadError``, ``httpx.ReadTimeout``...), whichever sender.
    """

    status: int
    headers: Mapping[str, str]  # case-insensitive

    async def body(self) -> bytes:
        """The whole body; the response is closed after."""
        ...

    def lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive (CR, LF or CRLF ended, without the ending), UTF-8 decoded."""
        ...

    async def aclose(self) -> None:
        """Release the response: its connection returns to the pool, or is closed if not read to the end."""
        ...


class Sender(Protocol):
    """Sends a provider's POSTs to its upstream: :class:`AiohttpSender` or :class:`HttpxSender`."""

    async def post(self, path: str, headers: dict[str, str], content: bytes) -> Reply:
        """POST ``content`` to the base URL plus ``path``; raises httpx's transport exceptions."""
        ...


Timeouts = Mapping[str, float]  # httpx's timeout extension: connect, read, write, pool (seconds)


def sender(transport: httpx.AsyncBaseTransport, base_url: str, timeout: Timeouts) -> Sender:
    """The sender for ``base_url`` over ``transport``: direct aiohttp over a :class:`GatewayTransport`,
    httpx's transport interface over any other."""
    if isinstance(transport, GatewayTransport):
        return AiohttpSender(transport, base_url, timeout)
    return HttpxSender(transport, base_url, timeout)


class AiohttpSender:
    """POSTs through the :class:`GatewayTransport`'s aiohttp session (its pool, limits and TLS context)."""

    def __init__(self, transport: GatewayTransport, base_url: str, timeout: Timeouts) -> None:
        self.transport = transport
        self.base_url = base_url
        # httpx-aiohttp's mapping of httpx's timeouts, so both paths time out alike.
        self.timeout = aiohttp.ClientTimeout(
            sock_connect=timeout.get("connect"), sock_read=timeout.get("read"), connect=timeout.get("pool")
        )
        self._urls: dict[str, URL] = {}

    async def post(self, path: str, headers: dict[str, str], content: bytes) -> Reply:
        """Send; a connection failure or timeout raises the httpx exception the httpx path would."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)  # parsed once per path
        try:
            response = await self.transport.session().request(
                "POST", url, headers=headers, data=content, allow_redirects=False, timeout=self.timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from exc
        return AiohttpReply(response)


class AiohttpReply:
    """A :class:`Reply` over an ``aiohttp.ClientResponse``."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def body(self) -> bytes:
        """The whole body in one read (aiohttp releases the connection to the pool when it is complete)."""
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from exc
        finally:
            self._response.release()

    async def lines(self) -> AsyncIterator[str]:
        """What arrived up to its last LF is decoded and split at once (a stream's events mostly come many to
        a network read); the rest waits for more. Splitting at an LF never cuts a UTF-8 character."""
        pending = b""
        try:
            async for data in self._response.content.iter_any():
                if b"\n" not in data:
                    pending += data
                    continue
                complete, _, pending = (pending + data if pending else data).rpartition(b"\n")
                # A CR right before the last LF is that line's CRLF ending.
                for line in _split_lines(complete.removesuffix(b"\r").decode("utf-8", "replace")):
                    yield line
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from exc
        if pending:
            for line in _split_lines(pending.removesuffix(b"\r").decode("utf-8", "replace")):
                yield line

    async def aclose(self) -> None:
        """Release the response; one not read to its end closes its connection rather than reuse it."""
        self._response.release()


def _split_lines(text: str) -> list[str]:
    # Lines end with CRLF, LF or a lone CR (SSE allows all three; str.splitlines would also split at
    # characters such as U+2028 that JSON may hold raw).
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def transport_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception the httpx path (httpx-aiohttp, then :func:`connection_error`) makes of aiohttp's
    ``exc``: a timeout stays a timeout (connect or read), a refused connection is ``httpx.ConnectError``,
    a server closing the connection ``httpx.RemoteProtocolError``, a body cut short ``httpx.ReadError``."""
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.SocketTimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):
        kind = httpx.TimeoutException
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.ClientConnectionError):
        kind = httpx.NetworkError
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind = httpx.ReadError
    elif isinstance(exc, aiohttp.NonHttpUrlClientError | aiohttp.InvalidUrlClientError):
        kind = httpx.UnsupportedProtocol
    else:
        # A response that is not HTTP (aiohttp.ClientResponseError from its parser), or any other client
        # error: httpx-aiohttp let these through unmapped, which made a 500 rather than the 502 it is.
        kind = httpx.RemoteProtocolError
    return kind(str(exc))


class HttpxSender:
    """POSTs through any httpx transport: the seam tests use (``MockTransport``, ``ASGITransport``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, base_url: str, timeout: Timeouts) -> None:
        self.transport = transport
        self.base_url = base_url
        self.timeout = dict(timeout)
        self._urls: dict[str, httpx.URL] = {}

    async def post(self, path: str, headers: dict[str, str], content: bytes) -> Reply:
        """Send through ``transport.handle_async_request`` (no ``AsyncClient`` layer: see the providers)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)  # parsed once per path
        request = httpx.Request(
            "POST", url, content=content, headers=headers, extensions={"timeout": self.timeout}
        )
        response = await self.transport.handle_async_request(request)
        response.request = request
        return HttpxReply(response)


class HttpxReply:
    """A :class:`Reply` over an ``httpx.Response``."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def body(self) -> bytes:
        """The whole body; the response is closed after."""
        try:
            return await self._response.aread()
        finally:
            await self._response.aclose()

    def lines(self) -> AsyncIterator[str]:
        """httpx's lines (CR, LF or CRLF ended)."""
        return self._response.aiter_lines()

    async def aclose(self) -> None:
        """Close the response."""
        await self._response.aclose()
