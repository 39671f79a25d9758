"""How virtual keys and the master key are held: as SHA-256 digests, never as the key itself.

The config loader replaces each key with its stored form ``sha256:<64 hex digits>`` as soon as the value is
validated, so no plaintext key outlives loading the file. A file may also give a key in that form already
(``key: "sha256:..."``), so the plaintext need not be in the file either. A key a client presents is always
hashed (:func:`presented_digest`): a stored form is never accepted as a key, knowing a digest is not
knowing the key.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "sha256:"
_STORED = re.compile(r"sha256:[0-9a-f]{64}")


def stored_form(key: str) -> str:
    """``key`` as it is held in memory: ``sha256:<hex>`` (a value already in that form is kept)."""
    if _STORED.fullmatch(key):
        return key
    return PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_stored_form(value: str) -> bool:
    """Whether ``value`` is a digest in the stored form."""
    return _STORED.fullmatch(value) is not None


def stored_digest(stored: str) -> bytes:
    """The 32-byte digest of a key held in its stored form."""
    return bytes.fromhex(stored_form(stored)[len(PREFIX) :])


def presented_digest(key: str) -> bytes:
    """The digest of a key a client presented (always hashed, whatever it looks like)."""
    return hashlib.sha256(key.encode("utf-8")).digest()
