"""No overspend under concurrency: 100 simultaneous requests against a budget that fits exactly 10 of them,
through one app (memory store) and through two apps sharing Redis (two replicas)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from decimal import Decimal

import httpx
import pytest
from budget_fakes import MASTER, FakeUpstream, auth, chat, state_yaml
from gateway_testing import serve
from redis_server import RedisServer

from gateway.config import parse_config
from gateway.pricing import ModelPrice, cost_nanos, format_usd, nanos_to_usd
from gateway.token_estimate import max_prompt_tokens

pytestmark = pytest.mark.anyio

URL = "/v1/chat/completions"
REQUESTS = 100
FITS = 10
MAX_TOKENS = 40
CONTENT = "how much is too much?"
KEY = "sk-burst-0000000001"


def request_cost() -> int:
    """What each request reserves and, with the fake upstream, also costs: identical for all of them."""
    prompt = max_prompt_tokens([{"role": "user", "content": CONTENT}])
    return cost_nanos(ModelPrice(input=Decimal(1), output=Decimal(1000)), prompt, MAX_TOKENS)


def config_text(name: str, limit_nanos: int, redis_url: str | None) -> str:
    state = state_yaml(redis_url)
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: {name}, key: {KEY}, budget: {{limit_usd: "{nanos_to_usd(limit_nanos)}", period: total}}}}
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
models:
  - name: priced
    routes: [{{provider: up, model: up-model, pricing: {{input_per_1m: 1, output_per_1m: 1000}}}}]
usage:
  database: ":memory:"
{state}"""


async def burst(clients: list[httpx.AsyncClient]) -> list[httpx.Response]:
    """REQUESTS requests at once, spread over ``clients`` round-robin."""
    body = chat(CONTENT, model="priced", max_tokens=MAX_TOKENS)
    return await asyncio.gather(
        *(clients[i % len(clients)].post(URL, json=body, headers=auth(KEY)) for i in range(REQUESTS))
    )


async def check(
    clients: list[httpx.AsyncClient], responses: list[httpx.Response], name: str, limit: int
) -> None:
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == FITS
    assert statuses.count(429) == REQUESTS - FITS
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "budget_exceeded"
    header_total = sum(Decimal(r.headers["x-gateway-cost-usd"]) for r in responses)
    assert header_total == nanos_to_usd(limit)
    ledger_total = Decimal(0)
    for client in clients:
        (budget,) = (await client.get("/admin/budgets", headers=auth(MASTER))).json()["budgets"]
        assert budget["name"] == name
        # Never above the limit; here exactly at it, with nothing left reserved.
        assert budget["spent_usd"] == format_usd(limit)
        assert budget["reserved_usd"] == "0"
        assert budget["remaining_usd"] == "0"
        totals = (await client.get("/admin/usage", headers=auth(MASTER))).json()["totals"]
        ledger_total += Decimal(totals["cost_usd"])
    # Every cost a client was told about is in the ledgers, and nothing else.
    assert ledger_total == header_total


async def test_one_app_never_overspends() -> None:
    limit = FITS * request_cost()
    upstream = FakeUpstream(delay=0.02)
    async with serve(parse_config(config_text("burst", limit, None)), upstream.transport()) as client:
        responses = await burst([client])
        await check([client], responses, "burst", limit)
    assert len(upstream.bodies) == FITS


async def test_two_apps_sharing_redis_never_overspend(redis_url: str) -> None:
    name = f"burst-{uuid.uuid4().hex[:8]}"  # the session's Redis is shared: a budget of our own
    limit = FITS * request_cost()
    upstream = FakeUpstream(delay=0.02)
    config = parse_config(config_text(name, limit, redis_url))
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(serve(config, upstream.transport())) for _ in range(2)]
        responses = await burst(clients)
        # Both replicas report the same spend (one budget, not one each: that would let 20 through).
        await check(clients, responses, name, limit)
    assert len(upstream.bodies) == FITS


async def test_with_redis_down_and_fail_closed_budgets_answer_503() -> None:
    with RedisServer() as server:
        config = parse_config(config_text(f"down-{uuid.uuid4().hex[:8]}", 10**9, server.url))
    config.state.timeout_seconds = 0.5
    # The gateway starts (restoring spend fails and is logged) and refuses what it cannot budget.
    async with serve(config, FakeUpstream().transport()) as client:
        body = chat(CONTENT, model="priced", max_tokens=MAX_TOKENS)
        reply = await client.post(URL, json=body, headers=auth(KEY))
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "state_store_unavailable"
        assert "redis://" not in reply.text
        assert (await client.get("/admin/budgets", headers=auth(MASTER))).status_code == 503
