"""The state stores: every operation with the same semantics in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import RedisServer

from gateway.stores import (
    MemoryStore,
    RedisStore,
    StateConfig,
    Store,
    StoreUnavailable,
    hashed_id,
    open_store,
    store_key,
)
from gateway.stores.ops import (
    ADD_WITHIN,
    GCRA,
    INCR_WINDOW,
    LEASE_ACQUIRE,
    LEASE_RELEASE,
    RL_ADMIT,
    RL_FINISH,
)

pytestmark = pytest.mark.anyio

MINUTE_US = 60_000_000


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        s: Store = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    await s.close()


def fresh(name: str) -> str:
    """A key no other test (or earlier run against the same server) uses."""
    return store_key("test", uuid.uuid4().hex, name)


async def test_values_round_trip(store: Store) -> None:
    key = fresh("v")
    assert await store.get(key) is None
    await store.set(key, b"hello", ttl=60)
    assert await store.get(key) == b"hello"
    await store.set(key, b"again")
    assert await store.get(key) == b"again"
    await store.delete(key)
    assert await store.get(key) is None


async def test_redis_sets_the_ttl_on_the_server(redis_url: str) -> None:
    import redis.asyncio as aioredis

    store = RedisStore(redis_url)
    key = fresh("ttl")
    await store.set(key, b"x", ttl=30)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        assert 0 < await raw.pttl(key) <= 30_000
    finally:
        await raw.aclose()
        await store.close()


async def test_memory_values_expire() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.set("k", b"v", ttl=10)
    clock.now += 9.9
    assert await store.get("k") == b"v"
    clock.now += 0.2
    assert await store.get("k") is None


async def test_memory_sweep_drops_expired_entries_nobody_reads_again() -> None:
    # The sweep looks at every entry at most once per as many calls as there are entries: expired entries
    # never read again still go, within that many calls (and at least every 1024).
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for i in range(3000):
        await store.set(f"k{i}", b"v", ttl=1)
    await store.set("kept", b"v")
    clock.now += 2
    assert len(store) == 3001  # nothing read them: still held
    for _ in range(3001 + 1024):
        await store.get("kept")
    assert len(store) == 1 and store.size_bytes == 1


async def test_memory_evicts_least_recently_used_and_skips_oversized_values() -> None:
    store = MemoryStore(max_bytes=10)
    await store.set("a", b"aaaa")
    await store.set("b", b"bbbb")
    assert await store.get("a") == b"aaaa"  # a is now more recent than b
    await store.set("c", b"cccc")  # 12 bytes > 10: evict the least recently used, b
    assert await store.get("b") is None
    assert await store.get("a") == b"aaaa"
    assert await store.get("c") == b"cccc"
    assert store.size_bytes == 8
    await store.set("big", b"x" * 11)
    assert await store.get("big") is None
    assert store.size_bytes == 8

    bounded = MemoryStore(max_entries=2)
    for k in ("x", "y", "z"):
        await bounded.set(k, b"1")
    assert len(bounded) == 2
    assert await bounded.get("x") is None


async def test_lru_eviction_never_drops_operation_state() -> None:
    store = MemoryStore(max_bytes=4, max_entries=1)
    key = fresh("rl")
    await store.run(GCRA, [key], [0, MINUTE_US, 2, 1])
    for i in range(10):
        await store.set(f"v{i}", b"xxxx")
    allowed, remaining, *_ = await store.run(GCRA, [key], [0, MINUTE_US, 2, 1])
    assert (allowed, remaining) == (1, 0)


async def test_gcra_admits_the_limit_then_refuses_with_retry_after(store: Store) -> None:
    key = fresh("rpm")
    results = [await store.run(GCRA, [key], [0, MINUTE_US, 3, 1]) for _ in range(4)]
    assert [r[0] for r in results] == [1, 1, 1, 0]
    assert [r[1] for r in results] == [2, 1, 0, 0]
    # Fully replenished one minute after the third request; the next unit frees up a third of a minute after
    # the first one.
    assert 59_000_000 < results[2][2] <= MINUTE_US
    assert 19_000_000 < results[3][3] <= 20_000_000
    assert results[0][3] == 0


@pytest.mark.parametrize("limit", [7, 9, 600_007])
async def test_gcra_admits_a_whole_burst_whatever_the_interval(store: Store, limit: int) -> None:
    # 60 s / 7 or / 9 is not a whole number of microseconds; rounding must not cost the burst's last unit.
    key = fresh("burst")
    cost = max(1, limit // 7)
    fits = limit // cost
    results = [(await store.run(GCRA, [key], [0, MINUTE_US, limit, cost]))[0] for _ in range(fits + 1)]
    assert results == [1] * fits + [0]


async def test_gcra_is_all_or_nothing_across_limits(store: Store) -> None:
    wide, narrow = fresh("wide"), fresh("narrow")
    first = await store.run(GCRA, [wide, narrow], [0, MINUTE_US, 5, 1, MINUTE_US, 1, 1])
    assert first[0] == 1
    second = await store.run(GCRA, [wide, narrow], [0, MINUTE_US, 5, 1, MINUTE_US, 1, 1])
    assert second[0] == 0
    assert second[1] == 4  # the wide limit was not charged for the refused request
    assert second[3] == 0 and second[6] > 0  # only the narrow limit asks the client to wait


async def test_gcra_cost_over_the_limit_can_never_pass(store: Store) -> None:
    key = fresh("tpm")
    allowed, remaining, _, retry = await store.run(GCRA, [key], [0, MINUTE_US, 100, 101])
    assert (allowed, remaining, retry) == (0, 100, -1)


async def test_gcra_force_charges_over_the_limit_and_refunds(store: Store) -> None:
    key = fresh("tpm")
    assert (await store.run(GCRA, [key], [0, MINUTE_US, 100, 60]))[:2] == [1, 40]
    # Reconciling real usage: 70 more tokens than estimated, charged even though it overdraws.
    forced = await store.run(GCRA, [key], [1, MINUTE_US, 100, 70])
    assert forced[:2] == [1, 0]
    assert (await store.run(GCRA, [key], [0, MINUTE_US, 100, 1]))[0] == 0
    # Refund 100 tokens (the estimate was above real usage): 130 charged - 100 = 30 in use, 70 available.
    refunded = await store.run(GCRA, [key], [1, MINUTE_US, 100, -100])
    assert 69 <= refunded[1] <= 70


async def test_gcra_refills_smoothly_without_a_burst_at_the_window_edge() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    key = fresh("rpm")
    for _ in range(6):
        assert (await store.run(GCRA, [key], [0, MINUTE_US, 6, 1]))[0] == 1
    assert (await store.run(GCRA, [key], [0, MINUTE_US, 6, 1]))[0] == 0
    # A fixed window would hand out 6 more at the next minute boundary right away; GCRA frees one unit every
    # 10 seconds instead.
    clock.now += 10
    assert (await store.run(GCRA, [key], [0, MINUTE_US, 6, 1]))[0] == 1
    assert (await store.run(GCRA, [key], [0, MINUTE_US, 6, 1]))[0] == 0
    clock.now += 60
    results = [(await store.run(GCRA, [key], [0, MINUTE_US, 6, 1]))[0] for _ in range(7)]
    assert results == [1] * 6 + [0]


async def test_gcra_concurrent_callers_on_two_redis_clients_admit_exactly_the_limit(redis_url: str) -> None:
    replicas = [RedisStore(redis_url), RedisStore(redis_url)]
    key = fresh("shared")
    try:
        calls = [replicas[i % 2].run(GCRA, [key], [0, MINUTE_US, 10, 1]) for i in range(40)]
        results = await asyncio.gather(*calls)
    finally:
        for r in replicas:
            await r.close()
    assert sum(r[0] for r in results) == 10


async def test_gcra_concurrent_callers_in_memory_admit_exactly_the_limit() -> None:
    store = MemoryStore()
    results = await asyncio.gather(*(store.run(GCRA, ["k"], [0, MINUTE_US, 10, 1]) for _ in range(40)))
    assert sum(r[0] for r in results) == 10


async def test_leases_bound_concurrency_and_release(store: Store) -> None:
    key = fresh("conc")
    assert await store.run(LEASE_ACQUIRE, [key], [2, MINUTE_US, 1]) == [1, 1]
    assert await store.run(LEASE_ACQUIRE, [key], [2, MINUTE_US, 2]) == [1, 2]
    assert await store.run(LEASE_ACQUIRE, [key], [2, MINUTE_US, 3]) == [0, 2]
    assert await store.run(LEASE_RELEASE, [key], [1]) == [1]
    assert await store.run(LEASE_ACQUIRE, [key], [2, MINUTE_US, 3]) == [1, 2]


async def test_leases_of_a_dead_replica_expire() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    assert (await store.run(LEASE_ACQUIRE, ["c"], [1, 5_000_000, 1]))[0] == 1
    assert (await store.run(LEASE_ACQUIRE, ["c"], [1, 5_000_000, 2]))[0] == 0
    clock.now += 6
    assert (await store.run(LEASE_ACQUIRE, ["c"], [1, 5_000_000, 2]))[0] == 1


def admit_args(rpm: int, tpm: int, tokens: int, conc: int, lease: int) -> list[int]:
    """RL_ADMIT's arguments for one rpm and one tpm limit and one concurrency limit."""
    return [2, 1, MINUTE_US, rpm, 1, MINUTE_US, tpm, tokens, MINUTE_US, lease, conc]


async def test_rate_limit_admit_is_all_or_nothing_across_limits_and_slots(store: Store) -> None:
    req, tok, conc = fresh("req"), fresh("tok"), fresh("conc")
    keys = [req, tok, conc]
    # Admitted: one request and 40 tokens charged, a slot taken; then GCRA's (remaining, reset, retry) each.
    admitted = await store.run(RL_ADMIT, keys, admit_args(5, 100, 40, 1, 1))
    assert admitted[:2] == [1, 0] and len(admitted) == 8
    assert [admitted[2], admitted[5]] == [4, 60]
    # The only slot is held: refused with the concurrency limit's index, and nothing charged.
    refused = await store.run(RL_ADMIT, keys, admit_args(5, 100, 40, 1, 2))
    assert refused[:2] == [1, 1]
    assert [refused[2], refused[5]] == [4, 60]  # remaining requests and tokens, as before the attempt
    peek = await store.run(GCRA, [req, tok], [2, MINUTE_US, 5, 1, MINUTE_US, 100, 40])
    assert [peek[1], peek[4]] == [4, 60]
    # Finishing the first request refunds 30 of its 40 tokens and frees the slot, in one operation.
    assert await store.run(RL_FINISH, [tok, conc], [1, 1, MINUTE_US, 100, -30, 1]) == []
    admitted = await store.run(RL_ADMIT, keys, admit_args(5, 100, 40, 1, 3))
    assert admitted[:2] == [1, 0]
    assert [admitted[2], admitted[5]] == [3, 50]  # 2 requests and 10 + 40 tokens charged
    # A token limit that refuses takes no slot: after releasing lease 3, a slot is free again.
    too_big = await store.run(RL_ADMIT, keys, admit_args(5, 100, 101, 2, 4))
    assert too_big[0] == 0 and too_big[7] == -1
    assert await store.run(RL_FINISH, [conc], [0, 1, 3]) == []
    assert (await store.run(RL_ADMIT, keys, admit_args(5, 100, 1, 1, 5)))[:2] == [1, 0]


async def test_rate_limit_admit_with_only_a_concurrency_limit(store: Store) -> None:
    conc = fresh("conc")
    assert await store.run(RL_ADMIT, [conc], [0, 1, MINUTE_US, 7, 1]) == [1, 0]
    assert await store.run(RL_ADMIT, [conc], [0, 1, MINUTE_US, 8, 1]) == [1, 1]
    assert await store.run(RL_FINISH, [conc], [0, 1, 7]) == []
    assert await store.run(RL_ADMIT, [conc], [0, 1, MINUTE_US, 8, 1]) == [1, 0]


async def test_add_within_reserves_only_what_fits(store: Store) -> None:
    key = fresh("budget")
    assert await store.run(ADD_WITHIN, [key], [60, 100, 0]) == [1, 60]
    assert await store.run(ADD_WITHIN, [key], [50, 100, 0]) == [0, 60]
    assert await store.run(ADD_WITHIN, [key], [40, 100, 0]) == [1, 100]
    assert await store.run(ADD_WITHIN, [key], [-55, 100, 0]) == [1, 45]
    assert await store.run(ADD_WITHIN, [key], [55, 100, 0]) == [1, 100]


async def test_add_within_keeps_the_first_expiry() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.run(ADD_WITHIN, ["b"], [10, 100, 10_000])
    clock.now += 6
    await store.run(ADD_WITHIN, ["b"], [10, 100, 10_000])
    clock.now += 5  # 11 s after creation: the period is over, whatever was added later
    assert await store.run(ADD_WITHIN, ["b"], [1, 100, 10_000]) == [1, 1]


async def test_incr_window_counts_within_the_window(store: Store) -> None:
    key = fresh("fails")
    assert [(await store.run(INCR_WINDOW, [key], [60_000]))[0] for _ in range(3)] == [1, 2, 3]


async def test_memory_window_restarts_after_it_ends() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.run(INCR_WINDOW, ["w"], [1_000])
    await store.run(INCR_WINDOW, ["w"], [1_000])
    clock.now += 1.5
    assert await store.run(INCR_WINDOW, ["w"], [1_000]) == [1]


async def test_redis_outage_fails_open_and_logs_transitions_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.stores")
    with RedisServer() as server:
        store = RedisStore(server.url, on_error="fail_open", timeout=0.5)
        key = fresh("outage")
        await store.set(key, b"v")
        server.stop()
        assert await store.get(key) is None
        assert await store.run(GCRA, [key], [0, MINUTE_US, 7, 1]) == [1, 7, 0, 0]
        await store.set(key, b"ignored")
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1
        assert "letting requests through" in down[0].getMessage()
        server.start()
        assert (await store.run(GCRA, [key], [0, MINUTE_US, 7, 1]))[:2] == [1, 6]
        assert await store.run(GCRA, [key], [0, MINUTE_US, 7, 1]) != [1, 7, 0, 0]
        back = [r for r in caplog.records if "reachable again" in r.getMessage()]
        assert len(back) == 1
        await store.close()


async def test_redis_outage_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.stores")
    with RedisServer() as server:
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
        store = RedisStore(url, on_error="fail_closed", timeout=0.5)
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        with pytest.raises(StoreUnavailable) as info:
            await store.run(LEASE_ACQUIRE, ["k"], [1, MINUTE_US, 1])
        assert "127.0.0.1" not in str(info.value)
        await store.close()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "refusing requests" in logged
    assert "s3cret-pw" not in logged


async def test_open_store_picks_the_backend(redis_url: str) -> None:
    assert isinstance(open_store(StateConfig()), MemoryStore)
    store = open_store(StateConfig(redis_url=redis_url, on_error="fail_closed"))
    assert isinstance(store, RedisStore) and store.on_error == "fail_closed"
    await store.close()


def test_hashed_id_hides_the_secret() -> None:
    secret = "sk-test-very-secret"
    ident = hashed_id(secret)
    assert secret not in ident and "very" not in ident
    assert ident == hashed_id(secret) != hashed_id(secret + "x")
    assert store_key("rl", ident, "rpm") == f"gw:rl:{ident}:rpm"


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=12),
    gaps=st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=60),
)
def test_gcra_never_admits_more_than_it_may_in_any_minute(limit: int, gaps: list[float]) -> None:
    """Any 60 s window admits at most 2L-1 (a full bucket, then steady refill); an idle key gets L at once."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)

    async def arrive() -> list[float]:
        admitted = []
        for gap in gaps:
            clock.now += gap
            if (await store.run(GCRA, ["k"], [0, MINUTE_US, limit, 1]))[0]:
                admitted.append(clock.now)
        return admitted

    admitted = asyncio.run(arrive())
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + 60) <= 2 * limit - 1
    burst = asyncio.run(_burst(limit))
    assert burst == [1] * limit + [0]


async def _burst(limit: int) -> list[int]:
    store = MemoryStore(clock=FakeClock())
    return [(await store.run(GCRA, ["k"], [0, MINUTE_US, limit, 1]))[0] for _ in range(limit + 1)]


def test_a_redis_url_without_a_scheme_is_a_config_error() -> None:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config("state:\n  redis_url: localhost:6379\n", "gw.yaml")
    assert "gw.yaml:2: state.redis_url: must start with redis://" in str(info.value)
    assert StateConfig(redis_url="").redis_url is None
