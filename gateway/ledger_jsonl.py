"""The JSONL usage sink: one JSON object per record appended to a file, for a log shipper to tail.

Rotation-safe: the file is opened by name for each batch (append mode) and closed after it, so when a
rotator renames or deletes it the next batch creates a new file at the path, and no batch is written into a
rotated file after the rotation. Each batch is written with one ``write`` call and fsynced, so a shipper
never reads half a batch written before a crash. The ledger writes batches one at a time.

The sink keeps nothing it can query: its read methods raise :class:`LedgerNotQueryable`, so
``/admin/usage`` says so and budgets start from the state store alone.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.usage_bodies import BodyRecord
from gateway.usage_record import LedgerError, LedgerNotQueryable, UsageRecord


class JsonlSink:
    """Appends records as JSON lines to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.location = path
        # The file is the store: a batch that cannot be appended stays in the ledger's bounded memory queue.
        self.spill_path: str | None = None
        self.reopened = 0

    async def start(self) -> None:
        """Check that the directory exists and the file can be appended to."""
        try:
            await asyncio.to_thread(self._append, "")
        except OSError as exc:
            raise LedgerError(f"cannot open the usage log '{self.path}': {exc}") from None

    def _append(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            if text:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())

    async def write_batch(self, records: Sequence[UsageRecord]) -> None:
        """Append ``records``, one JSON object per line."""
        text = "".join(
            json.dumps(asdict(r), separators=(",", ":"), ensure_ascii=False) + "\n" for r in records
        )
        await asyncio.to_thread(self._append, text)

    def _not_queryable(self) -> LedgerNotQueryable:
        return LedgerNotQueryable(
            f"usage.sink is jsonl: records are appended to '{self.path}' for a log pipeline and cannot be "
            "queried here"
        )

    async def spend_nanos(self, *, key_name: str | None, team: str | None, since: float) -> int:
        """Not available: raises :class:`LedgerNotQueryable`."""
        raise self._not_queryable()

    async def summary(
        self, group_by: Sequence[str], *, since: float | None, until: float | None, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Not available: raises :class:`LedgerNotQueryable`."""
        raise self._not_queryable()

    async def buckets(
        self, *, since: float, until: float, width: float, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Not available: raises :class:`LedgerNotQueryable`."""
        raise self._not_queryable()

    async def records(
        self, *, request_id: str | None, key_name: str | None, limit: int, trace_id: str | None = None
    ) -> list[UsageRecord]:
        """Not available: raises :class:`LedgerNotQueryable`."""
        raise self._not_queryable()

    async def daily_summary(
        self, group_by: Sequence[str], *, first_day: str | None, last_day: str | None, key_name: str | None
    ) -> list[dict[str, Any]]:
        """Not available: raises :class:`LedgerNotQueryable`."""
        raise self._not_queryable()

    async def prune(self, before_day: str, limit: int) -> int:
        """Nothing to delete: the log shipper's own retention (and the rotator) owns the file."""
        return 0

    async def write_bodies(self, bodies: Sequence[BodyRecord]) -> None:
        """Not available (the config refuses ``log_bodies`` with this sink): raises :class:`LedgerError`."""
        raise LedgerError("usage.log_bodies needs usage.sink sqlite or postgres")

    async def bodies(self, *, request_id: str, key_name: str | None) -> list[BodyRecord]:
        """Not available: raises :class:`LedgerNotQueryable`."""
        raise self._not_queryable()

    async def prune_bodies(self, before_day: str, limit: int) -> int:
        """Nothing to delete."""
        return 0

    async def close(self) -> None:
        """Nothing stays open between batches."""
