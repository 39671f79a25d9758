"""The upstream HTTP transport: httpx's transport interface as the seam, the gateway's own client behind it.

The seam is httpx's transport interface (``MockTransport``/``ASGITransport`` in tests, per-origin TLS pools
in ``gateway/tls.py``). The gateway's own transport (:class:`GatewayTransport`) is httpx-aiohttp's, which was
2-4x the throughput of httpx's own pool (32 concurrent POSTs to the mock upstream: 1080-2240 req/s against
500-550); its httpx interface still serves whoever calls it as an httpx transport. Providers do not: they
send through the gateway's own HTTP/1.1 client that the transport holds (below).

httpx-aiohttp 0.2 maps every ``aiohttp.ClientConnectionError`` that is not a timeout (a refused connection,
a failed DNS lookup, a rejected certificate, a server closing the connection) to ``httpx.ConnectTimeout``,
so a dead upstream would answer 504 "timed out". :class:`GatewayTransport` maps them again from the
aiohttp exception it keeps as the cause: only a real timeout stays a timeout.

Providers send through a :class:`Sender` (:func:`sender`): over the gateway's own transport, the gateway's
own HTTP/1.1 client (``gateway/upstream_client.py``: a pool per origin, ``httptools`` parsing, no
``httpx.Request``/``Response`` objects). ``python bench/transport.py`` (same process, alternating, uvloop):
CPU per upstream call 41 us one at a time and 32 us with 32 in flight, against 135 us and 93 us through
aiohttp directly (the providers' path before it) and 254 us and 188 us through httpx over aiohttp. Any other
transport (``MockTransport``/``ASGITransport`` in tests, one a test wraps) is called through httpx's
interface (:class:`HttpxSender`), so it stays the seam. Both raise httpx's exceptions, the direct one as the
aiohttp path mapped them (a dead upstream 502 with its reason, only a real timeout 504).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway.upstream_client import UpstreamClient

# Enough connections for a busy replica (per upstream origin for the providers' client); idle ones are kept
# keepalive_expiry seconds.
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

    Providers do not use its httpx interface: they send through :attr:`upstream`, the gateway's own client
    with the same TLS context and limits (:func:`sender`). Closing the transport closes both.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.upstream = UpstreamClient(self.ssl_context, self.limits)

    async def aclose(self) -> None:
        """Close the providers' pools and httpx-aiohttp's session."""
        await self.upstream.aclose()
        await super().aclose()

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
    """Sends a provider's POSTs to its upstream: the gateway's own client
    (:class:`~gateway.upstream_client.UpstreamSender`) or :class:`HttpxSender`."""

    async def post(self, path: str, headers: dict[str, str], content: bytes) -> Reply:
        """POST ``content`` to the base URL plus ``path``; raises httpx's transport exceptions."""
        ...


Timeouts = Mapping[str, float]  # httpx's timeout extension: connect, read, write, pool (seconds)


def sender(transport: httpx.AsyncBaseTransport, base_url: str, timeout: Timeouts) -> Sender:
    """The sender for ``base_url`` over ``transport``: the gateway's own client (its pools) over a
    :class:`GatewayTransport`, httpx's transport interface over any other."""
    if isinstance(transport, GatewayTransport):
        return transport.upstream.sender(base_url, timeout)
    return HttpxSender(transport, base_url, timeout)


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
