"""``gateway.router.attempt``: the per-try seam routers use."""

from __future__ import annotations

import asyncio

import pytest
from test_pipeline import make_call

from gateway.config import RouteConfig
from gateway.errors import GatewayError
from gateway.pipeline import Call, Response, Result
from gateway.router import attempt

pytestmark = pytest.mark.anyio


class Slow:
    name = "slow"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.endpoints: list[str] = []

    async def chat(self, call: Call, route: RouteConfig) -> Result:
        self.endpoints.append("chat")
        await asyncio.sleep(0.02)
        if self.fail:
            raise GatewayError(503, "down", "upstream_error")
        return Response({"usage": {}})

    async def embeddings(self, call: Call, route: RouteConfig) -> Response:
        self.endpoints.append("embeddings")
        return Response({"data": []})


async def test_attempt_counts_headers_and_upstream_time() -> None:
    call = make_call()
    provider = Slow()
    await attempt(call, RouteConfig(provider="p", model="up-model"), provider)
    assert call.attempts == 1 and call.upstream_s >= 0.015
    assert call.response_headers == {"x-gateway-attempts": "1", "x-gateway-route": "p/up-model"}
    assert call.route is not None and call.route.model == "up-model"


async def test_a_failed_attempt_still_names_its_route_and_counts_time() -> None:
    call = make_call()
    with pytest.raises(GatewayError):
        await attempt(call, RouteConfig(provider="down"), Slow(fail=True))
    assert call.response_headers["x-gateway-route"] == "down/x"  # no upstream model: the alias
    assert call.upstream_s >= 0.015 and call.route is None
    await attempt(call, RouteConfig(provider="up"), Slow())
    assert call.attempts == 2 and call.response_headers["x-gateway-attempts"] == "2"


async def test_embeddings_calls_go_to_the_embeddings_method() -> None:
    call = make_call()
    call.endpoint = "embeddings"
    provider = Slow()
    await attempt(call, RouteConfig(provider="p"), provider)
    assert provider.endpoints == ["embeddings"]
