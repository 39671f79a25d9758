"""The console's usage reads, bounded: closed time buckets are read from the ledger once and kept.

The overview charts and totals the last hour (60-second buckets), day (30-minute buckets) and 30 days
(1-day buckets). Re-reading those windows at every page load and live refresh costs CPU that grows with the
traffic in them (the 30-day total scanned every row of the month). A bucket whose end is more than
:data:`SETTLE_S` seconds past is *closed*: its figures no longer change, so it is read once and kept here.
Only the open buckets are read again, and an open bucket of a coarse tier is the sum of the finer tier's
buckets inside it (:data:`TIERS`: each width a multiple of the one before, all aligned on the Unix epoch),
so a refresh reads about a minute of rows whatever the window, and the per-model breakdown of the day the
same way.

Records that reach the ledger more than :data:`SETTLE_S` seconds after their timestamp are missed by buckets
already closed here: the spill file replayed after a ledger outage (this replica's replay clears the cache),
or another replica's late batch to a shared PostgreSQL ledger; they show after a restart of this process.

One instance per console (the router owns it, not the module); a lock makes concurrent viewers and the live
streams share a fill instead of each reading the same rows, and a read of the open minutes serves every
caller for :data:`FRESH_S` (the page's three windows, the other viewers), so viewers do not multiply reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.ledger import Ledger
from gateway.usage_sql import BUCKET_FIELDS

TIERS = (60.0, 1800.0, 86400.0)
SETTLE_S = 60.0
# The open buckets read by one viewer serve every other (and the next window of the same page) this long.
FRESH_S = 1.0
# Closed buckets kept per width: the widest window charts 60 buckets; a few more cover the clock moving on.
KEEP_BUCKETS = 64

Value = Any
Reader = Callable[[Ledger, float, float, float, float], Awaitable[list[Value]]]
Adder = Callable[[list[Value]], Value]


async def read_buckets(
    ledger: Ledger, since: float, until: float, width: float, now: float
) -> list[dict[str, Any]]:
    """The ledger's time buckets of ``[since, until)`` in one query (:meth:`Ledger.buckets`)."""
    return await ledger.buckets(since=since, until=until, width=width)


def add_buckets(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One bucket holding every one of ``parts`` (its ``start`` is the first's; histograms add)."""
    total: dict[str, Any] = {"start": parts[0]["start"]}
    for name in BUCKET_FIELDS:
        total[name] = sum(part[name] for part in parts)
    total["latency_le"] = [sum(counts) for counts in zip(*(p["latency_le"] for p in parts), strict=True)]
    return total


async def read_by_model(
    ledger: Ledger, since: float, until: float, width: float, now: float
) -> list[dict[str, Any]]:
    """Per bucket of ``[since, until)``: the ledger's summary by model, as model -> summary row (one query
    per bucket; none for a bucket starting after ``now``, which holds no request yet)."""
    out: list[dict[str, Any]] = []
    start = since
    while start < until:
        rows = await ledger.summary(["model"], since=start, until=start + width) if start <= now else []
        out.append({row["group"]["model"]: row for row in rows})
        start += width
    return out


def add_by_model(parts: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The per-model summaries of ``parts`` added up, model by model."""
    total: dict[str, dict[str, Any]] = {}
    for part in parts:
        for model, row in part.items():
            into = total.get(model)
            if into is None:
                total[model] = dict(row)
                continue
            for name, value in row.items():
                if name != "group":
                    into[name] += value
    return total


class BucketCache:
    """Closed buckets of the ledger's reads, per measure and width; see the module's docstring."""

    def __init__(self, fresh_s: float = FRESH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger: Ledger | None = None
        self._replayed = 0
        self._closed: dict[tuple[str, float], dict[float, Value]] = {}
        self._lock = asyncio.Lock()
        self.reads = 0  # ledger reads made, for tests and the benchmark
        self._fresh_s = fresh_s
        self._clock = clock
        # The latest read of the open buckets per measure: (its start, its end, when read, its values).
        self._open: dict[str, tuple[float, float, float, list[Value]]] = {}

    async def buckets(
        self, ledger: Ledger, since: float, until: float, width: float, now: float
    ) -> list[Any]:
        """The time buckets of ``[since, until)`` as :meth:`Ledger.buckets` returns them."""
        return await self.series("buckets", read_buckets, add_buckets, ledger, since, until, width, now)

    async def by_model(
        self, ledger: Ledger, since: float, until: float, width: float, now: float
    ) -> list[Any]:
        """Per ``width``-second bucket of ``[since, until)``, model -> the ledger's summary row."""
        return await self.series("by_model", read_by_model, add_by_model, ledger, since, until, width, now)

    async def series(
        self,
        measure: str,
        read: Reader,
        add: Adder,
        ledger: Ledger,
        since: float,
        until: float,
        width: float,
        now: float,
    ) -> list[Value]:
        """``read``'s values per bucket of ``[since, until)``, closed buckets from the cache."""
        async with self._lock:
            if ledger is not self._ledger or ledger.health.replayed != self._replayed:
                # Another ledger (a reload) or late records replayed into past buckets: start over.
                self._ledger, self._replayed = ledger, ledger.health.replayed
                self._closed.clear()
                self._open.clear()
            if width not in TIERS or since % width or until % width:
                self.reads += 1
                return await read(ledger, since, until, width, now)
            values = await self._series(measure, read, add, ledger, since, until, width, now)
            for (_, tier), kept in self._closed.items():
                horizon = now - KEEP_BUCKETS * tier
                for start in [s for s in kept if s < horizon]:
                    del kept[start]
            return values

    async def _series(
        self,
        measure: str,
        read: Reader,
        add: Adder,
        ledger: Ledger,
        since: float,
        until: float,
        width: float,
        now: float,
    ) -> list[Value]:
        settled = now - SETTLE_S
        count = round((until - since) / width)
        starts = [since + index * width for index in range(count)]
        kept = self._closed.setdefault((measure, width), {})
        missing = [start for start in starts if start + width <= settled and start not in kept]
        tier = TIERS.index(width)
        if missing and tier > 0:
            # A bucket that just closed is the sum of the finer buckets inside it, kept while it was open
            # (the last few read now), rather than a read of all its rows. Without any of them kept (the
            # first read after a start), one read of the coarse buckets is cheaper.
            finer = TIERS[tier - 1]
            finer_kept = self._closed.get((measure, finer), {})
            for start in list(missing):
                if any(start <= kept_start < start + width for kept_start in finer_kept):
                    parts = await self._series(measure, read, add, ledger, start, start + width, finer, now)
                    kept[start] = add(parts)
                    missing.remove(start)
        if missing:  # one read from the first missing to the last (a gap is at most re-read)
            self.reads += 1
            first, last = missing[0], missing[-1] + width
            for index, value in enumerate(await read(ledger, first, last, width, now)):
                kept[first + index * width] = value
        values = []
        for start in starts:
            if start in kept:
                values.append(kept[start])
                continue
            # The open buckets (the rest: the closed ones are all kept now), read fresh in one read, or
            # for a coarse tier made of the finer tier's buckets, mostly closed and kept.
            if tier == 0:
                return values + await self._read_open(measure, read, ledger, start, until, width, now)
            finer = TIERS[tier - 1]
            parts = await self._series(measure, read, add, ledger, start, until, finer, now)
            per = round(width / finer)
            return values + [add(parts[at : at + per]) for at in range(0, len(parts), per)]
        return values

    async def _read_open(
        self, measure: str, read: Reader, ledger: Ledger, start: float, until: float, width: float, now: float
    ) -> list[Value]:
        """The open finest buckets of ``[start, until)``: a read of the same start and at least this end
        made within ``fresh_s`` serves (the windows of one page, concurrent viewers); else read now."""
        latest = self._open.get(measure)
        clock = self._clock()
        if (
            latest is not None
            and latest[0] == start
            and latest[1] >= until
            and clock - latest[2] < self._fresh_s
        ):
            return latest[3][: round((until - start) / width)]
        self.reads += 1
        values = await read(ledger, start, until, width, now)
        self._open[measure] = (start, until, clock, values)
        return values
