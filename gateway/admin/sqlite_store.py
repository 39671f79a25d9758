"""The SQLite admin store: runtime keys, audit log and idempotency claims in one file.

Each call runs on a worker thread under a lock (the event loop never waits on disk), and each change
is one transaction that also bumps the version counter. Several processes may share the file: SQLite's
own locking keeps them consistent and the version counter tells each one about the others' changes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.admin.records import KeyRecord, TeamRecord
from gateway.admin.store import IdempotencyClaim

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS admin_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT OR IGNORE INTO admin_version (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS virtual_keys (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, previous_digest TEXT, revision INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS virtual_keys_previous ON virtual_keys (previous_digest);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS teams (name TEXT PRIMARY KEY, team TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    token TEXT PRIMARY KEY, body_hash TEXT NOT NULL, payload TEXT NOT NULL, expires_at REAL NOT NULL
);
"""

_BUMP = "UPDATE admin_version SET version = version + 1 WHERE id = 1"


class SQLiteAdminStore:
    """An :class:`~gateway.admin.store.AdminStore` in the SQLite file at ``path`` (``:memory:`` too)."""

    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._connection())

        return await asyncio.to_thread(locked)

    async def version(self) -> int:
        """The change counter."""
        return await self._run(lambda c: int(c.execute("SELECT version FROM admin_version").fetchone()[0]))

    async def insert_key(self, record: KeyRecord) -> None:
        """Add ``record`` and bump the version, in one transaction."""

        def work(c: sqlite3.Connection) -> None:
            with _transaction(c):
                c.execute(
                    "INSERT INTO virtual_keys (id, digest, previous_digest, revision, record) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.digest,
                        record.previous_digest,
                        record.revision,
                        record.model_dump_json(),
                    ),
                )
                c.execute(_BUMP)

        await self._run(work)

    async def replace_key(self, record: KeyRecord, revision: int) -> bool:
        """Compare-and-set on the stored revision."""

        def work(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                cursor = c.execute(
                    "UPDATE virtual_keys SET digest = ?, previous_digest = ?, revision = ?, record = ? "
                    "WHERE id = ? AND revision = ?",
                    (record.digest, record.previous_digest, record.revision, record.model_dump_json(),
                     record.id, revision),
                )  # fmt: skip
                if cursor.rowcount != 1:
                    return False
                c.execute(_BUMP)
                return True

        return await self._run(work)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        """The record with ``key_id``."""
        return await self._one("SELECT record FROM virtual_keys WHERE id = ?", (key_id,))

    async def key_by_digest(self, digest: str) -> KeyRecord | None:
        """The record whose current or previous secret has ``digest``."""
        return await self._one(
            "SELECT record FROM virtual_keys WHERE digest = ? UNION ALL "
            "SELECT record FROM virtual_keys WHERE previous_digest = ? LIMIT 1",
            (digest, digest),
        )

    async def _one(self, sql: str, args: tuple[Any, ...]) -> KeyRecord | None:
        row = await self._run(lambda c: c.execute(sql, args).fetchone())
        return None if row is None else KeyRecord.model_validate_json(row[0])

    async def list_keys(self, after: str | None, limit: int) -> list[KeyRecord]:
        """Records after ``after`` in id order."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT record FROM virtual_keys WHERE id > ? ORDER BY id LIMIT ?", (after or "", limit)
            ).fetchall()
        )
        return [KeyRecord.model_validate_json(row[0]) for row in rows]

    async def append_audit(self, entry: dict[str, Any]) -> int:
        """Append ``entry``; its sequence number is SQLite's row id."""

        def work(c: sqlite3.Connection) -> int:
            cursor = c.execute("INSERT INTO audit (entry) VALUES (?)", (json.dumps(entry),))
            return int(cursor.lastrowid or 0)

        return await self._run(work)

    async def list_audit(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Entries after ``after``, oldest first, each with its ``seq``."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT seq, entry FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        )
        return [{"seq": seq, **json.loads(entry)} for seq, entry in rows]

    async def claim(self, token: str, claim: IdempotencyClaim, ttl_s: int) -> IdempotencyClaim | None:
        """Insert the claim unless a live one holds ``token``."""

        def work(c: sqlite3.Connection) -> IdempotencyClaim | None:
            now = time.time()
            with _transaction(c):
                c.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
                row = c.execute(
                    "SELECT body_hash, payload FROM idempotency WHERE token = ?", (token,)
                ).fetchone()
                if row is not None:
                    return IdempotencyClaim(row[0], json.loads(row[1]))
                c.execute(
                    "INSERT INTO idempotency (token, body_hash, payload, expires_at) VALUES (?, ?, ?, ?)",
                    (token, claim.body_hash, json.dumps(claim.payload), now + ttl_s),
                )
                return None

        return await self._run(work)

    async def insert_team(self, record: TeamRecord) -> bool:
        """Insert unless the name is taken; bump the version."""

        def work(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                cursor = c.execute(
                    "INSERT OR IGNORE INTO teams (name, team) VALUES (?, ?)",
                    (record.name, record.model_dump_json()),
                )
                if cursor.rowcount != 1:
                    return False
                c.execute(_BUMP)
                return True

        return await self._run(work)

    async def replace_team(self, record: TeamRecord, revision: int) -> bool:
        """Compare-and-set on the stored revision (read and written in one transaction)."""
        return await self._team_change(record.name, revision, record.model_dump_json())

    async def delete_team(self, name: str, revision: int) -> bool:
        """Delete if the stored revision is ``revision``."""
        return await self._team_change(name, revision, None)

    async def _team_change(self, name: str, revision: int, team: str | None) -> bool:
        def work(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                row = c.execute("SELECT team FROM teams WHERE name = ?", (name,)).fetchone()
                if row is None or TeamRecord.parse(row[0]).revision != revision:
                    return False
                if team is None:
                    c.execute("DELETE FROM teams WHERE name = ?", (name,))
                else:
                    c.execute("UPDATE teams SET team = ? WHERE name = ?", (team, name))
                c.execute(_BUMP)
                return True

        return await self._run(work)

    async def team(self, name: str) -> TeamRecord | None:
        """The team called ``name``."""
        row = await self._run(
            lambda c: c.execute("SELECT team FROM teams WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else TeamRecord.parse(row[0])

    async def list_teams(self, after: str | None, limit: int) -> list[TeamRecord]:
        """Teams after ``after`` in name order."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT team FROM teams WHERE name > ? ORDER BY name LIMIT ?", (after or "", limit)
            ).fetchall()
        )
        return [TeamRecord.parse(row[0]) for row in rows]

    async def close(self) -> None:
        """Close the database."""

        def work() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(work)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
