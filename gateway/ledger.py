"""The usage ledger: one record per request, queued on the request path and written in batches off it.

Requests call :meth:`Ledger.record`, which only appends to a bounded in-memory queue; a background task writes
the queue to the ledger's sink (:mod:`gateway.usage_sink`: SQLite by default, PostgreSQL shared by several
replicas, or JSONL for a log pipeline) every ``flush_interval`` seconds, or as soon as ``batch_size``
records are waiting. :meth:`Ledger.close` writes whatever is left, so a clean shutdown loses nothing; a crash
loses at most the records of the last interval.

The ledger cannot die of a bad day, whatever the sink (:class:`LedgerHealth` counts what happened,
`/admin/usage` shows it):

- every write error is caught, counted and logged (once per streak); the batch goes to the spill file
  (:mod:`gateway.ledger_spill`, when the sink has one) and is replayed at the next successful write or start.
  Otherwise, or when even the spill file cannot be written, a batch stays in memory, bounded by
  ``max_pending``: the oldest records beyond it are dropped, counted (``dropped``, exported as
  ``gateway_usage_dropped_total``) and logged at most once a minute;
- a record that arrives after :meth:`close` (a stream still finishing during shutdown) cannot be written
  any more: it is counted as dropped too, never silently lost;
- records are made storable when queued (:func:`~gateway.usage_record.storable`), so one absurd record can
  never poison a batch;
- a writer task that died anyway is restarted by the next :meth:`Ledger.record`;
- reads never wait for a write that fails: they answer from what the sink holds, and raise
  :class:`LedgerUnavailable` (a 503 at the admin API) only when it cannot be read at all.

Money is stored as integer nano-dollars (``cost_nanos``), so sums are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from gateway.ledger_spill import SpillFile
from gateway.ledger_sqlite import Connect, SQLiteSink
from gateway.usage_bodies import BodyRecord
from gateway.usage_record import (
    GroupBy,
    LedgerError,
    LedgerNotQueryable,
    LedgerUnavailable,
    UsageRecord,
    UsageSource,
    storable,
)
from gateway.usage_sink import UsageSink

__all__ = [
    "GroupBy",
    "Ledger",
    "LedgerError",
    "LedgerHealth",
    "LedgerNotQueryable",
    "LedgerUnavailable",
    "UsageRecord",
    "UsageSource",
    "storable",
]

logger = logging.getLogger("gateway.usage")

DROP_LOG_SECONDS = 60.0  # at most one "records dropped" log line per this many seconds
PRUNE_SECONDS = 3600.0  # retention runs hourly
PRUNE_BATCH = 1000  # raw rows deleted per transaction, so a large backlog never holds the writer long


@dataclass
class LedgerHealth:
    """What went wrong with the ledger since start (``GET /admin/usage`` → ``ledger``).

    ``write_errors`` failed batch writes; ``spilled`` records written to the spill file instead;
    ``replayed`` records replayed from it; ``dropped`` records lost: the queue was full (the sink and the
    spill file refused them) or they arrived after the ledger was closed; ``writer_restarts`` times the
    background writer was restarted; ``reopened`` times the sink reconnected to its store (file deleted or
    replaced, or after a failure); ``bodies_dropped`` logged bodies lost (bodies are never spilled).
    """

    write_errors: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    writer_restarts: int = 0
    reopened: int = 0
    bodies_dropped: int = 0
    last_error: str | None = None
    failing: bool = field(default=False, repr=False)

    def snapshot(self) -> dict[str, Any]:
        """The counters and the last error, as JSON values."""
        return {k: v for k, v in asdict(self).items() if k != "failing"}


class Ledger:
    """The usage ledger writing to ``sink`` (an SQLite path is short for ``SQLiteSink(path)``).

    Call :meth:`start` before recording and :meth:`close` on shutdown. ``connect`` is the SQLite sink's
    connection seam (tests); ``spill_path`` overrides the sink's spill file.
    """

    def __init__(
        self,
        sink: UsageSink | str,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        max_pending: int = 100_000,
        retention_days: int | None = None,
        body_retention_days: int | None = None,
        connect: Connect | None = None,
        spill_path: str | None = None,
    ) -> None:
        self.sink: UsageSink = SQLiteSink(sink, connect=connect) if isinstance(sink, str) else sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.retention_days = retention_days
        self.body_retention_days = body_retention_days
        self._bodies: list[BodyRecord] = []
        self.health = LedgerHealth()
        spill = spill_path or self.sink.spill_path
        self._spill = SpillFile(spill) if spill else None
        self._pending: list[UsageRecord] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._started = False
        self._next_prune = 0.0  # monotonic time of the next retention run (the first: soon after start)
        self._drop_logged_at: float | None = None
        self._drops_unlogged = 0

    @property
    def path(self) -> str:
        """Where the sink stores records (a URL's password redacted)."""
        return self.sink.location

    @property
    def pending(self) -> int:
        """Records accepted but not yet written."""
        return len(self._pending)

    def status(self) -> dict[str, Any]:
        """The ledger's health counters plus the records waiting in memory and in the spill file."""
        self.health.reopened = self.sink.reopened
        return {
            **self.health.snapshot(),
            "pending": self.pending,
            "spill_file": str(self._spill.path) if self._spill is not None and self._spill.exists() else None,
            "sink": type(self.sink).__name__.removesuffix("Sink").lower(),
            "location": self.sink.location,
        }

    async def start(self) -> None:
        """Open the sink, replay the spill file and start the writer; safe to call twice."""
        async with self._lock:
            await self.sink.start()
            try:
                await self._replay()
            except Exception as exc:  # e.g. a read-only file: serve anyway, replay at a later write
                self._failed(exc)
        self._started = True
        self._closed = False
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="usage-ledger-writer")

    def record(self, record: UsageRecord) -> None:
        """Queue ``record`` for the next batch; never blocks and never raises."""
        if self._closed:
            # Shutdown already wrote the last batch: nothing will write this one.
            self._dropped(1, "arrived after the ledger was closed")
            return
        self._pending.append(storable(record))
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            del self._pending[:excess]
            self._dropped(excess, "queue full")
        if len(self._pending) >= self.batch_size:
            self._wake.set()
        task = self._task
        if task is not None and task.done() and not self._closing:
            # Whatever killed it, the records keep coming: a ledger without a writer is a slow leak.
            self.health.writer_restarts += 1
            logger.error("usage ledger writer stopped (%s): restarting it", _task_error(task))
            self._task = asyncio.create_task(self._run(), name="usage-ledger-writer")

    def record_body(self, body: BodyRecord) -> None:
        """Queue a logged body (``usage.log_bodies``) for the next batch; never blocks and never raises."""
        if self._closed or len(self._bodies) >= self.max_pending:
            self.health.bodies_dropped += 1
            return
        self._bodies.append(body)

    def _dropped(self, count: int, why: str) -> None:
        """Count ``count`` lost records; log at most once a minute (a failing disk must not flood the log)."""
        self.health.dropped += count
        self._drops_unlogged += count
        now = time.monotonic()
        if self._drop_logged_at is None or now - self._drop_logged_at >= DROP_LOG_SECONDS:
            logger.error(
                "usage ledger dropped %d records (%s); %d dropped since start",
                self._drops_unlogged, why, self.health.dropped,
            )  # fmt: skip
            self._drop_logged_at = now
            self._drops_unlogged = 0

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # flush handles its own errors; this keeps the loop alive regardless
                logger.error("usage ledger writer error: %s", type(exc).__name__)
            retention = self.retention_days is not None or self.body_retention_days is not None
            if retention and time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_SECONDS
                try:
                    await self.prune()
                except Exception as exc:  # retry next hour; the raw rows only take some more room meanwhile
                    logger.error("usage ledger retention failed: %s: %s", type(exc).__name__, exc)

    async def flush(self) -> bool:
        """Write every queued record now, in one transaction; True when the sink has them all.

        Never raises for a sink or disk error: the batch is spilled (or kept) and the error counted.
        """
        async with self._lock:
            if not self._started:
                return not self._pending
            batch, self._pending = self._pending, []
            bodies, self._bodies = self._bodies, []
            # Shielded: a cancelled caller must not abandon a write that is already running (in a thread or
            # on the server), or the batch would be re-queued and written twice.
            work = asyncio.ensure_future(self._write_or_spill(batch))
            try:
                kept = await asyncio.shield(work)
            except asyncio.CancelledError:
                raise
            except BaseException:
                kept = batch
            self.health.reopened = self.sink.reopened
            if kept:
                self._pending[:0] = kept
                overflow = len(self._pending) - self.max_pending
                if overflow > 0:
                    del self._pending[:overflow]
                    self._dropped(overflow, "queue full while the sink fails")
            if bodies:
                await asyncio.shield(asyncio.ensure_future(self._write_bodies(bodies)))
            return not self.health.failing

    async def _write_bodies(self, bodies: list[BodyRecord]) -> None:
        try:
            await self.sink.write_bodies(bodies)
        except Exception as exc:  # best effort: a prompt must not wait in a file beyond its retention
            self.health.bodies_dropped += len(bodies)
            logger.error("usage ledger: %d logged bodies dropped: %s", len(bodies), type(exc).__name__)

    async def _write_or_spill(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        """Write ``batch`` and any spilled records; returns what must stay queued."""
        try:
            await self.sink.write_batch(batch)
        except Exception as exc:  # any error (database, disk, network, a bug): records survive it
            self._failed(exc)
            return await self._spill_batch(batch)
        try:
            await self._replay()
        except Exception as exc:  # the batch is written; the spill file stays for the next try
            self._failed(exc)
            return []
        if self.health.failing:
            self.health.failing = False
            logger.warning("usage ledger %s is writable again", self.sink.location)
        return []

    def _failed(self, exc: Exception) -> None:
        self.health.write_errors += 1
        self.health.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self.health.failing:
            self.health.failing = True
            logger.error(
                "usage ledger write failed, records are spilled until it works: %s", self.health.last_error
            )

    async def _spill_batch(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        spill = self._spill
        if not batch or spill is None:
            return batch
        try:
            await asyncio.to_thread(spill.append, batch)
        except OSError as exc:
            logger.error("usage ledger spill file %s cannot be written either: %s", spill.path, exc)
            return batch
        self.health.spilled += len(batch)
        return []

    async def _replay(self) -> None:
        """Write the spill file's records to the sink and remove the file (lock held)."""
        spill = self._spill
        if spill is None or not await asyncio.to_thread(spill.exists):
            return
        records, bad = await asyncio.to_thread(spill.load, UsageRecord)
        if bad:
            logger.error("usage ledger spill file %s: %d unreadable lines skipped", spill.path, bad)
        await self.sink.write_batch([storable(record) for record in records])
        await asyncio.to_thread(spill.remove)
        self.health.replayed += len(records)
        logger.warning("usage ledger: %d spilled records replayed from %s", len(records), spill.path)

    async def close(self) -> None:
        """Stop the writer, write what is left (or spill it) and close the sink."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._started:
            await self.flush()
            if self._pending:
                logger.error("usage ledger closing with %d records neither written nor spilled", self.pending)
                self._dropped(len(self._pending), "closing while the sink fails")
                self._pending = []
        async with self._lock:
            self._started = False
            self._closed = True
            await self.sink.close()

    async def _ready(self) -> None:
        """Flush before a read, so readers see every request answered so far when writes work."""
        if not self._started:
            raise LedgerUnavailable("the usage ledger is not open")
        await self.flush()

    async def spend_nanos(
        self, *, key_name: str | None = None, team: str | None = None, since: float = 0.0
    ) -> int:
        """Total cost since ``since`` (Unix seconds) of one key or team; restores budget counters on start."""
        await self._ready()
        return await self.sink.spend_nanos(key_name=key_name, team=team, since=since)

    async def summary(
        self,
        group_by: Sequence[GroupBy] = (),
        *,
        since: float | None = None,
        until: float | None = None,
        key_name: str | None = None,
    ) -> list[dict[str, Any]]:
        """Requests, tokens, cost and cache hits in ``[since, until)``, one row per group (or one in total).

        Each row has ``group`` (a dict of dimension to value; None without ``group_by``), ``requests``,
        ``prompt_tokens``, ``completion_tokens``, ``cost_nanos``, ``cache_hits``, ``errors``, ``estimated``
        (rows whose tokens were estimated), ``cached_tokens`` and ``avoided_cost_nanos``. ``key_name``
        narrows to one key. Rows are sorted by group.
        """
        await self._ready()
        return await self.sink.summary(list(group_by), since=since, until=until, key_name=key_name)

    async def daily_summary(
        self,
        group_by: Sequence[GroupBy] = (),
        *,
        first_day: str | None = None,
        last_day: str | None = None,
        key_name: str | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`summary` of the whole days ``[first_day, last_day]`` (ISO dates, None: unbounded), read from
        the daily rollup, which keeps the days whose raw rows retention deleted."""
        await self._ready()
        return await self.sink.daily_summary(
            list(group_by), first_day=first_day, last_day=last_day, key_name=key_name
        )

    async def buckets(
        self, *, since: float, until: float, width: float, key_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Requests, errors, tokens, cost and a latency histogram per ``width``-second bucket of
        ``[since, until)``, oldest first, empty buckets included (the console's charts).

        Each has ``start`` (Unix seconds), ``requests``, ``errors``, ``prompt_tokens``,
        ``completion_tokens``, ``cost_nanos``, ``cache_hits`` and ``latency_le``: how many requests took at
        most each of :data:`gateway.usage_sql.LATENCY_EDGES_MS` milliseconds.
        """
        if width <= 0 or until < since:
            raise ValueError("width must be positive and until at or after since")
        await self._ready()
        return await self.sink.buckets(since=since, until=until, width=width, key_name=key_name)

    async def prune(self, today: date | None = None) -> int:
        """Delete the raw records of days older than ``retention_days`` before ``today`` (UTC), in small
        transactions; the daily rollup keeps their totals. Returns how many were deleted."""
        if (self.retention_days is None and self.body_retention_days is None) or not self._started:
            return 0
        before = ((today or datetime.now(UTC).date()) - timedelta(days=self.retention_days or 0)).isoformat()
        deleted = 0
        while self.retention_days is not None:
            count = await self.sink.prune(before, PRUNE_BATCH)
            deleted += count
            if count < PRUNE_BATCH:
                break
            await asyncio.sleep(0)  # let requests and the writer in between batches
        if deleted:
            logger.info("usage ledger retention: %d records of days before %s deleted", deleted, before)
        if self.body_retention_days is not None:
            day = (today or datetime.now(UTC).date()) - timedelta(days=self.body_retention_days)
            while await self.sink.prune_bodies(day.isoformat(), PRUNE_BATCH) == PRUNE_BATCH:
                await asyncio.sleep(0)
        return deleted

    async def bodies(self, *, request_id: str, key_name: str | None = None) -> list[BodyRecord]:
        """The bodies logged for one request (``usage.log_bodies``), newest first."""
        await self._ready()
        return await self.sink.bodies(request_id=request_id, key_name=key_name)

    async def records(
        self,
        *,
        request_id: str | None = None,
        key_name: str | None = None,
        limit: int = 100,
        trace_id: str | None = None,
    ) -> list[UsageRecord]:
        """The newest ``limit`` records, newest first; of one request, one key and/or one trace when given.

        Request ids are chosen by clients (``x-request-id``), so two keys can send the same one: a record is
        identified by the pair (key, request id), and ``key_name`` narrows a lookup to one tenant's.
        """
        await self._ready()
        return await self.sink.records(
            request_id=request_id, key_name=key_name, limit=limit, trace_id=trace_id
        )


def _task_error(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return type(error).__name__ if error is not None else "returned"
