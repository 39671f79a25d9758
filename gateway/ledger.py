"""The usage ledger: one row per request in SQLite, written in batches off the request path.

Requests call :meth:`Ledger.record`, which only appends to an in-memory buffer; a background task writes the
buffer in one transaction every ``flush_interval`` seconds, or as soon as ``batch_size`` records are waiting.
:meth:`Ledger.close` writes whatever is left, so a clean shutdown loses nothing; a crash loses at most the
records of the last interval.

The ledger cannot die of a bad day (:class:`LedgerHealth` counts what happened, `/admin/usage` shows it):

- every write error is caught, counted and logged (once per streak); the batch goes to the spill file
  (:mod:`gateway.ledger_spill`) and is replayed at the next successful write or start. Only when even the
  spill file cannot be written does a batch stay in memory, bounded by ``max_pending`` (the oldest records
  beyond it are dropped, counted and logged);
- records are made storable when queued (counts and costs clamped to SQLite's 64-bit integers, strings
  that UTF-8 cannot encode escaped), so one absurd record can never poison a batch;
- a writer task that died anyway is restarted by the next :meth:`Ledger.record`;
- a database file deleted or replaced under the gateway (another inode at the path) is detected before each
  write, logged and reopened (recreated); after a failed write the connection is reopened too, so a file made
  writable again is used again;
- reads never wait for a write that fails: they answer from what the database holds, and raise
  :class:`LedgerUnavailable` (a 503 at the admin API) only when it cannot be read at all.

SQLite runs in WAL mode (readers never block the writer) with ``synchronous=NORMAL``. All database work runs
on one worker thread at a time (``asyncio.to_thread`` under a lock), so the event loop never waits on disk.

Money is stored as integer nano-dollars (``cost_nanos``), so sums are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from gateway.answers import MAX_TOKENS
from gateway.ledger_spill import SpillFile
from gateway.pricing import MAX_NANOS

logger = logging.getLogger("gateway.usage")

UsageSource = Literal["reported", "estimated", "none"]
GroupBy = Literal["key", "team", "model", "route", "day"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    team TEXT,
    model TEXT NOT NULL,
    route TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usage_source TEXT NOT NULL,
    cost_nanos INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    cache_hit INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    ttft_ms REAL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key_name, ts);
CREATE INDEX IF NOT EXISTS usage_team_ts ON usage (team, ts);
CREATE INDEX IF NOT EXISTS usage_request_key ON usage (request_id, key_name);
"""

_MAX_INT = 2**63 - 1  # SQLite INTEGER


class LedgerError(Exception):
    """The ledger's database cannot be opened (not an SQLite file, no permission...)."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be read right now (closed, deleted and not recreatable, unreadable)."""


Connect = Callable[[str], sqlite3.Connection]


def connect(path: str) -> sqlite3.Connection:
    """The default connection: one used by one thread at a time (the ledger's lock serializes every use)."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


@dataclass
class LedgerHealth:
    """What went wrong with the ledger since start (``GET /admin/usage`` → ``ledger``).

    ``write_errors`` failed batch writes; ``spilled`` records written to the spill file instead;
    ``replayed`` records replayed from it; ``dropped`` records lost because neither the database nor the spill
    file took them and the memory buffer was full; ``writer_restarts`` times the background writer was
    restarted; ``reopened`` times the database was reopened (file deleted or replaced, or after a failure).
    """

    write_errors: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    writer_restarts: int = 0
    reopened: int = 0
    last_error: str | None = None
    failing: bool = field(default=False, repr=False)

    def snapshot(self) -> dict[str, Any]:
        """The counters and the last error, as JSON values."""
        return {k: v for k, v in asdict(self).items() if k != "failing"}


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request as the ledger keeps it.

    ``ts`` is when the request arrived (Unix seconds) and ``day`` its local date in the budgets' time zone.
    ``usage_source`` says where the token counts come from: ``reported`` by the upstream, ``estimated`` by the
    gateway (no usage reported, or a stream cut short), or ``none`` (nothing was generated, e.g. an error).
    ``route`` is ``provider/model`` of the upstream that answered, None for a cache hit or a failure.
    ``attempts`` counts provider attempts (retries and failover included); ``ttft_ms`` is the time to the
    first streamed chunk (None for complete responses).
    """

    ts: float
    day: str
    request_id: str
    key_name: str
    team: str | None
    model: str
    route: str | None
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    usage_source: UsageSource
    cost_nanos: int
    latency_ms: float
    status: int
    cache_hit: bool
    attempts: int = 0
    ttft_ms: float | None = None


_COLUMNS = [f.name for f in fields(UsageRecord)]
_INSERT = f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_GROUP_COLUMNS = {"key": "key_name", "team": "team", "model": "model", "route": "route", "day": "day"}
# Columns added after the first schema, with their definitions: a ledger file written by an older gateway
# gets them on open (old rows read as the default).
_ADDED_COLUMNS = {"attempts": "INTEGER NOT NULL DEFAULT 0", "ttft_ms": "REAL"}


class Ledger:
    """The SQLite usage ledger at ``path`` (``":memory:"`` for a private in-memory database).

    Call :meth:`start` before recording and :meth:`close` on shutdown. ``connect`` opens the database (a
    seam for tests that make it fail); ``spill_path`` defaults to ``<path>-spill.jsonl`` (none in memory).
    """

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        max_pending: int = 100_000,
        connect: Connect | None = None,
        spill_path: str | None = None,
    ) -> None:
        self.path = path
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.health = LedgerHealth()
        self._connect = connect
        in_memory = path == ":memory:"
        self._spill = (
            None if in_memory and spill_path is None else SpillFile(spill_path or path + "-spill.jsonl")
        )
        self._pending: list[UsageRecord] = []
        self._conn: sqlite3.Connection | None = None
        # (device, inode) of the file the connection has open, to notice it being deleted or replaced.
        self._identity: tuple[int, int] | None = None
        self._db_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._started = False

    @property
    def pending(self) -> int:
        """Records accepted but not yet written."""
        return len(self._pending)

    def status(self) -> dict[str, Any]:
        """The ledger's health counters plus the records waiting in memory and in the spill file."""
        return {
            **self.health.snapshot(),
            "pending": self.pending,
            "spill_file": str(self._spill.path) if self._spill is not None and self._spill.exists() else None,
        }

    async def start(self) -> None:
        """Open (or create) the database, replay the spill file and start the writer; safe to call twice."""
        async with self._db_lock:
            if self._conn is None:
                try:
                    await asyncio.to_thread(self._open)
                except (sqlite3.Error, OSError) as exc:
                    raise LedgerError(f"cannot open the usage ledger '{self.path}': {exc}") from None
                try:
                    await asyncio.to_thread(self._replay)
                except Exception as exc:  # e.g. a read-only file: serve anyway, replay at a later write
                    self._failed(exc)
        self._started = True
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="usage-ledger-writer")

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Looked up per call (not bound as a default), so a test can make every open fail.
        conn = (self._connect or connect)(self.path)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                present = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
                for column, definition in _ADDED_COLUMNS.items():
                    if column not in present:
                        conn.execute(f"ALTER TABLE usage ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as exc:
                # A read-only file that already holds the ledger can still be read: serve reads, spill writes.
                if "readonly" not in str(exc) or not _has_usage_table(conn):
                    raise
                logger.error(
                    "usage ledger %s is read-only: records are spilled until it is writable", self.path
                )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._identity = self._file_identity()
        return conn

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _connection(self) -> sqlite3.Connection:
        """The open connection, reopened when there is none or the file at ``path`` is not its file."""
        conn = self._conn
        if conn is not None and self.path != ":memory:":
            identity = self._file_identity()
            if identity != self._identity:
                what = "deleted" if identity is None else "replaced by another file"
                logger.error(
                    "usage ledger %s was %s while in use: reopening it (records written to the old file "
                    "are no longer counted by this gateway)", self.path, what,
                )  # fmt: skip
                self._drop_connection()
                conn = None
        if conn is None:
            conn = self._open()
            if self._started:
                self.health.reopened += 1
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def record(self, record: UsageRecord) -> None:
        """Queue ``record`` for the next batch; never blocks and never raises."""
        self._pending.append(storable(record))
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            del self._pending[:excess]
            self.health.dropped += excess
            logger.error("usage ledger buffer full: %d oldest records dropped", excess)
        if len(self._pending) >= self.batch_size:
            self._wake.set()
        task = self._task
        if task is not None and task.done() and not self._closing:
            # Whatever killed it, the records keep coming: a ledger without a writer is a slow leak.
            self.health.writer_restarts += 1
            logger.error("usage ledger writer stopped (%s): restarting it", _task_error(task))
            self._task = asyncio.create_task(self._run(), name="usage-ledger-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # flush handles its own errors; this keeps the loop alive regardless
                logger.error("usage ledger writer error: %s", type(exc).__name__)

    async def flush(self) -> bool:
        """Write every queued record now, in one transaction; True when the database has them all.

        Never raises for a database or disk error: the batch is spilled (or kept) and the error counted.
        """
        async with self._db_lock:
            if self._conn is None and not self._started:
                return not self._pending
            batch, self._pending = self._pending, []
            # Shielded: a cancelled caller must not abandon a write that is already running in its thread,
            # or the batch would be re-queued and written twice.
            work = asyncio.ensure_future(asyncio.to_thread(self._write_or_spill, batch))
            try:
                kept = await asyncio.shield(work)
            except asyncio.CancelledError:
                raise
            except BaseException:
                kept = batch
            if kept:
                self._pending[:0] = kept
                overflow = len(self._pending) - self.max_pending
                if overflow > 0:
                    del self._pending[:overflow]
                    self.health.dropped += overflow
                    logger.error("usage ledger buffer full: %d oldest records dropped", overflow)
            return not self.health.failing

    def _write_or_spill(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        """(Worker thread) write ``batch`` and any spilled records; returns what must stay queued."""
        if self.health.failing and self.path != ":memory:":
            # A connection opened (by a read) while the file was read-only stays read-only: start afresh.
            self._drop_connection()
        try:
            conn = self._connection()
            if batch:
                self._write(conn, batch)
        except Exception as exc:  # any error: sqlite, disk, or a bug; the records must survive it
            self._failed(exc)
            return self._spill_batch(batch)
        try:
            self._replay()
        except Exception as exc:  # the batch is written; the spill file stays for the next try
            self._failed(exc)
            return []
        if self.health.failing:
            self.health.failing = False
            logger.warning("usage ledger %s is writable again", self.path)
        return []

    def _failed(self, exc: Exception) -> None:
        self.health.write_errors += 1
        self.health.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self.health.failing:
            self.health.failing = True
            logger.error(
                "usage ledger write failed, records are spilled until it works: %s", self.health.last_error
            )
        if self.path != ":memory:":
            # Reopen next time: a file made writable again, or recreated, is then picked up.
            self._drop_connection()

    def _spill_batch(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        if not batch or self._spill is None:
            return batch
        try:
            self._spill.append(batch)
        except OSError as exc:
            logger.error("usage ledger spill file %s cannot be written either: %s", self._spill.path, exc)
            return batch
        self.health.spilled += len(batch)
        return []

    def _replay(self) -> None:
        """Write the spill file's records into the database and remove it (worker thread, lock held)."""
        if self._spill is None or not self._spill.exists() or self._conn is None:
            return
        records, bad = self._spill.load(UsageRecord)
        if bad:
            logger.error("usage ledger spill file %s: %d unreadable lines skipped", self._spill.path, bad)
        self._write(self._conn, [storable(record) for record in records])
        self._spill.remove()
        self.health.replayed += len(records)
        logger.warning("usage ledger: %d spilled records replayed from %s", len(records), self._spill.path)

    @staticmethod
    def _write(conn: sqlite3.Connection, batch: Sequence[UsageRecord]) -> None:
        rows = [tuple(asdict(record).values()) for record in batch]
        conn.execute("BEGIN")
        try:
            conn.executemany(_INSERT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def close(self) -> None:
        """Stop the writer, write what is left (or spill it) and close the database."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._started:
            await self.flush()
            if self._pending and self._spill is not None:
                logger.error("usage ledger closing with %d records neither written nor spilled", self.pending)
        async with self._db_lock:
            self._started = False
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read query after a flush, so readers see every request answered so far when writes work.

        A failing write does not fail the read; a database that cannot be read raises LedgerUnavailable.
        """
        if not self._started:
            raise LedgerUnavailable("the usage ledger is not open")
        await self.flush()
        async with self._db_lock:

            def read() -> list[tuple[Any, ...]]:
                return self._connection().execute(sql, params).fetchall()

            try:
                return await asyncio.to_thread(read)
            except (sqlite3.Error, OSError) as exc:
                if self.path != ":memory:":
                    self._drop_connection()
                raise LedgerUnavailable(f"the usage ledger '{self.path}' cannot be read: {exc}") from None

    async def spend_nanos(
        self, *, key_name: str | None = None, team: str | None = None, since: float = 0.0
    ) -> int:
        """Total cost since ``since`` (Unix seconds) of one key or team; restores budget counters on start."""
        column, value = ("key_name", key_name) if key_name is not None else ("team", team)
        rows = await self._query(
            f"SELECT COALESCE(SUM(cost_nanos), 0) FROM usage WHERE {column} = ? AND ts >= ?", (value, since)
        )
        return int(rows[0][0])

    async def summary(
        self, group_by: GroupBy | None = None, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Requests, tokens, cost and cache hits in ``[since, until)``, one row per group (or one in total).

        Each row has ``group`` (None without ``group_by``), ``requests``, ``prompt_tokens``,
        ``completion_tokens``, ``cost_nanos``, ``cache_hits``, ``errors`` and ``estimated`` (rows whose tokens
        were estimated). Rows are sorted by group.
        """
        where, params = [], []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        group = _GROUP_COLUMNS[group_by] if group_by else "NULL"
        sql = (
            f"SELECT {group}, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cost_nanos), 0), COALESCE(SUM(cache_hit), 0), "
            "COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END), 0) FROM usage"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        if group_by:
            sql += f" GROUP BY {group} ORDER BY {group}"
        rows = await self._query(sql, params)
        keys = (
            "group",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "cost_nanos",
            "cache_hits",
            "errors",
        )
        return [dict(zip((*keys, "estimated"), row, strict=True)) for row in rows]

    async def records(
        self, *, request_id: str | None = None, key_name: str | None = None, limit: int = 100
    ) -> list[UsageRecord]:
        """The newest ``limit`` records, newest first; of one request and/or one key when given.

        Request ids are chosen by clients (``x-request-id``), so two keys can send the same one: a record is
        identified by the pair (key, request id), and ``key_name`` narrows a lookup to one tenant's.
        """
        sql = f"SELECT {', '.join(_COLUMNS)} FROM usage"
        where: list[str] = []
        params: list[Any] = []
        if request_id is not None:
            where.append("request_id = ?")
            params.append(request_id)
        if key_name is not None:
            where.append("key_name = ?")
            params.append(key_name)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = await self._query(sql, params)
        return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> UsageRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["stream"] = bool(values["stream"])
    values["cache_hit"] = bool(values["cache_hit"])
    return UsageRecord(**values)


def _has_usage_table(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage'").fetchone()
        is not None
    )


def _task_error(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return type(error).__name__ if error is not None else "returned"


def _text(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: SQLite would refuse the whole batch
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def storable(record: UsageRecord) -> UsageRecord:
    """``record`` with every value SQLite can store and sum: token counts within ``[0, MAX_TOKENS]``, the
    cost within ``[0, MAX_NANOS]``, text UTF-8 can encode. Clean records (normally all) are returned as is."""
    changes: dict[str, Any] = {}
    for name, most in (("prompt_tokens", MAX_TOKENS), ("completion_tokens", MAX_TOKENS),
                       ("attempts", _MAX_INT), ("status", 999)):  # fmt: skip
        value = getattr(record, name)
        if not isinstance(value, int) or not 0 <= value <= most:
            changes[name] = min(max(value, 0), most) if isinstance(value, int) else 0
    if not isinstance(record.cost_nanos, int) or not 0 <= record.cost_nanos <= MAX_NANOS:
        changes["cost_nanos"] = (
            min(max(record.cost_nanos, 0), MAX_NANOS) if isinstance(record.cost_nanos, int) else 0
        )
    for name in ("request_id", "key_name", "team", "model", "route", "endpoint", "day"):
        value = getattr(record, name)
        if isinstance(value, str):
            text = _text(value)
            if text is not value:
                changes[name] = text
    return replace(record, **changes) if changes else record
