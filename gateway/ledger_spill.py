"""The ledger's spill file: where usage records wait, as JSON lines, while the database cannot take them.

A record that cannot be written (disk full, a read-only or locked file, a database that vanished) is money
that was spent: it is appended here instead of being dropped or held in memory, and the ledger replays the
file into the database at its next successful write or at its next start. The file sits next to the
database (``<database>-spill.jsonl``), so an operator finds both together.

Replay writes the records in one transaction and then removes the file: a crash between the two replays the
same records again at the next start, which over-counts (the safe side for a budget) rather than losing them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.ledger import UsageRecord


class SpillFile:
    """Append-only JSON lines of :class:`~gateway.ledger.UsageRecord` at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        """Whether records are waiting in the file."""
        return self.path.exists()

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Append ``records`` durably (fsynced); OSError when the file cannot be written."""
        text = "".join(json.dumps(asdict(record), separators=(",", ":")) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())

    def load(self, record_type: type[UsageRecord]) -> tuple[list[UsageRecord], int]:
        """The records in the file and how many lines could not be read (a torn last line, an edit)."""
        names = {f.name for f in fields(record_type)}
        records: list[UsageRecord] = []
        bad = 0
        with self.path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    values: Any = json.loads(line)
                    records.append(record_type(**{k: v for k, v in values.items() if k in names}))
                except (ValueError, TypeError, AttributeError):
                    bad += 1
        return records, bad

    def remove(self) -> None:
        """Delete the file (its records are in the database now)."""
        self.path.unlink(missing_ok=True)
