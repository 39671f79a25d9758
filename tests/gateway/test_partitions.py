"""Partitioned rate limits: apportionment, demand to shares, the config rules and the rebalancer on a real
Redis (tests/redis_server.py) standing in for the global store."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis_server import RedisServer

from gateway.config import ConfigError, parse_config
from gateway.features.partitions import RegionShares, apportion, floor_units, partition_regions
from gateway.features.ratelimit import Bucket, RateLimitConfig, RateLimitStage
from gateway.features.rebalance import DEMAND, IDLE_ROUNDS, SHARES, Entry, Rebalancer, next_entries
from gateway.stores import MemoryStore

pytestmark = pytest.mark.anyio
REGIONS = ("eu-west", "us-east")
region_names = st.lists(st.from_regex(r"[a-z]{1,6}-[a-z]{1,6}", fullmatch=True), min_size=1, max_size=6)


@given(
    limit=st.integers(min_value=0, max_value=100_000),
    regions=region_names,
    weights=st.lists(st.integers(min_value=0, max_value=10**9), min_size=6, max_size=6),
    min_share=st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0]),
)
def test_shares_always_sum_to_the_limit_and_follow_demand(
    limit: int, regions: list[str], weights: list[int], min_share: float
) -> None:
    names = sorted(set(regions))
    demand = dict(zip(names, weights, strict=False))
    shares = apportion(limit, names, demand, min_share)
    assert set(shares) == set(names)
    assert sum(shares.values()) == limit
    floor = floor_units(limit, len(names), min_share)
    assert all(share >= floor for share in shares.values())
    # Largest remainder: each share is within one unit of its exact quota above the floor.
    total = sum(demand.get(n, 0) for n in names)
    rest = limit - floor * len(names)
    for name in names:
        exact = floor + (Fraction(rest * demand.get(name, 0), total) if total else Fraction(rest, len(names)))
        assert abs(shares[name] - exact) < 1
    # More demand never means a smaller share.
    for a in names:
        for b in names:
            if demand.get(a, 0) > demand.get(b, 0):
                assert shares[a] >= shares[b]


def test_equal_seed_split_gives_the_odd_unit_to_the_first_region() -> None:
    assert apportion(5, ["us-east", "eu-west"], {}) == {"eu-west": 3, "us-east": 2}
    assert apportion(1, REGIONS, {}) == {"eu-west": 1, "us-east": 0}


def test_the_floor_keeps_an_idle_region_able_to_admit() -> None:
    # 100 over two regions, all demand in eu-west: us-east keeps 10 % of its equal 50.
    assert apportion(100, REGIONS, {"eu-west": 500}, 0.1) == {"eu-west": 95, "us-east": 5}
    assert apportion(100, REGIONS, {"eu-west": 500}, 0.0) == {"eu-west": 100, "us-east": 0}
    # Small limits: at least one unit each while the limit has one per region.
    assert floor_units(4, 2, 0.1) == 1 and floor_units(1, 2, 0.1) == 0


def test_region_shares_count_demand_and_fall_back_to_the_seed_split() -> None:
    shares = RegionShares("us-east", REGIONS, 0.1)
    assert shares.limit("k", 10, 1) == 5  # nothing known: the equal split
    shares.table["k"] = (10, {"eu-west": 8, "us-east": 2})
    assert shares.limit("k", 10, 1) == 2
    # The limit changed since the shares were computed (a reload): split equally again.
    assert shares.limit("k", 20, 3) == 10
    assert shares.take_demand() == {"k": (20, 5)}
    assert shares.take_demand() == {}


def test_one_rounds_demand_smoothed_with_the_last() -> None:
    fields = {
        "eu-west 100 gw:{rl}:a:*:req": 90,
        "us-east 100 gw:{rl}:a:*:req": 10,
        "ap-south 100 gw:{rl}:a:*:req": 1000,  # a region this config does not know: ignored
        "us-east 60 gw:{rl}:b:m 1:tok": 7,  # a model alias with a space
        "garbage": 3,
    }
    first = next_entries(fields, {}, REGIONS, 0.0)
    assert {k: (e.limit, e.shares) for k, e in first.items()} == {
        "gw:{rl}:a:*:req": (100, {"eu-west": 90, "us-east": 10}),
        "gw:{rl}:b:m 1:tok": (60, {"eu-west": 0, "us-east": 60}),
    }
    # A round in which us-east alone asked: the average (eu 45 + 0, us 5 + 90, halved) moves, not jumps.
    second = next_entries({"us-east 100 gw:{rl}:a:*:req": 90}, first, REGIONS, 0.0)
    assert second["gw:{rl}:a:*:req"].shares == {"eu-west": 32, "us-east": 68}
    # A limit nobody asks for keeps its shares for a while, then drops out (equal split again).
    entries = second
    for _ in range(IDLE_ROUNDS - 1):
        entries = next_entries({}, entries, REGIONS, 0.0)
        assert entries["gw:{rl}:a:*:req"].shares == {"eu-west": 32, "us-east": 68}
    assert next_entries({}, entries, REGIONS, 0.0) == {}
    assert Entry.from_json(first["gw:{rl}:a:*:req"].to_json()) == first["gw:{rl}:a:*:req"]
    assert Entry.from_json("not json") is None


PARTITIONED = """
server: {region: eu-west}
providers: [{name: mock, type: mock}]
models: [{name: m, routes: [{provider: mock, region: eu-west}]}]
state:
  redis_url: redis://127.0.0.1:1/0
  global_redis_url: redis://127.0.0.1:2/0
  partitioned_features: [rate_limit]
  regions: [eu-west, us-east]
"""


def test_a_partitioned_config_loads() -> None:
    config = parse_config(PARTITIONED)
    assert config.state.partitioned_features == ["rate_limit"]
    assert config.state.rebalance_interval_s == 5.0
    assert partition_regions(config) == ("eu-west", "us-east")
    # Without state.regions: the regions of the routes, the same on every replica of the file.
    routes = "routes: [{provider: mock, region: eu-west}, {provider: mock, model: x, region: us-east}]"
    config = parse_config(
        PARTITIONED.replace("  regions: [eu-west, us-east]\n", "").replace(
            "routes: [{provider: mock, region: eu-west}]", routes
        )
    )
    assert partition_regions(config) == ("eu-west", "us-east")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("global_redis_url: redis://127.0.0.1:2/0", ""), "state.global_redis_url: required with"),
        (
            ("partitioned_features: [rate_limit]", "partitioned_features: [rate_limit]\n  global_features: "
             "[budgets, rate_limit]"),
            "state.partitioned_features[0]: 'rate_limit' is also in state.global_features",
        ),
        (("regions: [eu-west, us-east]", "regions: [us-east]"), "state.regions: does not list this replica"),
        (("server: {region: eu-west}", ""), "server.region: required with state.partitioned_features"),
        (("[rate_limit]", "[budgets]"), "state.partitioned_features[0]: Input should be 'rate_limit'"),
        (("regions: [eu-west, us-east]", "regions: [eu west]"), "state.regions: 'eu west' is not a region"),
    ],
)  # fmt: skip
def test_partitioned_config_errors_name_the_key(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(PARTITIONED.replace(*change), "gw.yaml")
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_without_state_regions_the_replicas_region_needs_a_route() -> None:
    text = PARTITIONED.replace("  regions: [eu-west, us-east]\n", "")
    text = text.replace("server: {region: eu-west}", "server: {region: ap-1}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.yaml")
    assert any(
        "state.regions: is unset and no route is in this replica's region 'ap-1'" in problem
        for problem in info.value.problems
    ), info.value.problems


class FixedShares:
    """A stand-in for the rebalancer: fixed shares, demand recorded."""

    def __init__(self, share: int) -> None:
        self.share = share
        self.asked: list[tuple[str, int, int]] = []

    def limit(self, key: str, limit: int, cost: int) -> int:
        self.asked.append((key, limit, cost))
        return self.share

    def empty(self, scope: str) -> Exception:
        from gateway.features.partitions import empty_share

        return empty_share(scope, "us-east", 5)

    async def start(self) -> None:
        return None


def test_the_limiter_enforces_the_regions_share() -> None:
    shares = FixedShares(3)
    stage = RateLimitStage(RateLimitConfig(), {}, MemoryStore(), shares)  # type: ignore[arg-type]
    buckets = [Bucket("r", "requests", 10, "this key"), Bucket("t", "tokens", 1000, "this key")]
    shared = stage._shared(buckets, 40)
    assert [b.limit for b in shared] == [3, 3]
    assert shares.asked == [("r", 10, 1), ("t", 1000, 40)]
    shares.share = 0
    with pytest.raises(Exception) as info:
        stage._shared(buckets, 40)
    assert getattr(info.value, "status", None) == 429
    assert "region 'us-east' has no share" in str(info.value)


@pytest.fixture
async def global_store() -> object:
    with RedisServer() as server:
        yield server


async def test_rebalancing_moves_shares_to_the_busy_region_once_per_interval(
    global_store: RedisServer,
) -> None:
    eu = Rebalancer(RegionShares("eu-west", REGIONS, 0.1), global_store.url, interval=30)
    us = Rebalancer(RegionShares("us-east", REGIONS, 0.1), global_store.url, interval=30)
    try:
        for _ in range(90):
            eu.limit("gw:{rl}:k:*:req", 100, 1)
        for _ in range(10):
            us.limit("gw:{rl}:k:*:req", 100, 1)
        await us.publish()
        await eu.round()
        await us.round()
        # One lock per interval: exactly one of the two computed the shares, and both read them.
        assert eu.rounds + us.rounds == 1
        expected = (100, {"eu-west": 86, "us-east": 14})  # floor 5 each, 90 split 81/9
        assert eu.shares.table == us.shares.table == {"gw:{rl}:k:*:req": expected}
        assert eu.limit("gw:{rl}:k:*:req", 100, 1) == 86 and us.limit("gw:{rl}:k:*:req", 100, 1) == 14
        client = eu._redis()
        assert await client.exists(DEMAND) == 0  # the round's demand was taken
        assert await client.hlen(SHARES) == 1
    finally:
        await eu.close()
        await us.close()


async def test_a_limit_nobody_asked_for_goes_back_to_the_equal_split(global_store: RedisServer) -> None:
    eu = Rebalancer(RegionShares("eu-west", REGIONS, 0.0), global_store.url, interval=30)
    try:
        eu.limit("a", 10, 1)
        await eu.round()
        assert eu.shares.table == {"a": (10, {"eu-west": 10, "us-east": 0})}
        for _ in range(IDLE_ROUNDS):
            await eu._redis().delete("gw:{rlp}:lock")  # the next interval
            await eu.round()
        assert eu.shares.table == {}
        assert eu.limit("a", 10, 1) == 5
    finally:
        await eu.close()


async def test_with_the_global_store_down_a_region_keeps_its_last_shares(global_store: RedisServer) -> None:
    eu = Rebalancer(RegionShares("eu-west", REGIONS, 0.0), global_store.url, interval=30, timeout=0.5)
    try:
        eu.limit("a", 10, 1)
        await eu.start()
        await eu.round()
        assert eu.limit("a", 10, 1) == 10
        global_store.stop()
        await eu._guarded(eu.round)
        assert not eu.healthy
        assert eu.limit("a", 10, 1) == 10
        global_store.start()
        await eu._redis().delete("gw:{rlp}:lock")
        await eu._guarded(eu.round)
        assert eu.healthy
    finally:
        await eu.close()


async def test_an_unexpected_error_in_a_round_does_not_end_rebalancing(
    global_store: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    eu = Rebalancer(RegionShares("eu-west", REGIONS, 0.0), global_store.url, interval=0.01)
    calls = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a malformed entry")

    eu.round = flaky  # type: ignore[method-assign]
    try:
        await eu.start()
        for _ in range(500):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        assert len(calls) >= 3
        assert "a rebalance round failed: ValueError" in caplog.text
    finally:
        await eu.close()
