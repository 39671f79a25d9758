"""Budget counters in the store: reserve-if-fits across key and team, settle, restore; memory and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from gateway.budget_book import BudgetBook, BudgetSlot
from gateway.periods import Period, window_for
from gateway.stores import MemoryStore, RedisStore, Store

NOW = datetime(2026, 3, 8, 12, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    redis_store = RedisStore(redis_url, on_error="fail_closed")
    yield redis_store
    await redis_store.close()


def slot(limit: int, scope: str = "key", period: Period = Period.DAILY, now: datetime = NOW) -> BudgetSlot:
    # A unique name per test, because the Redis server is shared by the session.
    return BudgetSlot(scope, f"t-{uuid.uuid4().hex[:8]}", limit, window_for(period, now, UTC_ZONE))


async def test_reserve_until_full_then_refuse(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(100)
    for expected_reserved in (30, 60, 90):
        reservation = await book.reserve([budget], 30, NOW)
        assert reservation.ok
        assert reservation.usage == ((0, expected_reserved),)
    refused = await book.reserve([budget], 30, NOW)
    assert not refused.ok
    assert refused.refused == budget
    assert refused.usage == ((0, 90),)
    # Exactly filling the limit is allowed.
    assert (await book.reserve([budget], 10, NOW)).ok


async def test_settle_charges_real_cost_and_releases_the_rest(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(100)
    reservation = await book.reserve([budget], 60, NOW)
    assert await book.settle(reservation, 25, NOW) == [(25, 0)]
    assert await book.read([budget]) == [(25, 0)]
    # 75 left: a 75 reservation fits, 76 does not.
    assert not (await book.reserve([budget], 76, NOW)).ok
    assert (await book.reserve([budget], 75, NOW)).ok


async def test_key_and_team_are_reserved_together_or_not_at_all(store: Store) -> None:
    book = BudgetBook(store)
    key_budget, team_budget = slot(1000), slot(50, scope="team")
    assert (await book.reserve([key_budget, team_budget], 40, NOW)).ok
    refused = await book.reserve([key_budget, team_budget], 20, NOW)
    assert not refused.ok
    assert refused.refused == team_budget
    # The key budget was not touched by the refused reservation.
    assert await book.read([key_budget, team_budget]) == [(0, 40), (0, 40)]


async def test_restore_sets_spend_only_once(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(100)
    assert await book.restore(budget, 70, NOW)
    assert not await book.restore(budget, 5, NOW)
    assert await book.read([budget]) == [(70, 0)]
    assert not (await book.reserve([budget], 31, NOW)).ok


async def test_settling_more_than_reserved_never_goes_negative(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(100)
    reservation = await book.reserve([budget], 10, NOW)
    await book.settle(reservation, 15, NOW)
    await book.settle(reservation, 0, NOW)  # a double settle must not create negative reservations
    assert await book.read([budget]) == [(15, 0)]


async def test_a_new_window_starts_empty(store: Store) -> None:
    book = BudgetBook(store)
    name = f"t-{uuid.uuid4().hex[:8]}"
    today = BudgetSlot("key", name, 100, window_for(Period.DAILY, NOW, UTC_ZONE))
    tomorrow_now = NOW + timedelta(days=1)
    tomorrow = BudgetSlot("key", name, 100, window_for(Period.DAILY, tomorrow_now, UTC_ZONE))
    await book.settle(await book.reserve([today], 100, NOW), 100, NOW)
    assert not (await book.reserve([today], 1, NOW)).ok
    assert (await book.reserve([tomorrow], 100, tomorrow_now)).ok


async def test_concurrent_reservations_never_exceed_the_limit(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(1000)
    results = await asyncio.gather(*(book.reserve([budget], 100, NOW) for _ in range(100)))
    assert sum(r.ok for r in results) == 10
    assert await book.read([budget]) == [(0, 1000)]


async def test_total_windows_do_not_expire(store: Store) -> None:
    budget = slot(100, period=Period.TOTAL)
    assert budget.ttl_ms(NOW) == 0
    assert budget.store_key.endswith(":total")
    daily = slot(100)
    assert daily.ttl_ms(NOW) == (12 * 3600 + 3600) * 1000


async def test_a_reservation_never_settled_expires_and_is_given_back(
    store: Store, request: pytest.FixtureRequest
) -> None:
    # A replica that died mid-request never settles; its lease runs out and the budget comes back. Time
    # passes when the test says so (no sleeping): the memory store runs on a clock the test moves, and in
    # Redis, whose own clock times leases, the test moves the lease's expiry into the past instead.
    now = [1_700_000_000.0]
    if isinstance(store, MemoryStore):
        store = MemoryStore(clock=lambda: now[0])
    book = BudgetBook(store, lease_seconds=60.0)
    budget = slot(100)
    crashed = await book.reserve([budget], 80, NOW)
    assert crashed.ok
    assert not (await book.reserve([budget], 80, NOW)).ok
    if isinstance(store, MemoryStore):
        now[0] += 59.9
        assert await book.read([budget]) == [(0, 80)]  # still held just before the lease ends
        now[0] += 0.2
    else:
        await expire_redis_lease(request.getfixturevalue("redis_url"), budget, crashed.lease, 60.0)
    assert await book.read([budget]) == [(0, 0)]
    assert (await book.reserve([budget], 80, NOW)).ok
    # A late settle of the expired reservation still charges its cost, and gives back nothing twice.
    assert await book.settle(crashed, 10, NOW) == [(10, 80)]


async def test_in_memory_leases_expire_one_by_one_whatever_was_settled_before() -> None:
    # The memory backend only looks through a budget's leases once the earliest may have expired; a lease
    # settled early must neither hide a later one's expiry nor make a live one look expired.
    now = [1_700_000_000.0]
    book = BudgetBook(MemoryStore(clock=lambda: now[0]), lease_seconds=60.0)
    budget = slot(100)
    first = await book.reserve([budget], 30, NOW)
    now[0] += 20
    second = await book.reserve([budget], 20, NOW)  # expires 20 s after the first
    now[0] += 10
    third = await book.reserve([budget], 10, NOW)  # expires 30 s after the first
    await book.settle(first, 5, NOW)  # the earliest lease is gone: the others still hold theirs
    now[0] += 35  # past the first lease's end, before the second's
    assert await book.read([budget]) == [(5, 30)]
    now[0] += 20  # past the second's, before the third's
    assert await book.read([budget]) == [(5, 10)]
    assert (await book.reserve([budget], 85, NOW)).ok  # 5 spent + 10 held + 85 = the limit
    now[0] += 20  # past the third's; the new one holds
    assert await book.read([budget]) == [(5, 85)]
    assert await book.settle(second, 7, NOW) == [(12, 85)]  # expired already: gives nothing back twice
    assert await book.settle(third, 1, NOW) == [(13, 85)]


async def expire_redis_lease(redis_url: str, budget: BudgetSlot, lease: int, seconds: float) -> None:
    """Check that `lease` expires `seconds` after it was taken (Redis's clock), then make that time now."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        leases = budget.store_keys[1]
        expires = await client.zscore(leases, str(lease))
        server_s, server_us = await client.time()
        now_us = server_s * 1_000_000 + server_us
        assert expires is not None and now_us < expires <= now_us + seconds * 1_000_000
        await client.zadd(leases, {str(lease): now_us - 1}, xx=True)
    finally:
        await client.aclose()


async def test_settle_only_gives_back_its_own_reservation(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(100)
    first = await book.reserve([budget], 30, NOW)
    second = await book.reserve([budget], 50, NOW)
    assert await book.settle(first, 5, NOW) == [(5, 50)]
    assert await book.settle(first, 0, NOW) == [(5, 50)]  # nothing left to give back for `first`
    assert await book.settle(second, 20, NOW) == [(25, 0)]


async def test_reset_zeroes_spend_but_keeps_reservations_in_flight(store: Store) -> None:
    book = BudgetBook(store)
    budget = slot(100)
    done = await book.reserve([budget], 40, NOW)
    await book.settle(done, 40, NOW)
    in_flight = await book.reserve([budget], 50, NOW)
    assert await book.reset(budget, NOW) == 50
    assert await book.read([budget]) == [(0, 50)]
    # The reservation settles as usual after the reset, and a restore cannot bring the old spend back.
    assert await book.settle(in_flight, 10, NOW) == [(10, 0)]
    assert not await book.restore(budget, 40, NOW)
    fresh = slot(100)
    assert await book.reset(fresh, NOW) == 0
    assert not await book.restore(fresh, 70, NOW)
    assert await book.read([fresh]) == [(0, 0)]
