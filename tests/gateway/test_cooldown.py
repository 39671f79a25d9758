"""The circuit breaker: its pure state machine, and the tracker on both store backends, time injected."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.features.cooldown import (
    BUCKETS,
    CooldownPolicy,
    CooldownTracker,
    RouteHealth,
    hold,
    probe_failed,
    state_of,
    trip,
    tripped,
)
from gateway.stores import MemoryStore, RedisStore, Store

pytestmark = pytest.mark.anyio

POLICY = CooldownPolicy(
    min_requests=20, failure_rate=0.5, window_s=10, cooldown_s=1, max_cooldown_s=30, probe_timeout_s=5
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each backend; the Lua and the Python implementation of the breaker's operations must agree."""
    if request.param == "memory":
        s: Store = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    await s.close()


def route() -> str:
    """A route name no other test (or earlier run against the same Redis) uses."""
    return f"p/{uuid.uuid4().hex}"


async def outcomes(tracker: CooldownTracker, key: str, successes: int, failures: int) -> None:
    for _ in range(successes):
        await tracker.success(key)
    for _ in range(failures):
        await tracker.failure(key)


# --- the pure state machine --------------------------------------------------------------------------------


def test_a_trip_opens_a_closed_circuit_for_the_first_cooldown() -> None:
    opened = trip(RouteHealth(), 100, POLICY)
    assert opened == RouteHealth(open_until=101, period_s=1)
    assert state_of(opened, 100.5) == "open"
    assert state_of(opened, 101) == "half_open"
    assert trip(opened, 100.5, POLICY) == opened  # open already: the probe decides, not more failures


def test_failed_probes_double_the_cooldown_up_to_the_cap() -> None:
    health = trip(RouteHealth(), 0, POLICY)
    periods = []
    for _ in range(7):
        assert health.open_until is not None
        health = probe_failed(health, health.open_until, POLICY)
        periods.append(health.period_s)
    assert periods == [2, 4, 8, 16, 30, 30, 30]


def test_a_retry_after_hold_opens_at_once_as_rate_limited() -> None:
    held = hold(RouteHealth(), 0, 4)
    assert held.rate_limited and state_of(held, 3.9) == "open" and state_of(held, 4) == "half_open"


@pytest.mark.parametrize(
    ("requests", "failures", "opens"),
    [(19, 19, False), (20, 9, False), (20, 10, True), (1000, 10, False), (40, 20, True)],
)
def test_the_rule_is_a_failure_rate_over_a_minimum_volume(requests: int, failures: int, opens: bool) -> None:
    assert tripped(requests, failures, POLICY) is opens


def test_health_json_round_trip_and_garbage_fails_open() -> None:
    health = RouteHealth(open_until=5.0, period_s=3.0, rate_limited=True)
    assert RouteHealth.from_json(health.to_json()) == health
    assert RouteHealth.from_json("not json") == RouteHealth()
    assert RouteHealth.from_json(None) == RouteHealth()
    # A record of the count-based breaker (a list of failure times) still reads.
    assert RouteHealth.from_json('{"failures": [1.0], "open_until": null}') == RouteHealth()


# --- the tracker, through each store -----------------------------------------------------------------------


async def test_below_the_minimum_volume_nothing_opens(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await outcomes(tracker, key, 0, POLICY.min_requests - 1)  # every request failed, but too few of them
    assert (await tracker.admit(key)).allowed
    assert await tracker.counts(key) == (19, 19)


async def test_a_policy_swapped_in_applies_to_the_next_outcome(store: Store) -> None:
    """The tracker keeps the count's arguments it derives from its policy; another policy is not served
    the old one's minimum volume."""
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await outcomes(tracker, key, 0, 5)
    assert (await tracker.admit(key)).allowed  # 5 failures: below POLICY's minimum of 20
    tracker.policy = CooldownPolicy(
        min_requests=5, failure_rate=0.5, window_s=10, cooldown_s=1, max_cooldown_s=30, probe_timeout_s=5
    )
    await outcomes(tracker, key, 0, 1)
    assert not (await tracker.admit(key)).allowed


async def test_a_low_failure_rate_never_opens(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    for i in range(500):  # 2 % failures, all within one window
        await (tracker.failure(key) if i % 50 == 0 else tracker.success(key))
    assert (await tracker.admit(key)).allowed
    assert await tracker.counts(key) == (500, 10)


async def test_half_the_requests_failing_opens_the_circuit(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await outcomes(tracker, key, 10, 9)
    assert (await tracker.admit(key)).allowed
    await tracker.failure(key)  # 10 of 20
    admission = await tracker.admit(key)
    assert not admission.allowed and not admission.rate_limited
    assert admission.retry_at == clock.now + POLICY.cooldown_s


async def test_old_outcomes_slide_out_of_the_window(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await outcomes(tracker, key, 0, 15)
    clock.now += POLICY.window_s / 2
    await outcomes(tracker, key, 0, 4)
    assert await tracker.counts(key) == (19, 19)
    clock.now += POLICY.window_s / 2 + POLICY.window_s / BUCKETS  # the first 15 are out of the window
    await tracker.failure(key)
    assert await tracker.counts(key) == (5, 5)
    assert (await tracker.admit(key)).allowed


async def test_half_open_lets_one_probe_through_and_its_answer_closes(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await outcomes(tracker, key, 0, 20)
    clock.now += POLICY.cooldown_s
    probe = await tracker.admit(key)
    assert probe.allowed and probe.probe
    assert not (await tracker.admit(key)).allowed  # while the probe is out, everyone else skips the route
    await tracker.success(key, probe=True)
    assert (await tracker.admit(key)).allowed
    assert await tracker.health(key) == RouteHealth()
    assert await tracker.counts(key) == (0, 0)  # a fresh window: the outage's failures are forgotten


async def test_a_failed_probe_doubles_the_cooldown(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await outcomes(tracker, key, 0, 20)
    clock.now += POLICY.cooldown_s
    assert (await tracker.admit(key)).probe
    await tracker.failure(key, probe=True)
    admission = await tracker.admit(key)
    assert not admission.allowed and admission.retry_at == clock.now + 2 * POLICY.cooldown_s
    clock.now += 2 * POLICY.cooldown_s
    assert (await tracker.admit(key)).probe


async def test_the_last_option_is_probed_before_its_cooldown_ends_one_at_a_time(store: Store) -> None:
    clock, key = Clock(), route()
    policy = CooldownPolicy(min_requests=2, cooldown_s=10, max_cooldown_s=60)
    tracker = CooldownTracker(store, policy, clock)
    await outcomes(tracker, key, 0, 2)
    assert not (await tracker.admit(key)).allowed  # other routes may serve: the open circuit is a wall
    probe = await tracker.admit(key, last_option=True)
    assert probe.allowed and probe.probe
    waiting = await tracker.admit(key, last_option=True)  # one probe at a time
    assert not waiting.allowed and waiting.retry_at == clock.now + 10
    await tracker.failure(key, probe=True)
    # After a failed probe the next one waits one first cooldown (10 s), not the grown period (20 s).
    clock.now += 9.9
    assert not (await tracker.admit(key, last_option=True)).allowed
    clock.now += 0.1
    assert (await tracker.admit(key, last_option=True)).probe
    await tracker.success(key, probe=True)
    assert (await tracker.admit(key)).allowed


async def test_a_rate_limited_route_is_never_probed_early(store: Store) -> None:
    clock, key = Clock(), route()
    tracker = CooldownTracker(store, POLICY, clock)
    await tracker.failure(key, hold_s=3)
    admission = await tracker.admit(key, last_option=True)
    assert not admission.allowed and admission.rate_limited and admission.retry_at == clock.now + 3
    clock.now += 3
    assert (await tracker.admit(key)).probe


async def test_a_lost_probe_frees_the_slot_after_the_probe_timeout(store: Store) -> None:
    key = route()
    policy = CooldownPolicy(min_requests=1, probe_timeout_s=0.05)
    tracker = CooldownTracker(store, policy, Clock())
    await tracker.failure(key)
    assert (await tracker.admit(key, last_option=True)).probe
    assert not (await tracker.admit(key, last_option=True)).allowed
    # The slot's lease is the store's own TTL (real time); wait for it on the store, not on a sleep count.
    for _ in range(1000):
        admission = await tracker.admit(key, last_option=True)
        if admission.allowed:
            break
        await _tick()
    assert admission.probe


async def _tick() -> None:
    import anyio

    await anyio.sleep(0.01)


async def test_two_trackers_on_one_store_share_the_breaker(store: Store) -> None:
    clock, key = Clock(), route()
    replica_a, replica_b = CooldownTracker(store, POLICY, clock), CooldownTracker(store, POLICY, clock)
    await outcomes(replica_a, key, 5, 5)
    await outcomes(replica_b, key, 5, 5)  # together: 20 requests, 10 failed
    assert not (await replica_a.admit(key)).allowed
    clock.now += POLICY.cooldown_s
    assert (await replica_b.admit(key)).probe
    assert not (await replica_a.admit(key)).allowed  # one probe for the whole fleet
    await replica_b.success(key, probe=True)
    assert (await replica_a.admit(key)).allowed


async def test_outcomes_never_fail_a_request_when_the_store_is_down_and_fail_closed() -> None:
    down = RedisStore("redis://127.0.0.1:1/0", on_error="fail_closed", timeout=0.5)
    try:
        tracker = CooldownTracker(down, POLICY, Clock())
        await tracker.success("p/m")  # the upstream answered: that answer must reach the client
        await tracker.success("p/m", probe=True)
        await tracker.failure("p/m")
        await tracker.failure("p/m", probe=True)
        await tracker.failure("p/m", hold_s=2)
    finally:
        await down.close()


async def test_with_the_store_down_routes_count_as_healthy() -> None:
    down = RedisStore("redis://127.0.0.1:1/0")  # nothing listens there; the store fails open by default
    try:
        tracker = CooldownTracker(down, POLICY, Clock())
        await outcomes(tracker, "p/m", 0, 40)
        assert (await tracker.admit("p/m")).allowed
    finally:
        await down.close()


async def test_the_lua_and_the_python_counts_agree_step_by_step(redis_url: str) -> None:
    import random

    from gateway.features.cooldown import COUNT_OUTCOME

    rng = random.Random(7)
    memory, redis = MemoryStore(), RedisStore(redis_url)
    key = f"gw:cd:{route()}:n"
    bucket = 170_000_000
    try:
        for _ in range(400):
            bucket += rng.choice([0, 0, 0, 1, 1, 3, 12])  # same bucket, next ones, a gap past the window
            outcome = rng.choice([0, 0, 1, 2, 3])  # success, failure, late failure, read
            args = [bucket, outcome, BUCKETS, 5, 500_000, 60_000]
            assert await memory.run(COUNT_OUTCOME, [key], args) == await redis.run(COUNT_OUTCOME, [key], args)
    finally:
        await memory.close()
        await redis.close()
