"""Virtual keys: stored hashed in memory, looked up without comparing raw keys.

Only SHA-256 digests of the keys are kept. A presented key is hashed, its digest's first 8 bytes pick a
bucket in a dict, and the full digest is compared with ``hmac.compare_digest`` (constant time) against the
bucket's entries. Timing depends only on the digest, which an attacker cannot steer toward a stored key,
so it leaks nothing about stored keys, while lookup stays O(1) however many keys there are.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.config import AuthConfig
from gateway.errors import bad_key
from gateway.pipeline import KeyIdentity

MASTER_NAME = "master"


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a key is stored under."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_id(key: str) -> str:
    """A short stable id for a key, safe to log and store (not enough to recover the key)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``x-api-key: <key>``, if any."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


class KeyRing:
    """The configured keys, by digest. The master key may call every model and the admin routes."""

    def __init__(self, config: AuthConfig) -> None:
        self._buckets: dict[bytes, list[tuple[bytes, KeyIdentity]]] = {}
        self._master: bytes | None = None
        for entry in config.keys:
            models = None if entry.models == "*" else frozenset(entry.models)
            identity = KeyIdentity(name=entry.name, key_id=key_id(entry.key), team=entry.team, models=models)
            self._add(key_digest(entry.key), identity)
        if config.master_key:
            self._master = key_digest(config.master_key)
            self._add(
                self._master, KeyIdentity(name=MASTER_NAME, key_id=key_id(config.master_key), is_master=True)
            )

    def _add(self, digest: bytes, identity: KeyIdentity) -> None:
        self._buckets.setdefault(digest[:8], []).append((digest, identity))

    def identify(self, key: str | None) -> KeyIdentity | None:
        """The identity of ``key``, or None when it is unknown."""
        if not key:
            return None
        digest = key_digest(key)
        for stored, identity in self._buckets.get(digest[:8], ()):
            if hmac.compare_digest(stored, digest):
                return identity
        return None

    def authenticate(self, headers: Mapping[str, str]) -> KeyIdentity:
        """The caller's identity from request headers; raises 401 for a missing or unknown key."""
        key = presented_key(headers)
        if key is None:
            raise bad_key("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
        identity = self.identify(key)
        if identity is None:
            raise bad_key()
        return identity

    def is_master(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the master key."""
        key = presented_key(headers)
        if key is None or self._master is None:
            return False
        return hmac.compare_digest(key_digest(key), self._master)
