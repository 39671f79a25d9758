"""``usage:`` in the gateway config: which sink the usage ledger writes to, and where.

Owned here, next to the sinks (:mod:`gateway.usage_sink`), and composed into the config by
:mod:`gateway.config`. Every problem names its key (``usage.postgres_url``...), and the Postgres URL's
password is never repeated in an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.usage_bodies import LogBodiesConfig


def _writable_file(value: str, example: str) -> str:
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"'{value}' is a directory; give a file path such as '{path / example}'")
    if not path.parent.is_dir():
        raise ValueError(f"the directory '{path.parent}' does not exist")
    return value


class UsageConfig(BaseModel):
    """``usage:`` the usage ledger's sink.

    ``sink`` is ``sqlite`` (default: ``database``, a file path relative to the working directory or
    ``":memory:"``, unset meaning ``gateway-usage.sqlite3``), ``postgres`` (``postgres_url``, shared by every
    replica) or ``jsonl`` (``jsonl_path``, appended for a log shipper). ``spill_path`` is where batches the
    sink refused wait (default ``<database>-spill.jsonl`` for SQLite; none, so memory, for the others);
    ``queue_size`` bounds the records waiting in memory; ``retention_days`` how long raw records are kept.
    """

    model_config = ConfigDict(extra="forbid")

    sink: Literal["sqlite", "postgres", "jsonl"] = "sqlite"
    database: str | None = None
    postgres_url: str | None = Field(default=None, validate_default=True)
    jsonl_path: str | None = Field(default=None, validate_default=True)
    spill_path: str | None = None
    # Records waiting in memory at most (while the sink and the spill file refuse them); beyond it the
    # oldest are dropped and counted in gateway_usage_dropped_total. A record is a few hundred bytes.
    queue_size: int = Field(default=100_000, gt=0)
    # Raw records older than this many days are deleted hourly; the daily rollup keeps their totals. At
    # least 35 so every budget window but `total` restores from raw rows; null keeps raw rows forever.
    retention_days: int | None = Field(default=90, ge=35)
    # Prompts and answers, redacted, in their own table with their own retention (gateway/usage_bodies.py).
    log_bodies: LogBodiesConfig | None = None

    @field_validator("log_bodies")
    @classmethod
    def _bodies_need_a_table(
        cls, value: LogBodiesConfig | None, info: ValidationInfo
    ) -> LogBodiesConfig | None:
        if value is not None and info.data.get("sink") == "jsonl":
            raise ValueError("needs usage.sink sqlite or postgres (bodies are kept in a table of their own)")
        return value

    @field_validator("database")
    @classmethod
    def _writable_place(cls, value: str | None) -> str | None:
        # Checked here so a wrong path is a config error at start, not a traceback from the ledger.
        if value is None or value == ":memory:":
            return value
        return _writable_file(value, "usage.sqlite3")

    @field_validator("postgres_url")
    @classmethod
    def _postgres_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("sink") == "postgres" and not value:
            raise ValueError("required when usage.sink is postgres (postgresql://user:password@host:5432/db)")
        if value and not value.startswith(("postgresql://", "postgres://")):
            # The value is not repeated: it may hold a password.
            raise ValueError("must start with postgresql:// or postgres://")
        return value or None

    @field_validator("jsonl_path")
    @classmethod
    def _jsonl_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("sink") == "jsonl" and not value:
            raise ValueError("required when usage.sink is jsonl (a file a log shipper tails)")
        return _writable_file(value, "usage.jsonl") if value else None

    @field_validator("spill_path")
    @classmethod
    def _spill_path(cls, value: str | None) -> str | None:
        return _writable_file(value, "usage-spill.jsonl") if value else None
