"""Who may call ``/admin/v1``: the master key (every scope) and admin keys (their scopes).

A missing or unknown credential is 401, a known credential without the scope a route needs is 403 (a
virtual key is known but has no admin scope). Failed attempts are counted per client address in the
shared store; past ``admin.failed_auth_limit`` within ``admin.failed_auth_window_s`` the address gets 429
with ``retry-after`` for the rest of the window, even with a right key, so guessing does not pay.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.admin.config import AdminConfig
from gateway.auth import KeyRing, key_digest, key_id, presented_key
from gateway.errors import GatewayError
from gateway.key_digests import stored_digest
from gateway.stores import Store, store_key
from gateway.stores.ops import INCR_WINDOW

ALL = "*"


@dataclass(frozen=True)
class AdminPrincipal:
    """An authenticated admin caller: its id and name (for the audit log) and its scopes."""

    id: str
    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        """Whether this caller holds ``scope`` (``*`` holds every scope)."""
        return ALL in self.scopes or scope in self.scopes


MASTER = AdminPrincipal(id="master", name="master", scopes=frozenset({ALL}))


def unauthenticated(message: str) -> GatewayError:
    """401 in the gateway's envelope."""
    return GatewayError(401, message, "authentication_error", "invalid_api_key")


def forbidden(scope: str) -> GatewayError:
    """403: the credential is known but lacks ``scope``."""
    return GatewayError(
        403, f"This credential lacks the '{scope}' scope.", "permission_error", "insufficient_scope"
    )


def admin_principal(config: AdminConfig, keys: KeyRing, digest: bytes) -> AdminPrincipal | None:
    """The admin caller whose key hashes to ``digest``: the master key or a configured admin key."""
    if keys.is_master_digest(digest):
        return MASTER
    for entry in config.keys:
        if hmac.compare_digest(stored_digest(entry.key), digest):
            return AdminPrincipal(
                id=f"adm_{key_id(entry.key)}", name=entry.name, scopes=frozenset(entry.scopes)
            )
    return None


class FailedLogins:
    """Counts failed admin authentications per client address in the shared store (so replicas agree)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def check(self, client: str, config: AdminConfig) -> None:
        """429 while ``client`` is blocked."""
        if await self.store.get(store_key("adminauth", "blocked", client)) is not None:
            raise self._blocked_error(config.failed_auth_window_s)

    async def failed(self, client: str, config: AdminConfig) -> None:
        """Count one failure; block ``client`` for the window once it exceeds the limit."""
        window_ms = config.failed_auth_window_s * 1000
        [count] = await self.store.run(INCR_WINDOW, [store_key("adminauth", "failed", client)], [window_ms])
        if count > config.failed_auth_limit:
            await self.store.set(
                store_key("adminauth", "blocked", client), b"1", ttl=config.failed_auth_window_s
            )
            raise self._blocked_error(config.failed_auth_window_s)

    @staticmethod
    def _blocked_error(retry_after: int) -> GatewayError:
        return GatewayError(
            429,
            "Too many failed admin authentications from this address; try again later.",
            "rate_limit_error",
            "too_many_failed_authentications",
            headers={"retry-after": str(retry_after)},
        )


async def authenticate(
    headers: Mapping[str, str],
    client: str,
    *,
    config: AdminConfig,
    keys: KeyRing,
    failures: FailedLogins,
    is_virtual_key: Callable[[bytes], Awaitable[bool]],
) -> AdminPrincipal:
    """The admin caller of a request, or 401/403/429 (see the module docstring).

    ``is_virtual_key(digest)`` says whether the presented key is a (config or runtime) virtual key: known,
    so a 403 rather than a failed login.
    """
    await failures.check(client, config)
    key = presented_key(headers)
    if key is None:
        await failures.failed(client, config)
        raise unauthenticated("The admin API needs a key: send 'Authorization: Bearer <admin key>'.")
    digest = key_digest(key)
    principal = admin_principal(config, keys, digest)
    if principal is not None:
        return principal
    if await is_virtual_key(digest):
        raise GatewayError(
            403, "Virtual keys cannot call the admin API.", "permission_error", "insufficient_scope"
        )
    await failures.failed(client, config)
    raise unauthenticated("Invalid admin key.")
