"""Where runtime keys, the audit log and idempotency claims live: one small interface, two backends.

:class:`AdminStore` is implemented by :class:`~gateway.admin.sqlite_store.SQLiteAdminStore` (the default:
a file beside the usage ledger's) and :class:`~gateway.admin.redis_store.RedisAdminStore` (when
``state.redis_url`` is set, so every replica sees the same keys). Every change to a key or a team bumps one
``version`` counter in the same atomic step; replicas poll it to drop their cached lookups
(gateway/admin/directory.py), which is how a revocation on one replica reaches the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.admin.records import KeyRecord, TeamRecord

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True)
class IdempotencyClaim:
    """What a create with an ``Idempotency-Key`` left behind: the hash of its body and what to replay."""

    body_hash: str
    payload: dict[str, Any]


class AdminStore(Protocol):
    """Persistence of the admin API. Implementations are safe for concurrent use from one event loop."""

    backend: str

    async def version(self) -> int:
        """A counter every key change increments (replicas compare it to notice changes)."""

    async def insert_key(self, record: KeyRecord) -> None:
        """Add a new key record (indexed by id and digest) and bump the version."""

    async def replace_key(self, record: KeyRecord, revision: int) -> bool:
        """Store ``record`` if the stored one still has ``revision`` (compare and set); index its digests;
        bump the version. False when the stored revision differs (a concurrent change) or it is gone."""

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        """The record with ``key_id``, or None."""

    async def key_by_digest(self, digest: str) -> KeyRecord | None:
        """The record whose current or previous secret has the hex ``digest``, or None."""

    async def list_keys(self, after: str | None, limit: int) -> list[KeyRecord]:
        """Up to ``limit`` records with ids greater than ``after``, in id (creation) order."""

    async def append_audit(self, entry: dict[str, Any]) -> int:
        """Append an audit entry; returns its sequence number (1, 2, ...)."""

    async def list_audit(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` audit entries with sequence numbers greater than ``after``, oldest first."""

    async def claim(self, token: str, claim: IdempotencyClaim, ttl_s: int) -> IdempotencyClaim | None:
        """Record ``claim`` under ``token`` unless one is there; returns the existing claim, or None if
        this one was recorded."""

    async def insert_team(self, record: TeamRecord) -> bool:
        """Add a runtime team and bump the version; False when one with that name exists."""

    async def replace_team(self, record: TeamRecord, revision: int) -> bool:
        """Store ``record`` if the stored team still has ``revision`` (compare and set); bump the version.
        False when the stored revision differs or the team is gone."""

    async def delete_team(self, name: str, revision: int) -> bool:
        """Delete the team if it still has ``revision``; bump the version. False otherwise."""

    async def team(self, name: str) -> TeamRecord | None:
        """The runtime team called ``name``, or None."""

    async def list_teams(self, after: str | None, limit: int) -> list[TeamRecord]:
        """Up to ``limit`` runtime teams with names greater than ``after``, in name order."""

    async def close(self) -> None:
        """Release connections."""


def open_admin_store(config: GatewayConfig) -> AdminStore:
    """Redis when ``state.redis_url`` is set (replicas share keys), else SQLite beside the usage ledger.

    With ``state.global_redis_url`` (multi-region) the keys live there: a key made in one region works in all.
    """
    url = config.state.global_redis_url or config.state.redis_url
    if url:
        from gateway.admin.redis_store import RedisAdminStore

        return RedisAdminStore(url, timeout=config.state.timeout_seconds)
    from gateway.admin.sqlite_store import SQLiteAdminStore
    from gateway.usage_sink import DEFAULT_DATABASE

    return SQLiteAdminStore(
        config.admin.database or admin_database_beside(config.usage.database or DEFAULT_DATABASE)
    )


def admin_database_beside(ledger: str) -> str:
    """The admin database's default path: beside the ledger's file (in memory with an in-memory ledger)."""
    if ledger == ":memory:":
        return ":memory:"
    stem = ledger.removesuffix(".sqlite3").removesuffix(".db")
    return f"{stem}-admin.sqlite3"
