"""The PostgreSQL usage sink: one ledger shared by every replica, so any replica's ``/admin/usage`` (and the
budgets' restore at start) sees the traffic of all of them.

Built on ``asyncpg``: it is asyncio-native with a connection pool of its own (psycopg 3 needs the separate
``psycopg_pool`` package for one) and its binary ``COPY`` (``copy_records_to_table``) writes a batch in one
round trip, so the writer holds a pooled connection for the shortest time. Writes run on the ledger's
background task, never on the request path.

Schema versions are recorded in ``usage_schema_versions`` (one row per applied migration, with its time).
Migrations run at start in one transaction under a transaction-level advisory lock, so replicas starting
together apply each migration exactly once; a database at a newer version than this gateway knows is refused.

The URL's password never leaves this module: ``location`` and every error carry the redacted URL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway import usage_sql
from gateway.ledger_sql_reads import SqlReads
from gateway.usage_bodies import BODY_COLUMNS, BodyRecord
from gateway.usage_record import COLUMNS, LedgerError, LedgerUnavailable, UsageRecord, as_row
from gateway.usage_sink import redact_url

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger("gateway.usage")

_V1 = [
    """CREATE TABLE IF NOT EXISTS usage (
    id BIGSERIAL PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    team TEXT,
    model TEXT NOT NULL,
    route TEXT,
    endpoint TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    usage_source TEXT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    status INTEGER NOT NULL,
    cache_hit BOOLEAN NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    ttft_ms DOUBLE PRECISION,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    avoided_cost_nanos BIGINT NOT NULL DEFAULT 0,
    cache_status TEXT,
    error_code TEXT,
    overhead_ms DOUBLE PRECISION,
    region TEXT
)""",
    "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)",
    "CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key_name, ts)",
    "CREATE INDEX IF NOT EXISTS usage_team_ts ON usage (team, ts)",
    "CREATE INDEX IF NOT EXISTS usage_request_key ON usage (request_id, key_name)",
]
# The daily rollup (filled from the rows already there) and how far retention has deleted raw rows.
_V2 = [usage_sql.rollup_table("BIGINT"), usage_sql.ROLLUP_BACKFILL, usage_sql.PRUNED_TABLE]
# usage.log_bodies: prompts and answers, apart from the records.
_V3 = usage_sql.bodies_table("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION")
_V4 = ["ALTER TABLE usage ADD COLUMN IF NOT EXISTS reservation_id TEXT"]
# The request's trace id (the console's request log filters by it).
_V5 = [
    "ALTER TABLE usage ADD COLUMN IF NOT EXISTS trace_id TEXT",
    "CREATE INDEX IF NOT EXISTS usage_trace ON usage (trace_id)",
]
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4, _V5]
"""Migration ``n`` (1-based) brings the database from version n-1 to n. Append, never edit."""
SCHEMA_VERSION = len(MIGRATIONS)
# Any constant: the advisory lock's key, shared by every gateway migrating the same database.
_MIGRATION_LOCK = 0x6761_7465_7761_79


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION` (in one transaction); returns the version it was at."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS usage_schema_versions "
            "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM usage_schema_versions"))
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"its schema version {version} is newer than this gateway's ({SCHEMA_VERSION}); "
                "upgrade the gateway"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO usage_schema_versions (version) VALUES ($1)", number)
    return version


_UPSERT = usage_sql.rollup_upsert(usage_sql.dollar)


class PostgresSink(SqlReads):
    """The ledger in the PostgreSQL database at ``url`` (``postgresql://user:password@host:port/db``).

    ``spill_path``: where the ledger spills batches while the server is unreachable (None keeps them in
    the ledger's bounded memory queue). Give each replica its own: a spill file is replayed by its owner.
    """

    placeholder = staticmethod(usage_sql.dollar)
    floor = "FLOOR({})::BIGINT"  # a CAST to an integer would round

    def __init__(
        self, url: str, *, spill_path: str | None = None, pool_size: int = 4, timeout: float = 10.0
    ) -> None:
        self._url = url
        self.location = redact_url(url)
        self.spill_path = spill_path
        self.reopened = 0
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def _error(self, exc: BaseException) -> str:
        # asyncpg's messages name the host and user, never the password; the URL is redacted anyway.
        return f"{type(exc).__name__}: {exc}".replace(self._url, self.location)[:300]

    async def start(self) -> None:
        """Open the pool and migrate; :class:`LedgerError` when the server cannot be reached or refuses."""
        import asyncpg

        async with self._lock:
            if self._pool is not None:
                return
            try:
                pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as exc:
                raise LedgerError(
                    f"cannot open the usage ledger '{self.location}': {self._error(exc)}"
                ) from None
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, LedgerError) as exc:
                await pool.close()
                raise LedgerError(
                    f"cannot open the usage ledger '{self.location}': {self._error(exc)}"
                ) from None
            self._pool = pool

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise LedgerUnavailable(f"the usage ledger '{self.location}' is not open")
        return self._pool

    async def write_batch(self, records: Sequence[UsageRecord]) -> None:
        """``COPY`` ``records`` into ``usage`` and add them to the rollup, in one transaction."""
        if not records:
            return
        async with self._open_pool().acquire(timeout=self.timeout) as conn, conn.transaction():
            await conn.copy_records_to_table(
                "usage",
                records=[as_row(record) for record in records],
                columns=COLUMNS,
                timeout=self.timeout,
            )
            await conn.executemany(_UPSERT, usage_sql.rollup_rows(records), timeout=self.timeout)

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        import asyncpg

        try:
            return list(await self._open_pool().fetch(sql, *params, timeout=self.timeout))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise LedgerUnavailable(
                f"the usage ledger '{self.location}' cannot be read: {self._error(exc)}"
            ) from None

    async def prune(self, before_day: str, limit: int) -> int:
        """Delete at most ``limit`` raw rows of days before ``before_day``; how many were deleted."""
        delete, params = usage_sql.prune(usage_sql.dollar, before_day, limit)
        mark, mark_params = usage_sql.record_pruned(usage_sql.dollar, before_day)
        async with self._open_pool().acquire(timeout=self.timeout) as conn, conn.transaction():
            status = await conn.execute(delete, *params, timeout=self.timeout)
            await conn.execute(mark, *mark_params, timeout=self.timeout)
        return int(status.split()[-1])  # "DELETE n"

    async def write_bodies(self, bodies: Sequence[BodyRecord]) -> None:
        """Insert logged bodies in one transaction; raises on any failure."""
        rows = [tuple(getattr(body, name) for name in BODY_COLUMNS) for body in bodies]
        async with self._open_pool().acquire(timeout=self.timeout) as conn, conn.transaction():
            await conn.executemany(usage_sql.insert_body(usage_sql.dollar), rows, timeout=self.timeout)

    async def prune_bodies(self, before_day: str, limit: int) -> int:
        """Delete at most ``limit`` bodies of days before ``before_day``; how many were deleted."""
        sql, params = usage_sql.prune_bodies(usage_sql.dollar, before_day, limit)
        status = await self._open_pool().execute(sql, *params, timeout=self.timeout)
        return int(status.split()[-1])

    async def close(self) -> None:
        """Close the pool (waiting for connections in use)."""
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()
