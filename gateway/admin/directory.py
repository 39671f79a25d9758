"""The request path's view of runtime keys: lookups by digest, cached, never staler than the sync interval.

Propagation between replicas is a **polled version counter**, not pub/sub: every change bumps one counter
in the admin store (same atomic step as the change); before answering from its cache a replica re-reads
the counter if it last did more than ``sync_interval_s`` ago (0.5 s by default), and drops the whole cache
when it moved. So a revocation on one replica is honoured by every other within the interval, with no
subscriber connection to lose messages on, and it costs one GET per replica per interval while requests
arrive (none when idle). A miss is looked up in the store directly, so a key created on one replica works
on another at once.

A runtime key's identity carries what its runtime team brings (budget, model list, rpm/tpm), read through
the same cache, so a team change reaches every replica within the same interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from gateway.admin.records import KeyRecord, TeamRecord
from gateway.admin.store import AdminStore
from gateway.auth import KeyRing, key_digest, presented_key
from gateway.errors import bad_key
from gateway.pipeline import KeyIdentity

# Negative answers are cached too (unknown keys would otherwise each cost a store read); bounded.
MAX_CACHED = 10_000


class KeyDirectory:
    """Runtime keys by digest for authentication, over an :class:`AdminStore`."""

    def __init__(
        self,
        store: AdminStore,
        sync_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sync_interval_s = sync_interval_s
        self._clock = clock
        self._wall = wall
        self._cache: dict[str, KeyRecord | None] = {}
        # Runtime teams by name, dropped with the key cache when the version moves (team changes bump it).
        self._teams: dict[str, TeamRecord | None] = {}
        self._version: int | None = None
        self._checked = float("-inf")
        self._sync_lock = asyncio.Lock()

    async def identify(self, digest: bytes) -> KeyIdentity | None:
        """The identity of the runtime key whose secret hashes to ``digest`` (current, or previous within
        its grace period; not revoked, not expired), or None."""
        await self._sync()
        hexdigest = digest.hex()
        if hexdigest in self._cache:
            record = self._cache[hexdigest]
        else:
            record = await self.store.key_by_digest(hexdigest)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[hexdigest] = record
        if record is None or not record.accepts(hexdigest, self._wall()):
            return None
        return record.identity(None if record.team is None else await self._team(record.team))

    async def _team(self, name: str) -> TeamRecord | None:
        if name not in self._teams:
            if len(self._teams) >= MAX_CACHED:
                self._teams.clear()
            self._teams[name] = await self.store.team(name)
        return self._teams[name]

    def forget(self) -> None:
        """Drop cached lookups now (this replica just changed a key)."""
        self._cache.clear()
        self._teams.clear()
        self._checked = float("-inf")

    async def _sync(self) -> None:
        if self._clock() - self._checked < self.sync_interval_s:
            return
        async with self._sync_lock:  # one store read for every request waiting on the same check
            if self._clock() - self._checked < self.sync_interval_s:
                return
            version = await self.store.version()
            if version != self._version:
                self._cache.clear()
                self._teams.clear()
                self._version = version
            self._checked = self._clock()


async def identify_key(keys: KeyRing, directory: KeyDirectory, digest: bytes) -> KeyIdentity | None:
    """The caller with key digest ``digest``: a config-file key first (no I/O), then a runtime key."""
    return keys.identify_digest(digest) or await directory.identify(digest)


async def authenticate(keys: KeyRing, directory: KeyDirectory, headers: Mapping[str, str]) -> KeyIdentity:
    """The caller's identity from request headers (config or runtime key); 401 when missing or unknown."""
    key = presented_key(headers)
    if key is None:
        raise bad_key("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
    identity = await identify_key(keys, directory, key_digest(key))
    if identity is None:
        raise bad_key()
    return identity
