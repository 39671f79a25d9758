"""tests/delay_proxy.py: the simulated cross-region link in front of a real redis-server.

Times here are lower bounds only (a delayed command cannot come back sooner than the delay it was given);
nothing asserts that anything is fast.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
import redis
from delay_proxy import DelayProxy
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_server import RedisServer, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (scripts/test installs it)"
)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def client(port: int) -> redis.Redis:
    # No retries: a cut link must show as the error it is, not be hidden by a reconnect.
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))


def rtt(conn: redis.Redis) -> float:
    started = time.perf_counter()
    assert conn.ping() is True
    return time.perf_counter() - started


def test_a_command_through_the_proxy_takes_at_least_the_delay_both_ways(server: RedisServer) -> None:
    with DelayProxy(server.port, delay_ms=40) as proxy, client(proxy.port) as conn:
        rtt(conn)  # connected (the handshake is delayed too)
        assert min(rtt(conn) for _ in range(3)) >= 0.080
        assert proxy.connections == 1


def test_without_delay_it_is_a_plain_proxy_and_bytes_arrive_intact_and_in_order(server: RedisServer) -> None:
    value = bytes(range(256)) * 4096  # 1 MiB: many chunks each way
    with DelayProxy(server.port, delay_ms=5) as proxy, client(proxy.port) as conn:
        conn.set("big", value)
        assert conn.get("big") == value
        pipe = conn.pipeline(transaction=False)
        for _ in range(200):
            pipe.incr("counter")
        assert pipe.execute() == list(range(1, 201))
    assert client(server.port).get("counter") == b"200"  # written to the real server


def test_stopping_the_proxy_cuts_the_link_and_starting_it_again_reuses_the_port(server: RedisServer) -> None:
    proxy = DelayProxy(server.port, delay_ms=1)
    proxy.start()
    try:
        port = proxy.port
        conn = client(port)
        assert conn.ping()
        proxy.stop()
        with pytest.raises(redis.ConnectionError):
            conn.ping()
        proxy.start()
        assert proxy.port == port
        assert client(port).ping()
    finally:
        proxy.stop()


def test_a_dead_target_closes_the_client_connection() -> None:
    with DelayProxy(free_port(), delay_ms=1) as proxy, pytest.raises(redis.ConnectionError):
        client(proxy.port).ping()


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay_ms must be >= 0"):
        DelayProxy(6379, delay_ms=-1)
