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
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

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
    """httpx-aiohttp's transport with connection failures reported as such (see the module docstring)."""

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
