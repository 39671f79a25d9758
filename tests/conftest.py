"""Shared test helpers."""

import pytest
from redis_server import RedisServer

# --- Redis (cache+ratelimit helper) ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """`@pytest.mark.anyio` tests run on asyncio only: the gateway and redis-py's asyncio client need it."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the whole session (free loopback port, no persistence), stopped at the end.

    Tests that share it must use keys of their own (a unique prefix); a test that stops Redis must start its
    own `RedisServer` instead.
    """
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server):
    """The URL of the session's redis-server, e.g. `redis://127.0.0.1:PORT/0`."""
    return redis_server.url
