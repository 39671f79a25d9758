"""Shared test helpers."""

import os

import pytest
from postgres_server import PostgresServer, available
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


# --- PostgreSQL (the shared usage ledger) -------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL cluster for the whole session (temp dir, free loopback port), stopped at the end.

    Skips where PostgreSQL is not installed (`scripts/test` installs it; in CI a skip would hide a broken
    setup, so there it fails instead).
    """
    if not available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: scripts/test installs it with apt-get")
        pytest.skip("PostgreSQL is not installed (scripts/test installs it)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server):
    """The URL (with its password) of a database of this test's own on the session's PostgreSQL server."""
    return postgres_server.create_database()
