"""The cooldown state machine, with time injected (no sleeps)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.features.cooldown import (
    CooldownPolicy,
    CooldownTracker,
    RouteHealth,
    can_probe,
    record_failure,
    record_success,
    state_of,
)
from gateway.stores import MemoryStore

POLICY = CooldownPolicy(failures=3, window_s=10, cooldown_s=30, probe_timeout_s=5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_within_window_open_the_circuit() -> None:
    h = RouteHealth()
    h = record_failure(h, 0, POLICY)
    h = record_failure(h, 1, POLICY)
    assert state_of(h, 2) == "closed"
    h = record_failure(h, 2, POLICY)
    assert state_of(h, 2) == "open"
    assert h.open_until == 32


def test_failures_spread_beyond_the_window_do_not_open() -> None:
    h = RouteHealth()
    for t in (0, 6, 12, 18, 24):
        h = record_failure(h, t, POLICY)
        assert state_of(h, t) == "closed"
    assert h.failures == (18, 24)


def test_open_turns_half_open_after_cooldown_with_one_probe() -> None:
    h = RouteHealth(open_until=30)
    assert state_of(h, 29.9) == "open"
    assert state_of(h, 30) == "half_open"
    assert can_probe(h, 30)
    assert not can_probe(RouteHealth(open_until=30, probe_until=35), 31)
    assert can_probe(RouteHealth(open_until=30, probe_until=35), 35)


def test_probe_success_closes_and_failure_reopens() -> None:
    half_open = RouteHealth(open_until=30, probe_until=35)
    assert record_success(half_open, 31) == RouteHealth()
    reopened = record_failure(half_open, 31, POLICY)
    assert state_of(reopened, 31) == "open"
    # A failed probe doubles the period (30 s -> 60 s).
    assert reopened.open_until == 91


def test_failed_probes_double_the_cooldown_up_to_the_cap() -> None:
    policy = CooldownPolicy(failures=1, window_s=10, cooldown_s=30, max_cooldown_s=100)
    h = record_failure(RouteHealth(), 0, policy)
    periods = []
    for _ in range(4):
        assert h.open_until is not None
        now = h.open_until
        h = record_failure(h, now, policy)
        periods.append(h.period_s)
    assert periods == [60, 100, 100, 100]


def test_success_while_closed_keeps_failure_history() -> None:
    h = record_failure(RouteHealth(), 0, POLICY)
    assert record_success(h, 1) == h


def test_retry_after_hold_opens_at_once_for_that_long() -> None:
    h = record_failure(RouteHealth(), 0, POLICY, hold_s=4)
    assert state_of(h, 3.9) == "open"
    assert state_of(h, 4) == "half_open"


def test_health_json_round_trip_and_garbage_fails_open() -> None:
    h = RouteHealth(failures=(1.0, 2.0), open_until=5.0, probe_until=None, period_s=3.0)
    assert RouteHealth.from_json(h.to_json()) == h
    assert RouteHealth.from_json("not json") == RouteHealth()
    assert RouteHealth.from_json(None) == RouteHealth()


def run(coro):
    return asyncio.run(coro)


def test_tracker_full_cycle_through_the_store() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    tracker = CooldownTracker(store, POLICY, clock)

    async def scenario() -> None:
        assert (await tracker.admit("p/m")).allowed
        for _ in range(3):
            await tracker.failure("p/m")
        closed_again = await tracker.admit("p/m")
        assert not closed_again.allowed
        assert closed_again.retry_at == clock.now + 30

        clock.now += 30
        probe = await tracker.admit("p/m")
        assert probe.allowed and probe.probe
        # While the probe is out, everyone else still skips the route.
        other = await tracker.admit("p/m")
        assert not other.allowed

        await tracker.success("p/m")
        assert (await tracker.admit("p/m")).allowed
        assert await tracker.health("p/m") == RouteHealth()

    run(scenario())


def test_tracker_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    tracker = CooldownTracker(MemoryStore(clock=clock), POLICY, clock)

    async def scenario() -> None:
        await tracker.failure("r", hold_s=2)
        clock.now += 2
        assert (await tracker.admit("r")).probe
        await tracker.failure("r")
        admission = await tracker.admit("r")
        assert not admission.allowed and admission.retry_at == clock.now + 60

    run(scenario())


def test_lost_probe_expires_and_another_request_probes() -> None:
    clock = Clock()
    tracker = CooldownTracker(MemoryStore(clock=clock), POLICY, clock)

    async def scenario() -> None:
        await tracker.failure("r", hold_s=1)
        clock.now += 1
        assert (await tracker.admit("r")).probe
        clock.now += POLICY.probe_timeout_s
        assert (await tracker.admit("r")).probe

    run(scenario())


def test_two_trackers_on_one_store_share_cooldowns() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    replica_a = CooldownTracker(store, POLICY, clock)
    replica_b = CooldownTracker(store, POLICY, clock)

    async def scenario() -> None:
        await replica_a.failure("r")
        await replica_b.failure("r")
        await replica_a.failure("r")
        assert not (await replica_b.admit("r")).allowed
        clock.now += 30
        assert (await replica_b.admit("r")).probe
        assert not (await replica_a.admit("r")).allowed

    run(scenario())


@pytest.mark.parametrize("failures", [1, 2])
def test_below_threshold_stays_closed_in_tracker(failures: int) -> None:
    clock = Clock()
    tracker = CooldownTracker(MemoryStore(clock=clock), POLICY, clock)

    async def scenario() -> None:
        for _ in range(failures):
            await tracker.failure("r")
        assert (await tracker.admit("r")).allowed

    run(scenario())


def test_rate_limit_hold_is_reported_as_rate_limited() -> None:
    clock = Clock()
    tracker = CooldownTracker(MemoryStore(clock=clock), POLICY, clock)

    async def scenario() -> None:
        await tracker.failure("r", hold_s=3)
        admission = await tracker.admit("r")
        assert not admission.allowed and admission.rate_limited
        assert admission.retry_at == clock.now + 3
        for _ in range(3):
            await tracker.failure("s")
        assert not (await tracker.admit("s")).rate_limited

    run(scenario())


def test_cooldowns_are_shared_between_replicas_through_redis(redis_url: str) -> None:
    from gateway.stores import RedisStore

    clock = Clock()
    route = f"p/m-{id(clock)}"

    async def scenario() -> None:
        a, b = RedisStore(redis_url), RedisStore(redis_url)
        try:
            replica_a = CooldownTracker(a, POLICY, clock)
            replica_b = CooldownTracker(b, POLICY, clock)
            for _ in range(3):
                await replica_a.failure(route)
            assert not (await replica_b.admit(route)).allowed
            clock.now += 30
            assert (await replica_b.admit(route)).probe
            assert not (await replica_a.admit(route)).allowed
            await replica_b.success(route)
            assert (await replica_a.admit(route)).allowed
        finally:
            await a.close()
            await b.close()

    run(scenario())
