"""The default upstream transport over real loopback sockets: a connection failure is a 502, a timeout a 504.

httpx-aiohttp reports every aiohttp connection error as ``httpx.ConnectTimeout``; ``gateway/transport.py``
maps them back, so a dead upstream is "unreachable" (502) and only a silent one "timed out" (504).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import httpx
import pytest
from gateway_testing import auth, chat, openai_config, serve

from gateway.config import GatewayConfig
from gateway.transport import GatewayTransport, connection_error

pytestmark = pytest.mark.anyio

UPSTREAM_KEY = "sk-upstream-secret-0042"


def upstream_config(port: int, *, timeout_s: float = 5.0) -> GatewayConfig:
    """Provider ``up`` at ``127.0.0.1:port``, retried up to 3 times with no back-off to wait out."""
    return openai_config(
        f"http://127.0.0.1:{port}/v1",
        UPSTREAM_KEY,
        timeout_s=timeout_s,
        connect_timeout_s=timeout_s,
        extra="features:\n  routing: {max_attempts: 3, backoff_base_seconds: 0, backoff_max_seconds: 0}",
    )


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound without listen, so no other test can take it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port whose kernel accepts connections that nobody ever reads from or answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_a_refused_connection_is_502_unreachable_after_the_retries() -> None:
    with closed_port() as port:
        async with serve(upstream_config(port)) as client:  # the default transport
            response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_error" and error["code"] == "upstream_unreachable"
    assert error["message"] == "Upstream 'up' is unreachable (connection refused)."
    assert response.headers["x-gateway-attempts"] == "3"  # connection errors are still retried
    assert UPSTREAM_KEY not in response.text and str(port) not in response.text


async def test_an_upstream_that_never_answers_is_504_timeout() -> None:
    with silent_server() as port:
        async with serve(upstream_config(port, timeout_s=0.2)) as client:
            response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["type"] == "upstream_error" and error["code"] == "upstream_timeout"
    assert response.headers["x-gateway-attempts"] == "3"


async def test_the_transport_raises_connect_error_and_read_timeout() -> None:
    transport = GatewayTransport()
    timeout = {"connect": 0.2, "read": 0.2, "write": 0.2, "pool": 0.2}
    try:
        with closed_port() as port:
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/", extensions={"timeout": timeout})
            with pytest.raises(httpx.ConnectError) as refused:
                await transport.handle_async_request(request)
        assert refused.value.request is request
        with silent_server() as port:
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/", extensions={"timeout": timeout})
            with pytest.raises(httpx.ReadTimeout):
                await transport.handle_async_request(request)
    finally:
        await transport.aclose()


def mapped(cause: BaseException, reported: type[httpx.TransportError]) -> httpx.TransportError:
    """What :func:`connection_error` makes of httpx-aiohttp's ``reported(...) from cause``."""
    exc = reported("failed")
    exc.__cause__ = cause
    return connection_error(exc, None)


def test_connection_errors_reported_as_timeouts_are_mapped_back() -> None:
    server_closed = mapped(aiohttp.ServerDisconnectedError(), httpx.ConnectTimeout)
    assert type(server_closed) is httpx.RemoteProtocolError
    reset = mapped(aiohttp.ClientOSError(104, "reset"), httpx.ConnectTimeout)
    assert type(reset) is httpx.NetworkError


def test_real_timeouts_and_other_errors_are_left_alone() -> None:
    assert type(mapped(aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout)) is httpx.ConnectTimeout
    assert type(mapped(aiohttp.SocketTimeoutError(), httpx.ReadTimeout)) is httpx.ReadTimeout
    assert type(mapped(aiohttp.ClientPayloadError(), httpx.ReadError)) is httpx.ReadError
