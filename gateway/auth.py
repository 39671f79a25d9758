"""Virtual keys: held as SHA-256 digests only, looked up without comparing raw keys.

The config holds each key in its stored form ``sha256:<hex>`` (gateway/key_digests.py): the plaintext is
dropped when the file is validated. A presented key is hashed, its digest's first 8 bytes pick a bucket in
a dict, and the full digest is compared with ``hmac.compare_digest`` (constant time) against the bucket's
entries. Timing depends only on the digest, which an attacker cannot steer toward a stored key, so it
leaks nothing about stored keys, while lookup stays O(1) however many keys there are.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.errors import bad_key
from gateway.key_digests import is_stored_form, presented_digest, stored_digest
from gateway.pipeline import KeyIdentity

if TYPE_CHECKING:
    from gateway.config import AuthConfig

MASTER_NAME = "master"


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a presented key is looked up by."""
    return presented_digest(key)


def key_id(key: str) -> str:
    """A short stable id for a key (plaintext or its stored form), safe to log and store (not enough to
    recover the key)."""
    digest = stored_digest(key) if is_stored_form(key) else presented_digest(key)
    return digest.hex()[:16]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer <key>``, ``x-api-key: <key>`` (Anthropic's SDK) or
    ``api-key: <key>`` (Azure OpenAI's), if any."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or headers.get("api-key") or None


class KeyRing:
    """The configured keys, by digest. The master key may call every model and the admin routes."""

    def __init__(self, config: AuthConfig) -> None:
        self._buckets: dict[bytes, list[tuple[bytes, KeyIdentity]]] = {}
        self._master: bytes | None = None
        for entry in config.keys:
            models = None if entry.models == "*" else frozenset(entry.models)
            regions = None if entry.allowed_regions is None else frozenset(entry.allowed_regions)
            identity = KeyIdentity(
                name=entry.name,
                key_id=key_id(entry.key),
                team=entry.team,
                models=models,
                allowed_regions=regions,
            )
            self._add(stored_digest(entry.key), identity)
        if config.master_key:
            self._master = stored_digest(config.master_key)
            self._add(
                self._master, KeyIdentity(name=MASTER_NAME, key_id=key_id(config.master_key), is_master=True)
            )

    def _add(self, digest: bytes, identity: KeyIdentity) -> None:
        self._buckets.setdefault(digest[:8], []).append((digest, identity))

    def identify(self, key: str | None) -> KeyIdentity | None:
        """The identity of ``key``, or None when it is unknown."""
        if not key:
            return None
        return self.identify_digest(key_digest(key))

    def identify_digest(self, digest: bytes) -> KeyIdentity | None:
        """The identity of the key whose digest is ``digest`` (a WebSocket keeps only that), or None."""
        for stored, identity in self._buckets.get(digest[:8], ()):
            if hmac.compare_digest(stored, digest):
                return identity
        return None

    def authenticate(self, headers: Mapping[str, str]) -> KeyIdentity:
        """The caller's identity from request headers; raises 401 for a missing or unknown key."""
        key = presented_key(headers)
        if key is None:
            raise bad_key(
                "Missing API key: send 'Authorization: Bearer <key>', 'x-api-key: <key>' or 'api-key: <key>'."
            )
        identity = self.identify(key)
        if identity is None:
            raise bad_key()
        return identity

    def is_master_digest(self, digest: bytes) -> bool:
        """Whether ``digest`` is the master key's."""
        return self._master is not None and hmac.compare_digest(digest, self._master)

    def is_master(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the master key."""
        key = presented_key(headers)
        if key is None or self._master is None:
            return False
        return hmac.compare_digest(key_digest(key), self._master)
