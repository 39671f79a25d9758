"""Acceptance: multi-region deployment (plan MEDIUM-multi-region-deployment), black box over HTTP.

The module starts two replicas of its own, one with `server.region: eu-west` and one in `us-east`, serving
the same config: model `mr-chat` has a route in each of eu-west, eu-central and us-east (the upstream model
names say which answered, in `x-gateway-route`), `mr-eu-down` has its two EU routes dead (they always
answer 503). Key `sk-mr-eu-only` may only use eu-west and eu-central. Against a live gateway
(`--gateway-url`) the module is skipped: it needs replicas in two regions that it starts itself.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from redis_server import RedisServer
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config

URL = "/v1/chat/completions"
ANY_KEY = "sk-mr-any-region"
EU_KEY = "sk-mr-eu-only"
MASTER = "sk-mr-master-key"

CONFIG = f"""
server: {{region: REGION}}
auth:
  master_key: {MASTER}
  keys:
    - {{name: mr-any, key: {ANY_KEY}}}
    - {{name: mr-eu-only, key: {EU_KEY}, allowed_regions: [eu-west, eu-central]}}
providers:
  - {{name: eu-west-up, type: mock}}
  - {{name: eu-central-up, type: mock}}
  - {{name: us-east-up, type: mock}}
  - {{name: eu-west-dead, type: mock, options: {{fail_rate: 1.0, fail_status: 503}}}}
  - {{name: eu-central-dead, type: mock, options: {{fail_rate: 1.0, fail_status: 503}}}}
models:
  - name: mr-chat
    routes:
      - {{provider: eu-west-up, model: eu-west-model, region: eu-west}}
      - {{provider: eu-central-up, model: eu-central-model, region: eu-central}}
      - {{provider: us-east-up, model: us-east-model, region: us-east}}
  - name: mr-eu-down
    routes:
      - {{provider: eu-west-dead, model: eu-west-model, region: eu-west}}
      - {{provider: eu-central-dead, model: eu-central-model, region: eu-central}}
      - {{provider: us-east-up, model: us-east-model, region: us-east}}
features:
  routing:
    strategy: weighted
    max_attempts: 3
    backoff_base_seconds: 0
    region_preference:
      eu-west: [eu-central, us-east]
      us-east: [eu-central, eu-west]
usage: {{database: ":memory:"}}
"""


@dataclass(frozen=True)
class Regions:
    """One replica in eu-west, one in us-east (and the global Redis they share, if any)."""

    eu: httpx.Client
    us: httpx.Client
    global_url: str | None = None


@pytest.fixture(scope="module")
def regions(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts replicas in two regions of its own; a live gateway is one replica in one region")
    folder = tmp_path_factory.mktemp("multi-region")
    with ExitStack() as stack:
        clients = []
        for region in ("eu-west", "us-east"):
            path = Path(folder / f"{region}.yaml")
            path.write_text(CONFIG.replace("REGION", region))
            url = stack.enter_context(run_server(create_app(load_config(path))))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
        yield Regions(*clients)


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"region {uuid.uuid4().hex}"}]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.feature("multi-region-deployment", step=(1, 6))
def test_each_replica_names_its_region_on_every_response(regions: Regions) -> None:
    answered = regions.eu.post(URL, json=chat("mr-chat"), headers=auth(ANY_KEY))
    refused = regions.us.post(URL, json=chat("mr-chat"), headers=auth("sk-mr-unknown"))
    assert answered.status_code == 200 and answered.headers["x-gateway-region"] == "eu-west"
    assert refused.status_code == 401 and refused.headers["x-gateway-region"] == "us-east"


@pytest.mark.feature("multi-region-deployment", step=(2, 7))
def test_a_replica_prefers_the_route_in_its_own_region(regions: Regions) -> None:
    for client, expected in (
        (regions.eu, "eu-west-up/eu-west-model"),
        (regions.us, "us-east-up/us-east-model"),
    ):
        routes = {client.post(URL, json=chat("mr-chat"), headers=auth(ANY_KEY)).headers["x-gateway-route"]}
        for _ in range(9):
            reply = client.post(URL, json=chat("mr-chat"), headers=auth(ANY_KEY))
            assert reply.status_code == 200
            routes.add(reply.headers["x-gateway-route"])
        assert routes == {expected}


@pytest.mark.feature("multi-region-deployment", step=(2, 7))
def test_when_its_regions_upstreams_are_down_a_replica_fails_over_without_client_errors(
    regions: Regions,
) -> None:
    statuses, routes = [], set()
    for _ in range(10):
        reply = regions.eu.post(URL, json=chat("mr-eu-down"), headers=auth(ANY_KEY))
        statuses.append(reply.status_code)
        routes.add(reply.headers.get("x-gateway-route"))
    assert statuses == [200] * 10
    assert routes == {"us-east-up/us-east-model"}


@pytest.mark.feature("multi-region-deployment", step=(2, 7))
def test_a_key_restricted_to_eu_is_never_failed_over_to_another_region(regions: Regions) -> None:
    served = regions.us.post(URL, json=chat("mr-chat"), headers=auth(EU_KEY))
    # From the us-east replica too: the nearest allowed route, never the replica's own us-east one.
    assert served.status_code == 200
    assert served.headers["x-gateway-route"] in ("eu-west-up/eu-west-model", "eu-central-up/eu-central-model")
    for client in (regions.eu, regions.us):
        reply = client.post(URL, json=chat("mr-eu-down"), headers=auth(EU_KEY))
        assert reply.status_code == 503, reply.text
        error = reply.json()["error"]
        assert error["code"] == "no_route_in_allowed_regions"
        assert "allowed_regions: eu-central, eu-west" in error["message"]
        assert not reply.headers.get("x-gateway-route", "").startswith("us-east")


@pytest.mark.feature("multi-region-deployment", step=1)
def test_a_key_made_through_the_admin_api_keeps_its_allowed_regions(regions: Regions) -> None:
    made = regions.us.post(
        "/admin/v1/keys",
        json={"name": f"eu-runtime-{uuid.uuid4().hex[:8]}", "allowed_regions": ["eu-west", "eu-central"]},
        headers=auth(MASTER),
    )
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    served = regions.us.post(URL, json=chat("mr-chat"), headers=auth(secret))
    assert served.status_code == 200
    assert served.headers["x-gateway-route"] in ("eu-west-up/eu-west-model", "eu-central-up/eu-central-model")
    refused = regions.us.post(URL, json=chat("mr-eu-down"), headers=auth(secret))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_route_in_allowed_regions"
    typo = regions.us.post(
        "/admin/v1/keys", json={"name": "typo", "allowed_regions": ["eu-nort"]}, headers=auth(MASTER)
    )
    assert typo.status_code == 400 and typo.json()["error"]["param"] == "allowed_regions[0]"


@pytest.mark.feature("multi-region-deployment", step=6)
def test_usage_records_carry_the_region_the_prompt_was_processed_in(regions: Regions) -> None:
    client = regions.eu
    before = _by_region(client)
    assert client.post(URL, json=chat("mr-eu-down"), headers=auth(ANY_KEY)).status_code == 200
    assert client.post(URL, json=chat("mr-eu-down"), headers=auth(EU_KEY)).status_code == 503
    after = _by_region(client)
    assert after.get("us-east", 0) - before.get("us-east", 0) == 1  # answered by the us-east route
    assert after.get("eu-west", 0) - before.get("eu-west", 0) == 1  # never left the eu-west replica


@pytest.mark.feature("multi-region-deployment", step=6)
def test_metrics_name_the_replicas_region_and_each_routes_region(regions: Regions) -> None:
    for client, region in ((regions.eu, "eu-west"), (regions.us, "us-east")):
        reply = client.get("/metrics", headers=auth(MASTER))
        assert reply.status_code == 200
        info = [line for line in reply.text.splitlines() if line.startswith("gateway_info{")]
        assert len(info) == 1 and f'region="{region}"' in info[0] and info[0].endswith(" 1.0")
        route = 'model="mr-chat",region="eu-central",route="eu-central-up/eu-central-model"'
        assert f"gateway_route_info{{{route}}} 1.0" in reply.text


def _by_region(client: httpx.Client) -> dict[str, int]:
    reply = client.get("/admin/usage", params={"group_by": "region"}, headers=auth(MASTER))
    assert reply.status_code == 200, reply.text
    return {group["region"]: group["requests"] for group in reply.json()["groups"]}


GLOBAL_BUDGET_KEY = "sk-mr-global-budget"


@pytest.fixture(scope="module")
def split_state(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Regions]:
    """Replicas in eu-west and us-east, each with a Redis of its own region, sharing one global Redis."""
    if request.config.getoption("gateway_url"):
        pytest.skip("starts replicas and Redis servers of its own")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    folder = tmp_path_factory.mktemp("multi-region-state")
    with ExitStack() as stack:
        shared = stack.enter_context(RedisServer())
        clients = []
        for region in ("eu-west", "us-east"):
            regional = stack.enter_context(RedisServer())
            data = yaml.safe_load(CONFIG.replace("REGION", region))
            data["auth"]["keys"].append(
                {
                    "name": "mr-global-budget",
                    "key": GLOBAL_BUDGET_KEY,
                    "budget": {"limit_usd": 0.03, "period": "total"},
                }
            )
            data["models"].append(
                {
                    "name": "mr-priced",
                    "routes": [{"provider": "eu-west-up", "model": "priced", "region": "eu-west"}],
                    "pricing": {"input_per_1m": 100, "output_per_1m": 100},
                }
            )
            data["features"]["cache"] = {"ttl_seconds": 60}
            # Two failures open a route for a minute (cooldown events across regions, step 5).
            data["features"]["routing"]["cooldown"] = {"min_requests": 2, "seconds": 60, "max_seconds": 60}
            data["state"] = {"redis_url": regional.url, "global_redis_url": shared.url}
            path = Path(folder / f"{region}.yaml")
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            url = stack.enter_context(run_server(create_app(load_config(path))))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
        yield Regions(clients[0], clients[1], shared.url)


@pytest.mark.feature("multi-region-deployment", step=3)
def test_a_budget_in_the_global_store_holds_across_regions_while_the_cache_stays_regional(
    split_state: Regions,
) -> None:
    body = {**chat("mr-priced"), "max_tokens": 20}
    first = split_state.eu.post(URL, json=body, headers=auth(GLOBAL_BUDGET_KEY))
    again = split_state.eu.post(URL, json=body, headers=auth(GLOBAL_BUDGET_KEY))
    other = split_state.us.post(URL, json=body, headers=auth(GLOBAL_BUDGET_KEY))
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 200), other.text
    # The cache is each region's own: a hit in eu-west, a miss in us-east for the same request.
    assert [r.headers["x-gateway-cache"] for r in (first, again, other)] == ["MISS", "HIT", "MISS"]
    # The budget is global: spending it up in eu-west leaves nothing in us-east.
    for _ in range(40):
        reply = split_state.eu.post(
            URL, json={**chat("mr-priced"), "max_tokens": 20}, headers=auth(GLOBAL_BUDGET_KEY)
        )
        if reply.status_code != 200:
            break
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "budget_exceeded", reply.text
    refused = split_state.us.post(
        URL, json={**chat("mr-priced"), "max_tokens": 20}, headers=auth(GLOBAL_BUDGET_KEY)
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"


def _route_state(client: httpx.Client, model: str, route: str) -> str:
    reply = client.get("/admin/routes", headers=auth(MASTER))
    assert reply.status_code == 200, reply.text
    rows = reply.json()["models"][model]["routes"]
    return str(next(row["state"] for row in rows if row["route"] == route))


@pytest.mark.feature("multi-region-deployment", step=5)
def test_a_route_taken_out_in_one_region_is_taken_out_in_the_others(split_state: Regions) -> None:
    dead = "eu-west-dead/eu-west-model"
    assert split_state.global_url is not None
    # Both replicas listen on the global store's cooldown channel before eu-west publishes.
    with redis.Redis.from_url(split_state.global_url) as shared:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            channels = [c.decode() for c in shared.pubsub_channels("gateway:cooldown-events:*")]
            if channels and shared.pubsub_numsub(*channels)[0][1] >= 2:
                break
            time.sleep(0.05)
    assert _route_state(split_state.us, "mr-eu-down", dead) == "closed"
    # eu-west's own dead route fails twice (failover answers the client) and opens there...
    for _ in range(2):
        reply = split_state.eu.post(URL, json=chat("mr-eu-down"), headers=auth(ANY_KEY))
        assert reply.status_code == 200
    assert _route_state(split_state.eu, "mr-eu-down", dead) == "open"
    # ...and in us-east, which never called it: the event reached its regional store.
    deadline = time.monotonic() + 30
    while _route_state(split_state.us, "mr-eu-down", dead) != "open" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _route_state(split_state.us, "mr-eu-down", dead) == "open"


SHARED_RPM_KEY = "sk-mr-partitioned-busy"
BOUND_RPM_KEY = "sk-mr-partitioned-bound"
QUIET_KEY = "sk-mr-partitioned-quiet"


@dataclass(frozen=True)
class Partitioned:
    """Replicas in eu-west and us-east with rate limits partitioned over both; the Redis servers' URLs."""

    eu: httpx.Client
    us: httpx.Client
    global_url: str
    regional_urls: tuple[str, str]


def _partitioned(request: pytest.FixtureRequest, folder: Path, interval: float) -> Iterator[Partitioned]:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts replicas and Redis servers of its own")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    with ExitStack() as stack:
        shared = stack.enter_context(RedisServer())
        clients, regional = [], []
        for region in ("eu-west", "us-east"):
            store = stack.enter_context(RedisServer())
            regional.append(store.url)
            data = yaml.safe_load(CONFIG.replace("REGION", region))
            data["auth"]["keys"] += [
                {"name": "mr-busy", "key": SHARED_RPM_KEY, "rpm": 20},
                {"name": "mr-bound", "key": BOUND_RPM_KEY, "rpm": 10},
                {"name": "mr-quiet", "key": QUIET_KEY, "rpm": 1000},
            ]
            data["state"] = {
                "redis_url": store.url,
                "global_redis_url": shared.url,
                "global_features": [],
                "partitioned_features": ["rate_limit"],
                "regions": ["eu-west", "us-east"],
                "rebalance_interval_s": interval,
            }
            path = Path(folder / f"{region}.yaml")
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            url = stack.enter_context(run_server(create_app(load_config(path))))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
        yield Partitioned(clients[0], clients[1], shared.url, (regional[0], regional[1]))


@pytest.fixture(scope="module")
def partitioned(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Partitioned]:
    """Shares rebalanced every 0.2 s."""
    yield from _partitioned(request, tmp_path_factory.mktemp("partitioned"), 0.2)


@pytest.fixture(scope="module")
def partitioned_still(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Partitioned]:
    """Shares read once at start and not rebalanced for an hour: nothing in the background touches the
    global store while a test counts its commands."""
    yield from _partitioned(request, tmp_path_factory.mktemp("partitioned-still"), 3600)


def _limit_header(client: httpx.Client, key: str) -> tuple[int, int]:
    reply = client.post(URL, json=chat("mr-chat"), headers=auth(key))
    assert reply.status_code in (200, 429), reply.text
    return reply.status_code, int(reply.headers["x-ratelimit-limit-requests"])


@pytest.mark.feature("multi-region-deployment", step=4)
def test_partitioned_shares_move_toward_the_busy_region(partitioned: Partitioned) -> None:
    # rpm 20 over two regions: 10 each until demand says otherwise.
    first = [_limit_header(partitioned.eu, SHARED_RPM_KEY) for _ in range(15)]
    assert first[0] == (200, 10)
    # The share may already grow during these (a round every 0.2 s), never past the whole limit.
    assert [status for status, _ in first].count(200) <= max(limit for _, limit in first) < 20
    # Every round (0.2 s) splits the limit by the demand each region saw (smoothed over rounds): with four
    # requests in eu-west for each one in us-east, eu-west's share grows well past half, us-east's shrinks,
    # and the two replicas, once both have read the same round, enforce shares summing to the limit.
    deadline = time.monotonic() + 60
    eu = us = 10
    while not (eu >= 14 and us <= 6 and eu + us == 20) and time.monotonic() < deadline:
        for _ in range(4):
            _, eu = _limit_header(partitioned.eu, SHARED_RPM_KEY)
        _, us = _limit_header(partitioned.us, SHARED_RPM_KEY)
    assert eu >= 14 and us <= 6 and eu + us == 20, (eu, us)


@pytest.mark.feature("multi-region-deployment", step=4)
def test_partitioned_limit_admits_within_the_global_bound_across_regions(partitioned: Partitioned) -> None:
    started = time.monotonic()
    admitted = {"eu": 0, "us": 0}
    for _ in range(20):
        for name, client in (("eu", partitioned.eu), ("us", partitioned.us)):
            status, _ = _limit_header(client, BOUND_RPM_KEY)
            admitted[name] += status == 200
    elapsed = time.monotonic() - started
    # rpm 10: the regions' shares sum to 10, so together they admit 10 plus what refills meanwhile
    # (10 per minute), never the 20 two regions with the full limit each would.
    assert sum(admitted.values()) <= 10 + math.ceil(10 * elapsed / 60)
    assert admitted["eu"] >= 1 and admitted["us"] >= 1, admitted


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


@pytest.mark.feature("multi-region-deployment", step=4)
def test_partitioned_hot_path_sends_no_command_to_the_global_store(partitioned_still: Partitioned) -> None:
    replicas = partitioned_still
    assert _limit_header(replicas.eu, QUIET_KEY) == (200, 500)  # started, shares read: equal split
    with (
        redis.Redis.from_url(replicas.global_url) as shared,
        redis.Redis.from_url(replicas.regional_urls[0]) as regional,
    ):
        global_before, regional_before = _commands(shared), _commands(regional)
        for _ in range(20):
            assert _limit_header(replicas.eu, QUIET_KEY) == (200, 500)
        # The only command the global store processed meanwhile is the INFO that counted them.
        assert _commands(shared) - global_before == 1
        # The limits were checked all the same, in eu-west's own store.
        assert _commands(regional) - regional_before >= 20


ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "gateway" / "multi-region.md"


def published_trips() -> dict[str, float]:
    """The global round trips per request of each mode, as the docs page's 80 ms table publishes them."""
    section = PAGE.read_text(encoding="utf-8").split("## What each mode costs", 1)[1].split("\n## ", 1)[0]
    trips = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1].strip("*").isdigit():
            trips[cells[0].split(" (", 1)[0]] = float(cells[1].strip("*"))
    return trips


@pytest.mark.feature("multi-region-deployment", step=8)
def test_the_published_figures_say_how_many_cross_region_trips_each_mode_really_takes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The page's claim that matters most (partitioned limits add no cross-region trip to the hot path) is
    # checked against bench/multi_region.py on this checkout: trip counts are exact, unlike latencies.
    if request.config.getoption("gateway_url"):
        pytest.skip("runs the bench against gateways of its own")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    import json
    import subprocess
    import sys

    out = tmp_path / "multi-region.json"
    proc = subprocess.run(
        [sys.executable, "bench/multi_region.py", "--quick", "--delay-ms", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    measured = {name: row["global_trips"] for name, row in json.loads(out.read_text())["modes"].items()}
    published = published_trips()
    assert set(published) == set(measured), (published, measured)
    assert published == measured
    assert published["rate limits partitioned"] == 0 and published["all regional"] == 0
