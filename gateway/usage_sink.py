"""The usage ledger's storage seam: :class:`UsageSink`, and :func:`open_sink` picking one from ``usage:``.

The ledger (:mod:`gateway.ledger`) owns everything about getting records out of the request path safely:
the bounded queue, the background writer (restarted when it dies), the spill file, the health counters. A
sink only stores batches and answers the read queries, so the three sinks share that resilience:

- ``sqlite`` (:mod:`gateway.ledger_sqlite`, the default): one file per replica, nothing to run;
- ``postgres`` (:mod:`gateway.ledger_postgres`): one database shared by every replica, so ``/admin/usage``
  and the budgets' restore see the traffic of all of them;
- ``jsonl`` (:mod:`gateway.ledger_jsonl`): one JSON object per line appended to a file that a log shipper
  tails; it keeps nothing it can query (its queries raise :class:`LedgerNotQueryable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gateway.usage_bodies import BodyRecord
from gateway.usage_record import UsageRecord

if TYPE_CHECKING:
    from gateway.ledger import Ledger
    from gateway.usage_config import UsageConfig


class UsageSink(Protocol):
    """Where the ledger's records are stored and read back from.

    ``location`` names the store for logs and ``/admin/usage`` (a URL's password redacted);
    ``spill_path`` is where the ledger spills batches this sink refused (None: keep them in memory);
    ``reopened`` counts reconnections to the store after it was lost.

    :meth:`write_batch` stores all of ``records`` or none of them, and raises on any failure (the ledger
    spills the batch and retries); the read methods raise :class:`~gateway.usage_record.LedgerUnavailable`
    when the store cannot be read. Every method runs on the event loop and must not block it.
    """

    location: str
    spill_path: str | None
    reopened: int

    async def start(self) -> None:
        """Open the store (create it, apply migrations); :class:`~gateway.usage_record.LedgerError` if not."""

    async def write_batch(self, records: Sequence[UsageRecord]) -> None:
        """Store ``records`` in one transaction."""

    async def spend_nanos(self, *, key_name: str | None, team: str | None, since: float) -> int:
        """Total cost since ``since`` (Unix seconds) of one key or one team (budgets restore from it)."""

    async def summary(
        self,
        group_by: Sequence[str],
        *,
        since: float | None,
        until: float | None,
        key_name: str | None,
    ) -> list[dict[str, Any]]:
        """Aggregates per group (see :func:`gateway.usage_sql.summary_rows`) in ``[since, until)``."""

    async def daily_summary(
        self, group_by: Sequence[str], *, first_day: str | None, last_day: str | None, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Like :meth:`summary` for the whole days ``[first_day, last_day]`` (ISO dates), read from the daily
        rollup (``usage_daily``), which outlives the raw rows; ``group_by`` within ``day, key, team, model,
        route``."""

    async def buckets(
        self, *, since: float, until: float, width: float, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Requests, errors, tokens, cost and a latency histogram per ``width``-second bucket of
        ``[since, until)``, every bucket present (see :func:`gateway.usage_sql.bucket_rows`)."""

    async def records(
        self, *, request_id: str | None, key_name: str | None, limit: int, trace_id: str | None = None
    ) -> list[UsageRecord]:
        """The newest ``limit`` records, newest first, of one request, key and/or trace id when given."""

    async def prune(self, before_day: str, limit: int) -> int:
        """Delete at most ``limit`` raw records of days before ``before_day`` (rollup kept); how many."""

    async def write_bodies(self, bodies: Sequence[BodyRecord]) -> None:
        """Store logged bodies (``usage.log_bodies``) in one transaction; raises on any failure."""

    async def bodies(self, *, request_id: str, key_name: str | None) -> list[BodyRecord]:
        """The bodies logged for one request (of one key), newest first."""

    async def prune_bodies(self, before_day: str, limit: int) -> int:
        """Delete at most ``limit`` bodies of days before ``before_day``; how many."""

    async def close(self) -> None:
        """Release the store (connections, pool)."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs, errors and status)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


DEFAULT_DATABASE = "gateway-usage.sqlite3"


def open_ledger(config: UsageConfig) -> Ledger:
    """The ledger ``config`` describes: its sink and the bound on its queue (not started)."""
    from gateway.ledger import Ledger

    return Ledger(
        open_sink(config),
        max_pending=config.queue_size,
        retention_days=config.retention_days,
        body_retention_days=config.log_bodies.retention_days if config.log_bodies is not None else None,
    )


def open_sink(config: UsageConfig) -> UsageSink:
    """The sink ``config`` (``usage:``) names; nothing is opened until :meth:`UsageSink.start`."""
    if config.sink == "postgres":
        from gateway.ledger_postgres import PostgresSink

        assert config.postgres_url is not None  # checked with the config
        return PostgresSink(config.postgres_url, spill_path=config.spill_path)
    if config.sink == "jsonl":
        from gateway.ledger_jsonl import JsonlSink

        assert config.jsonl_path is not None
        return JsonlSink(config.jsonl_path)
    from gateway.ledger_sqlite import SQLiteSink

    return SQLiteSink(config.database or DEFAULT_DATABASE, spill_path=config.spill_path)
