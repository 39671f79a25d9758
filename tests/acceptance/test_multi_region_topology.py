"""Acceptance: multi-region deployment as processes (plan MEDIUM-multi-region-deployment, step 7; issue 18).

The module starts, on loopback: a `redis-server` per region (eu-west, us-east) and a global one behind a
40 ms-each-way delay proxy (an 80 ms cross-region round trip); two `gateway run` replicas per region, each
with its `server.region`, its region's Redis as `state.redis_url` and the global one as
`state.global_redis_url` with budgets and rate limits global; one always-up mock upstream per region (in
this process, so a test can count what reached it) and, per scenario that kills one, a `gateway mock-upstream`
process in eu-west that the test SIGKILLs. Clients are the openai SDK with retries off, so every error
the gateway gives is one the test sees.

Models: `mr-chat` and `mr-priced` have a route in each region on the always-up upstreams; `mr-failover`
and `mr-resident` have their eu-west route on a killable upstream of their own (no scenario depends on
another's kill, whatever the order) and their us-east route on the always-up one.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from multi_region_harness import RegionStores, Replica, UpstreamProcess, start_replicas
from uvicorn_server import run_server

from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server is not installed (scripts/test installs it)",
    ),
]

REGIONS = ("eu-west", "us-east")
MASTER = "sk-mrt-master"
ANY_KEY = "sk-mrt-any"
EU_KEY = "sk-mrt-eu-only"
RPM_KEY = "sk-mrt-rpm"
BUDGET_KEY = "sk-mrt-budget"
RPM = 20
BUDGET_USD = Decimal("0.2")


@dataclass
class Deployment:
    """The running topology: replicas by region, the upstreams, the stores."""

    replicas: list[Replica]
    stable: dict[str, MockUpstream]  # always-up upstream per region (in process: its stats are readable)
    killable: dict[str, UpstreamProcess]  # per scenario: the eu-west upstream a test SIGKILLs
    stores: RegionStores

    def in_region(self, region: str) -> list[Replica]:
        return [replica for replica in self.replicas if replica.region == region]


def config_for(region: str, stores: RegionStores, stable: dict[str, str], killable: dict[str, str]) -> str:
    def provider(name: str, base_url: str) -> dict[str, Any]:
        return {"name": name, "type": "openai", "base_url": base_url, "api_key": "sk-upstream"}

    def routes(eu_provider: str) -> list[dict[str, str]]:
        return [
            {"provider": eu_provider, "model": "eu-west-model", "region": "eu-west"},
            {"provider": "us-east-up", "model": "us-east-model", "region": "us-east"},
        ]

    data = {
        "server": {"region": region},
        "auth": {
            "master_key": MASTER,
            "keys": [
                {"name": "mrt-any", "key": ANY_KEY},
                {"name": "mrt-eu-only", "key": EU_KEY, "allowed_regions": ["eu-west"]},
                {"name": "mrt-rpm", "key": RPM_KEY, "rpm": RPM},
                {
                    "name": "mrt-budget",
                    "key": BUDGET_KEY,
                    "budget": {"limit_usd": float(BUDGET_USD), "period": "total"},
                },
            ],
        },
        "providers": [
            provider("eu-west-up", stable["eu-west"]),
            provider("us-east-up", stable["us-east"]),
            provider("eu-west-failover", killable["failover"]),
            provider("eu-west-resident", killable["resident"]),
        ],
        "models": [
            {"name": "mr-chat", "routes": routes("eu-west-up")},
            {"name": "mr-failover", "routes": routes("eu-west-failover")},
            {"name": "mr-resident", "routes": routes("eu-west-resident")},
            {
                "name": "mr-priced",
                "routes": routes("eu-west-up"),
                # $0.001 a token: a request of ~20 tokens costs about 0.02, so the budget is ~10 requests.
                "pricing": {"input_per_1m": 1000, "output_per_1m": 1000},
            },
        ],
        "features": {
            "routing": {
                "strategy": "weighted",
                "max_attempts": 3,
                "backoff_base_seconds": 0,
                "region_preference": {"eu-west": ["us-east"], "us-east": ["eu-west"]},
            },
        },
        "state": {
            "redis_url": stores.regional[region],
            "global_redis_url": stores.global_url,
            "global_features": ["budgets", "rate_limit"],
            "on_error": "fail_closed",
            "timeout_seconds": 5,
        },
        "usage": {"database": ":memory:"},
    }
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts its own replicas, upstreams and Redis servers; a live gateway is one replica")
    folder = Path(tmp_path_factory.mktemp("multi-region-topology"))
    with ExitStack() as stack:
        stores = stack.enter_context(RegionStores(REGIONS, delay_ms=40))
        stable = {region: MockUpstream(MockOptions(reply="ok", latency_ms=20)) for region in REGIONS}
        stable_urls = {region: stack.enter_context(run_server(app)) + "/v1" for region, app in stable.items()}
        killable = {}
        for name in ("failover", "resident"):
            # Latency keeps requests in flight on the upstream when it is killed.
            killable[name] = upstream = UpstreamProcess(folder, name, latency_ms=50, reply="ok")
            stack.callback(upstream.stop)
        killable_urls = {name: upstream.base_url for name, upstream in killable.items()}
        configs = [
            (region, config_for(region, stores, stable_urls, killable_urls))
            for region in REGIONS
            for _ in range(2)
        ]
        replicas = stack.enter_context(start_replicas(folder, configs))
        yield Deployment(replicas, stable, killable, stores)


def sdk(replica: Replica, key: str) -> openai.AsyncOpenAI:
    # No SDK retries: a 429 or 5xx from the gateway must reach the test, not be retried away.
    return openai.AsyncOpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0, timeout=60)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    error: dict[str, Any] | None


async def ask(client: openai.AsyncOpenAI, model: str, **extra: Any) -> Answer:
    # A fixed-length prompt: every request of a model costs the same.
    messages = [{"role": "user", "content": f"prompt {uuid.uuid4().hex}"}]
    try:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages, **extra)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return Answer(exc.status_code, dict(exc.response.headers), body.get("error", body))
    raw.parse()
    return Answer(raw.status_code, dict(raw.headers), None)


async def burst(deployment: Deployment, key: str, model: str, per_replica: int, **extra: Any) -> list[Answer]:
    """`per_replica` concurrent requests on every replica of every region at once."""
    clients = [sdk(replica, key) for replica in deployment.replicas]
    try:
        calls = [ask(client, model, **extra) for client in clients for _ in range(per_replica)]
        return list(await asyncio.gather(*calls))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.feature("multi-region-deployment", step=7)
def test_every_replica_prefers_the_route_in_its_own_region(deployment: Deployment) -> None:
    async def scenario() -> None:
        for replica in deployment.replicas:
            client = sdk(replica, ANY_KEY)
            answers = [await ask(client, "mr-chat") for _ in range(5)]
            await client.close()
            assert [a.status for a in answers] == [200] * 5
            assert {a.headers["x-gateway-region"] for a in answers} == {replica.region}
            assert {a.headers["x-gateway-route"] for a in answers} == {
                f"{replica.region}-up/{replica.region}-model"
            }

    asyncio.run(scenario())


@pytest.mark.feature("multi-region-deployment", step=7)
def test_residency_holds_on_every_replica_even_when_the_keys_region_dies(deployment: Deployment) -> None:
    us_upstream = deployment.stable["us-east"]

    async def scenario() -> None:
        # Up: the EU-only key is served in eu-west from every replica, the us-east ones included.
        for replica in deployment.replicas:
            client = sdk(replica, EU_KEY)
            answer = await ask(client, "mr-resident")
            await client.close()
            assert answer.status == 200, answer.error
            assert answer.headers["x-gateway-route"] == "eu-west-resident/eu-west-model"
        deployment.killable["resident"].kill()
        # Down: any other key fails over to us-east...
        client = sdk(deployment.in_region("eu-west")[0], ANY_KEY)
        moved = await ask(client, "mr-resident")
        await client.close()
        assert moved.status == 200 and moved.headers["x-gateway-route"] == "us-east-up/us-east-model"
        # ...but the EU-only key gets 503 naming its restriction, and us-east's upstream never sees it.
        before = us_upstream.stats["requests"]
        for replica in deployment.replicas:
            client = sdk(replica, EU_KEY)
            answers = [await ask(client, "mr-resident") for _ in range(3)]
            await client.close()
            for answer in answers:
                assert answer.status == 503, answer
                assert answer.error is not None and answer.error["code"] == "no_route_in_allowed_regions"
                assert "allowed_regions: eu-west" in answer.error["message"]
                assert answer.headers["x-gateway-region"] == replica.region
        assert us_upstream.stats["requests"] == before

    asyncio.run(scenario())


@pytest.mark.feature("multi-region-deployment", step=7)
def test_upstreams_killed_mid_load_fail_over_to_the_preferred_region_with_no_client_error(
    deployment: Deployment,
) -> None:
    eu = deployment.in_region("eu-west")

    async def client_loop(replica: Replica, stop: asyncio.Event, answers: list[Answer]) -> None:
        client = sdk(replica, ANY_KEY)
        try:
            while not stop.is_set():
                answers.append(await ask(client, "mr-failover"))
        finally:
            await client.close()

    async def scenario() -> list[Answer]:
        answers: list[Answer] = []
        stop = asyncio.Event()
        # Four concurrent clients per eu-west replica, so requests are in flight when the upstream dies.
        loops = [asyncio.create_task(client_loop(replica, stop, answers)) for replica in eu for _ in range(4)]
        while sum(a.headers.get("x-gateway-route", "").startswith("eu-west") for a in answers) < 20:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(deployment.killable["failover"].kill)
        killed_at = len(answers)
        while len(answers) < killed_at + 40:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*loops)
        return answers

    answers = asyncio.run(scenario())
    assert [a for a in answers if a.status != 200] == []
    routes = [a.headers["x-gateway-route"] for a in answers]
    assert routes[0] == "eu-west-failover/eu-west-model"
    # After the kill every answer comes from the preferred next region; none from a dead route.
    assert routes[-20:] == ["us-east-up/us-east-model"] * 20
    assert {a.headers["x-gateway-region"] for a in answers} == {"eu-west"}


@pytest.mark.feature("multi-region-deployment", step=7)
def test_a_keys_rpm_holds_globally_across_two_regions_of_two_replicas(deployment: Deployment) -> None:
    started = time.monotonic()
    answers = asyncio.run(burst(deployment, RPM_KEY, "mr-chat", per_replica=15))
    elapsed = time.monotonic() - started
    statuses = [a.status for a in answers]
    assert set(statuses) <= {200, 429}
    assert all(a.error and a.error["code"] == "rate_limit_exceeded" for a in answers if a.status == 429)
    admitted = statuses.count(200)
    # rate-limiting.md: GCRA admits the full limit at once, then one more every 60/rpm seconds. Each region
    # enforcing it alone would admit up to 2 x RPM here; the global store holds it to the bound.
    bound = RPM + int(elapsed * RPM / 60) + 1
    assert RPM <= admitted <= bound, (admitted, bound, elapsed)
    assert {a.headers["x-gateway-region"] for a in answers if a.status == 200} <= set(REGIONS)


@pytest.mark.feature("multi-region-deployment", step=7)
def test_a_global_budget_is_never_overspent_across_regions(deployment: Deployment) -> None:
    # Concurrent requests on every replica of both regions at once: more than the budget can pay for.
    answers = asyncio.run(burst(deployment, BUDGET_KEY, "mr-priced", per_replica=8, max_tokens=2))
    served = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert served and refused

    async def until_refused() -> Answer:
        # Then one at a time, replica after replica, until what is left cannot cover a request.
        for number in range(40):
            client = sdk(deployment.replicas[number % len(deployment.replicas)], BUDGET_KEY)
            answer = await ask(client, "mr-priced", max_tokens=2)
            await client.close()
            if answer.status != 200:
                return answer
            served.append(answer)
        raise AssertionError("the budget was never spent")

    refused.append(asyncio.run(until_refused()))
    for answer in refused:
        assert answer.status == 429 and answer.error and answer.error["code"] == "budget_exceeded", answer
    spent = sum(Decimal(a.headers["x-gateway-cost-usd"]) for a in served)
    # Never overspent, whichever replicas of which regions spent it; and spent, not refused from the start.
    assert BUDGET_USD / 2 < spent <= BUDGET_USD, spent
    assert {a.headers["x-gateway-region"] for a in served} == set(REGIONS)
