"""Console sessions: a random id in the cookie, the admin caller and its CSRF token on the server.

The admin key a login presented is never stored: the session holds the :class:`AdminPrincipal` it
authenticated as. Sessions are kept in this process's memory (one replica's login does not hold on
another; a restart logs everyone out), each ends ``ttl`` seconds after login, and past ``limit`` sessions
the oldest is dropped.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.admin.access import AdminPrincipal


def new_token() -> str:
    """A random token for a session id or a CSRF token (256 bits)."""
    return secrets.token_urlsafe(32)


def same_token(presented: str | None, expected: str | None) -> bool:
    """Whether ``presented`` is ``expected``, compared in constant time; an empty or missing one never is."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True)
class Session:
    """One logged-in admin: who, the CSRF token its forms carry, and when it ends (Unix seconds)."""

    id: str
    principal: AdminPrincipal
    csrf: str
    expires: float


class Sessions:
    """The console's sessions; ``clock`` is replaceable for tests."""

    def __init__(
        self, ttl: Callable[[], int], limit: Callable[[], int], clock: Callable[[], float] = time.time
    ) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._ttl = ttl
        self._limit = limit
        self._clock = clock

    def open(self, principal: AdminPrincipal) -> Session:
        """A new session for ``principal`` (never reusing an id a client sent: no session fixation)."""
        session = Session(new_token(), principal, new_token(), self._clock() + self._ttl())
        self._sessions[session.id] = session
        while len(self._sessions) > self._limit():
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, or expired: then it is forgotten)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        """End a session (logout)."""
        self._sessions.pop(session_id, None)
