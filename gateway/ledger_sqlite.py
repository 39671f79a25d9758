"""The SQLite usage sink (the default): one file per replica, WAL mode, written off the event loop.

All database work runs on one worker thread at a time (``asyncio.to_thread`` under a lock), so the event
loop never waits on disk. SQLite runs in WAL mode (readers never block the writer) with
``synchronous=NORMAL``.

The schema is versioned with ``PRAGMA user_version`` and brought up to date on open by numbered migrations
(:data:`MIGRATIONS`), each in one transaction with its version bump, so a crash mid-migration leaves the
old version intact. A file written by a newer gateway (a higher version) is refused rather than guessed at.

What this sink does itself for resilience (the ledger does the rest: spill file, bounded queue, restarts):

- a database file deleted or replaced under the gateway (another inode at the path) is detected before each
  write, logged and reopened (recreated); after a failed write the connection is reopened too, so a file
  made writable again is used again;
- a read-only file that already holds the ledger is opened for reads (writes fail and are spilled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway import usage_sql
from gateway.ledger_sql_reads import SqlReads
from gateway.usage_bodies import BODY_COLUMNS, BodyRecord
from gateway.usage_record import COLUMNS, LedgerError, LedgerUnavailable, UsageRecord, as_row

logger = logging.getLogger("gateway.usage")

_V1 = [
    """CREATE TABLE IF NOT EXISTS usage (
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
)""",
    "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)",
    "CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key_name, ts)",
    "CREATE INDEX IF NOT EXISTS usage_team_ts ON usage (team, ts)",
    "CREATE INDEX IF NOT EXISTS usage_request_key ON usage (request_id, key_name)",
]
# Columns the unversioned schema (before user_version) gained over time: a file from then may lack them.
_V1_LATE_COLUMNS = {"attempts": "INTEGER NOT NULL DEFAULT 0", "ttft_ms": "REAL"}
_V2 = [
    "ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE usage ADD COLUMN avoided_cost_nanos INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE usage ADD COLUMN cache_status TEXT",
    "ALTER TABLE usage ADD COLUMN error_code TEXT",
    "ALTER TABLE usage ADD COLUMN overhead_ms REAL",
    "ALTER TABLE usage ADD COLUMN region TEXT",
]
# The daily rollup (filled from the rows already there) and how far retention has deleted raw rows.
_V3 = [usage_sql.rollup_table("INTEGER"), usage_sql.ROLLUP_BACKFILL, usage_sql.PRUNED_TABLE]
# usage.log_bodies: prompts and answers, apart from the records.
_V4 = usage_sql.bodies_table("INTEGER PRIMARY KEY", "REAL")
_V5 = ["ALTER TABLE usage ADD COLUMN reservation_id TEXT"]
# The request's trace id (the console's request log filters by it).
_V6 = [
    "ALTER TABLE usage ADD COLUMN trace_id TEXT",
    "CREATE INDEX IF NOT EXISTS usage_trace ON usage (trace_id)",
]
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4, _V5, _V6]
"""Migration ``n`` (1-based) brings a file from ``user_version`` n-1 to n. Append, never edit."""
SCHEMA_VERSION = len(MIGRATIONS)

_UPSERT = usage_sql.rollup_upsert(usage_sql.qmark)
_INSERT = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"

Connect = Callable[[str], sqlite3.Connection]


def connect(path: str) -> sqlite3.Connection:
    """The default connection: one used by one thread at a time (the sink's lock serializes every use)."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema of ``conn`` to :data:`SCHEMA_VERSION`; returns the version it was at.

    Raises :class:`LedgerError` for a file written by a newer gateway.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"its schema version {version} is newer than this gateway's ({SCHEMA_VERSION}); "
            "upgrade the gateway"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            if number == 1:
                present = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
                for column, definition in _V1_LATE_COLUMNS.items():
                    if column not in present:
                        conn.execute(f"ALTER TABLE usage ADD COLUMN {column} {definition}")
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return version


def write(conn: sqlite3.Connection, batch: Sequence[UsageRecord]) -> None:
    """Insert ``batch`` and add it to the daily rollup, in one transaction."""
    rows = [as_row(record) for record in batch]
    conn.execute("BEGIN")
    try:
        conn.executemany(_INSERT, rows)
        conn.executemany(_UPSERT, usage_sql.rollup_rows(batch))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SQLiteSink(SqlReads):
    """The ledger in the SQLite file at ``path`` (``":memory:"`` for a private in-memory database).

    ``connect`` opens the database (a seam for tests that make it fail; default :func:`connect`, looked up
    per call); ``spill_path`` defaults to ``<path>-spill.jsonl`` (none in memory).
    """

    placeholder = staticmethod(usage_sql.qmark)
    floor = "CAST({} AS INTEGER)"  # truncates, which is the floor of the non-negative offsets it is given

    def __init__(self, path: str, *, connect: Connect | None = None, spill_path: str | None = None) -> None:
        self.path = path
        self.location = path
        self.in_memory = path == ":memory:"
        self.spill_path = spill_path if spill_path or self.in_memory else path + "-spill.jsonl"
        self.reopened = 0
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        # (device, inode) of the file the connection has open, to notice it being deleted or replaced.
        self._identity: tuple[int, int] | None = None
        self._lock = asyncio.Lock()
        self._opened = False
        self._failed = False

    async def start(self) -> None:
        """Open (or create) the database and migrate it; :class:`LedgerError` when it cannot be opened."""
        async with self._lock:
            if self._conn is None:
                try:
                    await asyncio.to_thread(self._open)
                except (sqlite3.Error, OSError, LedgerError) as exc:
                    raise LedgerError(f"cannot open the usage ledger '{self.path}': {exc}") from None
                self._opened = True

    def _open(self) -> sqlite3.Connection:
        if not self.in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Looked up per call (not bound as a default), so a test can make every open fail.
        conn = (self._connect or connect)(self.path)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                migrate(conn)
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
        if self.in_memory:
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _connection(self) -> sqlite3.Connection:
        """The open connection, reopened when there is none or the file at ``path`` is not its file."""
        conn = self._conn
        if conn is not None and not self.in_memory:
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
            if self._opened:
                self.reopened += 1
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def write_batch(self, records: Sequence[UsageRecord]) -> None:
        """Insert ``records`` in one transaction (worker thread); raises on any failure."""
        async with self._lock:
            await asyncio.to_thread(self._write_batch, records)

    def _write_batch(self, records: Sequence[UsageRecord]) -> None:
        if self._failed and not self.in_memory:
            # A connection opened (by a read) while the file was read-only stays read-only: start afresh.
            self._drop_connection()
        try:
            conn = self._connection()
            if records:
                write(conn, records)
        except BaseException:
            self._failed = True
            if not self.in_memory:
                # Reopen next time: a file made writable again, or recreated, is then picked up.
                self._drop_connection()
            raise
        self._failed = False

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:

            def read() -> list[tuple[Any, ...]]:
                return self._connection().execute(sql, params).fetchall()

            try:
                return await asyncio.to_thread(read)
            except (sqlite3.Error, OSError, LedgerError) as exc:
                if not self.in_memory:
                    self._drop_connection()
                raise LedgerUnavailable(f"the usage ledger '{self.path}' cannot be read: {exc}") from None

    async def prune(self, before_day: str, limit: int) -> int:
        """Delete at most ``limit`` raw rows of days before ``before_day``; how many were deleted."""
        delete, params = usage_sql.prune(usage_sql.qmark, before_day, limit)
        mark, mark_params = usage_sql.record_pruned(usage_sql.qmark, before_day)

        def run() -> int:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                deleted = conn.execute(delete, params).rowcount
                conn.execute(mark, mark_params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return int(deleted)

        async with self._lock:
            return await asyncio.to_thread(run)

    async def write_bodies(self, bodies: Sequence[BodyRecord]) -> None:
        """Insert logged bodies in one transaction; raises on any failure."""
        sql = usage_sql.insert_body(usage_sql.qmark)
        rows = [tuple(getattr(body, name) for name in BODY_COLUMNS) for body in bodies]

        def run() -> None:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        async with self._lock:
            await asyncio.to_thread(run)

    async def prune_bodies(self, before_day: str, limit: int) -> int:
        """Delete at most ``limit`` bodies of days before ``before_day``; how many were deleted."""
        sql, params = usage_sql.prune_bodies(usage_sql.qmark, before_day, limit)
        async with self._lock:
            return int(await asyncio.to_thread(lambda: self._connection().execute(sql, params).rowcount))

    async def close(self) -> None:
        """Close the database."""
        async with self._lock:
            self._opened = False
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)


def _has_usage_table(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage'").fetchone()
        is not None
    )
