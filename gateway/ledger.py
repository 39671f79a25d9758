"""The usage ledger: one row per request in SQLite, written in batches off the request path.

Requests call :meth:`Ledger.record`, which only appends to an in-memory buffer; a background task writes the
buffer in one transaction every ``flush_interval`` seconds, or as soon as ``batch_size`` records are waiting.
:meth:`Ledger.close` writes whatever is left, so a clean shutdown loses nothing; a crash loses at most the
records of the last interval. A failed write (disk full, locked file) keeps the batch and retries on the next
tick, logging the error.

SQLite runs in WAL mode (readers never block the writer) with ``synchronous=NORMAL``. All database work runs
on one worker thread at a time (``asyncio.to_thread`` under a lock), so the event loop never waits on disk.

Money is stored as integer nano-dollars (``cost_nanos``), so sums are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

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
"""


class LedgerError(Exception):
    """The ledger's database cannot be opened (not an SQLite file, no permission...)."""


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

    Call :meth:`start` before recording and :meth:`close` on shutdown.
    """

    def __init__(self, path: str, *, batch_size: int = 256, flush_interval: float = 0.5) -> None:
        self.path = path
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._pending: list[UsageRecord] = []
        self._conn: sqlite3.Connection | None = None
        self._db_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Records accepted but not yet written."""
        return len(self._pending)

    async def start(self) -> None:
        """Open (or create) the database and start the background writer; safe to call twice."""
        if self._conn is None:
            try:
                self._conn = await asyncio.to_thread(self._open)
            except (sqlite3.Error, OSError) as exc:
                raise LedgerError(f"cannot open the usage ledger '{self.path}': {exc}") from None
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="usage-ledger-writer")

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection used by one thread at a time (the lock serializes every use).
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        present = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
        for column, definition in _ADDED_COLUMNS.items():
            if column not in present:
                conn.execute(f"ALTER TABLE usage ADD COLUMN {column} {definition}")
        return conn

    def record(self, record: UsageRecord) -> None:
        """Queue ``record`` for the next batch; never blocks and never raises."""
        self._pending.append(record)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except sqlite3.Error as exc:
                # Keep serving: the batch went back into the buffer and the next tick retries it.
                logger.error("usage ledger write failed, will retry: %s", exc)

    async def flush(self) -> None:
        """Write every queued record now (in one transaction); on failure they stay queued and it raises."""
        async with self._db_lock:
            if not self._pending or self._conn is None:
                return
            batch, self._pending = self._pending, []
            # Shielded: a cancelled caller must not abandon a write that is already running in its thread,
            # or the batch would be re-queued and written twice.
            write = asyncio.ensure_future(asyncio.to_thread(self._write, self._conn, batch))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                raise
            except BaseException:
                self._pending[:0] = batch
                raise

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
        """Stop the writer, write what is left and close the database."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._conn is not None:
            try:
                await self.flush()
            finally:
                async with self._db_lock:
                    conn, self._conn = self._conn, None
                    if conn is not None:
                        await asyncio.to_thread(conn.close)

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read query after flushing, so readers see every request answered so far."""
        await self.flush()
        async with self._db_lock:
            if self._conn is None:
                raise RuntimeError("the usage ledger is not open")
            conn = self._conn
            return await asyncio.to_thread(lambda: conn.execute(sql, params).fetchall())

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

    async def records(self, *, request_id: str | None = None, limit: int = 100) -> list[UsageRecord]:
        """The newest ``limit`` records (optionally of one request), newest first."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM usage"
        params: list[Any] = []
        if request_id is not None:
            sql += " WHERE request_id = ?"
            params.append(request_id)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = await self._query(sql, params)
        return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> UsageRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["stream"] = bool(values["stream"])
    values["cache_hit"] = bool(values["cache_hit"])
    return UsageRecord(**values)
