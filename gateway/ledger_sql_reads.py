"""The reads both SQL sinks answer the same way: only the placeholder style and how a query runs differ.

SQLite (``?``, a thread) and PostgreSQL (``$1``, an asyncpg pool) build every query with gateway/usage_sql.py;
this base class holds the one implementation of each read, over two things a sink provides: its
``placeholder`` and ``_rows(sql, params)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gateway import usage_sql
from gateway.usage_bodies import BodyRecord
from gateway.usage_record import UsageRecord, record_from_row


class SqlReads:
    """Spend, summaries, records and bodies read from the usage tables of an SQL database."""

    placeholder: usage_sql.Placeholder
    # The floor of a non-negative number in the database's dialect (``{}`` where the number goes).
    floor: str

    async def _rows(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """The rows ``sql`` answers; raises LedgerUnavailable when the database cannot be read."""
        raise NotImplementedError

    async def spend_nanos(self, *, key_name: str | None, team: str | None, since: float) -> int:
        """Total cost since ``since`` of one key or team (the rollup adds the days retention deleted)."""
        column, value = ("key_name", key_name) if key_name is not None else ("team", team)
        sql, params = usage_sql.spend(self.placeholder, column, value or "", since)
        total = int((await self._rows(sql, params))[0][0])
        pruned = await self._rows("SELECT before_day FROM usage_pruned WHERE id = 1", ())
        if pruned and since < usage_sql.pruned_horizon(pruned[0][0]):
            sql, params = usage_sql.pruned_spend(self.placeholder, column, value or "", pruned[0][0])
            total += int((await self._rows(sql, params))[0][0])
        return total

    async def daily_summary(
        self, group_by: Sequence[str], *, first_day: str | None, last_day: str | None, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Aggregates per group of the whole days ``[first_day, last_day]``, from the rollup."""
        sql, params = usage_sql.daily_summary(
            self.placeholder, group_by, first_day=first_day, last_day=last_day, key_name=key_name
        )
        return usage_sql.summary_rows(group_by, await self._rows(sql, params))

    async def summary(
        self, group_by: Sequence[str], *, since: float | None, until: float | None, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Aggregates per group in ``[since, until)`` (see :func:`gateway.usage_sql.summary`)."""
        sql, params = usage_sql.summary(
            self.placeholder, group_by, since=since, until=until, key_name=key_name
        )
        return usage_sql.summary_rows(group_by, await self._rows(sql, params))

    async def buckets(
        self, *, since: float, until: float, width: float, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Aggregates per ``width``-second bucket of ``[since, until)`` (:func:`usage_sql.bucket_rows`)."""
        sql, params = usage_sql.buckets(
            self.placeholder, self.floor, since=since, until=until, width=width, key_name=key_name
        )
        count = max(0, math.ceil((until - since) / width))
        return usage_sql.bucket_rows(await self._rows(sql, params), since, width, count)

    async def records(
        self, *, request_id: str | None, key_name: str | None, limit: int, trace_id: str | None = None
    ) -> list[UsageRecord]:
        """The newest ``limit`` records of one request, key and/or trace id."""
        sql, params = usage_sql.records(
            self.placeholder, request_id=request_id, key_name=key_name, limit=limit, newest="id",
            trace_id=trace_id,
        )  # fmt: skip
        return [record_from_row(row) for row in await self._rows(sql, params)]

    async def bodies(self, *, request_id: str, key_name: str | None) -> list[BodyRecord]:
        """The bodies logged for one request, newest first."""
        sql, params = usage_sql.bodies(self.placeholder, request_id, key_name)
        return [BodyRecord(*tuple(row)) for row in await self._rows(sql, params)]
