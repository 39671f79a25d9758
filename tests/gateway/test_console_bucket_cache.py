"""The console's bucket cache: the same figures as reading the ledger, with closed buckets read only once."""

from __future__ import annotations

import pytest
from budget_fakes import usage_record

from gateway.console.bucket_cache import SETTLE_S, BucketCache, add_buckets, add_by_model
from gateway.console.charts import WINDOWS
from gateway.ledger import Ledger

pytestmark = pytest.mark.anyio

# A Unix time on a UTC midnight plus 10 h 15 min 30 s: every tier's buckets are aligned on the epoch.
NOW = 1_780_000_000.0 - 1_780_000_000.0 % 86400 + 36930.0


def records(now: float) -> list:
    """Requests spread over the 30 days before ``now``: minutes, half-hours and days apart."""
    offsets = [5, 30, 59, 61, 65, 119, 600, 1799, 1801, 3599, 3700, 7200, 40_000, 86_000, 90_000, 5 * 86400]
    offsets += [29 * 86400, 40 * 86400]  # the last is outside every window
    return [
        usage_record(
            ts=now - offset,
            request_id=f"r{index}",
            model="gpt-4o" if index % 3 else "claude",
            latency_ms=float(index * 37 % 2000),
            status=500 if index % 5 == 0 else 200,
            cache_hit=index % 4 == 0,
            cost_nanos=1000 + index,
        )
        for index, offset in enumerate(offsets)
    ]


async def filled_ledger(now: float) -> Ledger:
    ledger = Ledger(":memory:", flush_interval=3600)
    await ledger.start()
    for record in records(now):
        ledger.record(record)
    await ledger.flush()
    return ledger


async def test_every_window_reads_what_the_ledger_holds_and_closed_buckets_only_once() -> None:
    ledger = await filled_ledger(NOW)
    clock = [0.0]
    cache = BucketCache(clock=lambda: clock[0])
    try:
        for window in WINDOWS.values():
            clock[0] += 10  # past FRESH_S: each window reads its own open buckets
            since, until = window.span(NOW)
            direct = await ledger.buckets(since=since, until=until, width=window.width)
            assert await cache.buckets(ledger, since, until, window.width, NOW) == direct, window.name
            assert add_buckets(direct)["requests"] > 0
            # Read again: the same figures, and only the open buckets are read (one query, the minutes').
            reads = cache.reads
            clock[0] += 10
            assert await cache.buckets(ledger, since, until, window.width, NOW) == direct, window.name
            assert cache.reads == reads + 1
            # Within FRESH_S of that read (another viewer, the live stream) nothing is read.
            assert await cache.buckets(ledger, since, until, window.width, NOW) == direct, window.name
            assert cache.reads == reads + 1
        # A page's windows, the longest first, share one read of the open minutes.
        clock[0] += 10
        reads = cache.reads
        for window in reversed(WINDOWS.values()):
            since, until = window.span(NOW)
            direct = await ledger.buckets(since=since, until=until, width=window.width)
            assert await cache.buckets(ledger, since, until, window.width, NOW) == direct, window.name
        assert cache.reads == reads + 1
        # The totals of the day's half-hours, by model, as the ledger's summary of the same span says.
        day = WINDOWS["day"]
        since, until = day.span(NOW)
        by_model = add_by_model(await cache.by_model(ledger, since, until, day.width, NOW))
        expected = {
            row["group"]["model"]: row for row in await ledger.summary(["model"], since=since, until=until)
        }
        assert by_model == expected and set(by_model) == {"gpt-4o", "claude"}
    finally:
        await ledger.close()


async def test_new_requests_show_in_the_open_buckets_and_a_replay_clears_the_closed_ones() -> None:
    ledger = await filled_ledger(NOW)
    cache = BucketCache(fresh_s=0.0)
    hour = WINDOWS["hour"]
    since, until = hour.span(NOW)
    try:
        before = add_buckets(await cache.buckets(ledger, since, until, hour.width, NOW))
        ledger.record(usage_record(ts=NOW - 1, request_id="new"))  # in the open minute
        ledger.record(usage_record(ts=NOW - 20 * 60, request_id="late"))  # into a minute closed and kept
        await ledger.flush()
        after = add_buckets(await cache.buckets(ledger, since, until, hour.width, NOW))
        assert after["requests"] == before["requests"] + 1  # the late one is not seen: its bucket is kept
        # A spill file replayed (records written late) makes the cache read every bucket again.
        ledger.health.replayed += 1
        replayed = add_buckets(await cache.buckets(ledger, since, until, hour.width, NOW))
        assert replayed["requests"] == before["requests"] + 2
        # As the clock moves on, a minute that was open is closed and kept, and old ones are forgotten.
        later = NOW + 30 * 86400
        await cache.buckets(ledger, *hour.span(later), hour.width, later)
        kept = cache._closed[("buckets", hour.width)]
        assert kept and min(kept) >= later - 64 * hour.width and max(kept) + hour.width <= later - SETTLE_S
    finally:
        await ledger.close()


async def test_a_window_off_the_tiers_is_read_from_the_ledger_each_time() -> None:
    ledger = await filled_ledger(NOW)
    cache = BucketCache()
    try:
        direct = await ledger.buckets(since=NOW - 700.0, until=NOW + 50.0, width=75.0)
        for _ in range(2):
            assert await cache.buckets(ledger, NOW - 700.0, NOW + 50.0, 75.0, NOW) == direct
        assert cache.reads == 2
    finally:
        await ledger.close()


async def test_a_bucket_that_closes_is_made_of_the_finer_buckets_kept_not_read_again() -> None:
    ledger = await filled_ledger(NOW)
    cache = BucketCache(fresh_s=0.0)
    widths: list[float] = []
    read = ledger.buckets

    async def spy(**query: float) -> list:
        widths.append(query["width"])
        return await read(**query)

    ledger.buckets = spy  # type: ignore[method-assign]
    day = WINDOWS["day"]
    try:
        now = NOW
        for _ in range(40):  # a page refreshed every minute for 40 minutes: a half-hour closes on the way
            now += 60.0
            since, until = day.span(now)
            assert await cache.buckets(ledger, since, until, day.width, now) == await read(
                since=since, until=until, width=day.width
            )
        # The first refresh read the closed half-hours; after it, only minutes are read.
        assert widths[0] == day.width and set(widths[1:]) == {60.0}
    finally:
        await ledger.close()


async def test_the_spend_pages_30_days_come_from_the_daily_rollup_not_the_raw_rows() -> None:
    from datetime import UTC, datetime

    from test_console import console_config

    from gateway.app import create_app
    from gateway.console import data

    app = create_app(console_config())
    gateway = app.state.gateway
    async with app.router.lifespan_context(app):
        ledger = data.usage_stage(gateway).ledger
        for index, days in enumerate((0, 10, 29, 30, 40)):  # 30 UTC days up to today: the first three
            ts = NOW - days * 86400
            day = datetime.fromtimestamp(ts, UTC).date().isoformat()
            ledger.record(
                usage_record(ts=ts, day=day, request_id=f"r{index}", key_name=f"k{days}", model="m")
            )
        await ledger.flush()

        async def no_scan(*args: object, **kwargs: object) -> None:
            raise AssertionError("the spend page scanned the raw rows")

        ledger.summary = no_scan  # type: ignore[method-assign]
        spend = await data.spend(gateway, now=NOW)
        assert [row["name"] for row in spend["by_key"]] == ["k0", "k10", "k29"]
        assert [(row["name"], row["requests"]) for row in spend["by_model"]] == [("m", 3)]
