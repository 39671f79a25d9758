"""Console sessions: a random id in the cookie, the admin caller and its CSRF token in the state store.

The session lives in the gateway's state store (:mod:`gateway.stores`), so replicas sharing Redis share
logins (no sticky sessions needed) and a restart of one logs nobody out; with the memory store they stay
per process. The store's key is a SHA-256 digest of the session id, never the id itself: whoever can read
the store (or its keys in a log) cannot present a session. The value is who logged in (the admin caller's
id, name and scopes), the session's CSRF token, when it ends, and which credential it logged in with
(the admin key's id, or a fingerprint of the master key's stored digest); the store expires it ``ttl``
seconds after login, and logout deletes it.

The admin key a login presented is never stored. Every use of a session checks that credential against
the running configuration: a session whose admin key was removed, re-keyed or given other scopes (or whose
master key changed) ends at its next request, on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.admin.access import MASTER, AdminPrincipal
from gateway.auth import key_id
from gateway.stores import Store, store_key

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def new_token() -> str:
    """A random token for a session id or a CSRF token (256 bits)."""
    return secrets.token_urlsafe(32)


def same_token(presented: str | None, expected: str | None) -> bool:
    """Whether ``presented`` is ``expected``, compared in constant time; an empty or missing one never is."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def credential_of(config: GatewayConfig, principal: AdminPrincipal) -> str | None:
    """Which configured credential ``principal`` stands for now: the admin key's id (its principal id), or
    the master key's fingerprint; None when the running configuration has no such credential."""
    if principal.id == MASTER.id:
        master = config.auth.master_key
        return f"master_{key_id(master)}" if master else None
    for entry in config.admin.keys:
        if f"adm_{key_id(entry.key)}" == principal.id:
            return principal.id
    return None


def current_principal(config: GatewayConfig, principal: AdminPrincipal, credential: str) -> bool:
    """Whether ``principal``, logged in with ``credential``, is still that admin with those scopes."""
    if credential_of(config, principal) != credential:
        return False
    if principal.id == MASTER.id:
        return principal == MASTER
    entry = next(e for e in config.admin.keys if f"adm_{key_id(e.key)}" == principal.id)
    return entry.name == principal.name and frozenset(entry.scopes) == principal.scopes


@dataclass(frozen=True)
class Session:
    """One logged-in admin: who, the CSRF token its forms carry, and when it ends (Unix seconds)."""

    id: str
    principal: AdminPrincipal
    csrf: str
    expires: float
    credential: str


def _key(session_id: str) -> str:
    return store_key("console", "session", hashlib.sha256(session_id.encode()).hexdigest())


class Sessions:
    """The console's sessions in ``store()``; ``valid(principal, credential)`` says whether a session's admin
    still stands (the running configuration's); ``clock`` is replaceable for tests."""

    def __init__(
        self,
        store: Callable[[], Store],
        ttl: Callable[[], int],
        valid: Callable[[AdminPrincipal, str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._valid = valid
        self._clock = clock

    async def open(self, principal: AdminPrincipal, credential: str) -> Session:
        """A new session for ``principal`` (never reusing an id a client sent: no session fixation)."""
        ttl = self._ttl()
        session = Session(new_token(), principal, new_token(), self._clock() + ttl, credential)
        value = {
            "admin": {"id": principal.id, "name": principal.name, "scopes": sorted(principal.scopes)},
            "csrf": session.csrf,
            "expires": session.expires,
            "credential": credential,
        }
        await self._store().set(_key(session.id), json.dumps(value).encode(), ttl=ttl)
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None: unknown, expired, or its admin credential no longer
        stands (then it is deleted)."""
        if not session_id or len(session_id) > 100:
            return None
        raw = await self._store().get(_key(session_id))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            admin = value["admin"]
            principal = AdminPrincipal(id=admin["id"], name=admin["name"], scopes=frozenset(admin["scopes"]))
            session = Session(
                session_id, principal, value["csrf"], float(value["expires"]), value["credential"]
            )
        except (ValueError, KeyError, TypeError):  # not a value this module wrote: no session
            return None
        if session.expires <= self._clock() or not self._valid(principal, session.credential):
            await self.close(session_id)
            return None
        return session

    async def close(self, session_id: str) -> None:
        """End a session (logout)."""
        await self._store().delete(_key(session_id))
