"""Fixtures for the gateway's own tests: a test config, an in-process client, a mock upstream on loopback.

Helpers (keys, the test config text, ``serve``, ``run_server``...) live in ``gateway_testing.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from gateway_testing import TEST_CONFIG, run_server, serve

from gateway.config import GatewayConfig, parse_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions


@pytest.fixture
def config() -> GatewayConfig:
    """The test config: keys alice (all models), bob (echo only), mock providers incl. failing ones."""
    return parse_config(TEST_CONFIG, "test.yaml")


@pytest.fixture
async def client(config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the test config's app."""
    async with serve(config) as c:
        yield c


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[tuple[str, MockUpstream]]:
    """A ``gateway mock-upstream`` app on a free loopback port: (base URL with /v1, the app for its stats)."""
    upstream = MockUpstream(MockOptions(chunk_size=4))
    with run_server(upstream) as url:
        yield f"{url}/v1", upstream
