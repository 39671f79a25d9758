"""Who calls ``/graphql``: the same credentials as the REST API, resolved once per request.

A virtual key (config file or runtime) is a tenant: it reads its own key, the models it may use, its own
usage and budget. The master key and admin keys (``admin.keys``) read and change what their scopes allow,
exactly as on ``/admin/v1``. Unknown credentials count as failed admin logins (an admin key could be
guessed here as well as on ``/admin/v1``), so the same per-address block applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.admin.access import AdminPrincipal, admin_principal, unauthenticated
from gateway.admin.directory import identify_key
from gateway.auth import key_digest, presented_key
from gateway.errors import GatewayError
from gateway.pipeline import KeyIdentity

if TYPE_CHECKING:
    from gateway.app import Gateway


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one GraphQL request: exactly one of ``key`` and ``admin`` is set."""

    key: KeyIdentity | None = None
    admin: AdminPrincipal | None = None

    @property
    def name(self) -> str:
        """The caller's name, for the access log."""
        if self.admin is not None:
            return self.admin.name
        assert self.key is not None
        return self.key.name


def forbidden(message: str) -> GatewayError:
    """403 ``forbidden``: the caller is known but may not read or change this."""
    return GatewayError(403, message, "permission_error", "forbidden")


def require_scope(caller: Caller, scope: str) -> AdminPrincipal:
    """The admin caller when it holds ``scope``; 403 for a virtual key or an admin key without it."""
    if caller.admin is None:
        raise forbidden(f"A virtual key cannot do this; it needs an admin key with the '{scope}' scope.")
    if not caller.admin.may(scope):
        raise forbidden(f"This credential lacks the '{scope}' scope.")
    return caller.admin


async def authenticate(gateway: Gateway, headers: Mapping[str, str], client: str) -> Caller:
    """The caller of a request from its headers; 401 when the key is missing or unknown (429 while the
    client address is blocked for failed admin logins)."""
    failures = gateway.admin.failed_logins
    config = gateway.config.admin
    await failures.check(client, config)
    key = presented_key(headers)
    if key is None:
        await failures.failed(client, config)
        raise unauthenticated("The GraphQL API needs a key: send 'Authorization: Bearer <key>'.")
    digest = key_digest(key)
    principal = admin_principal(config, gateway.keys, digest)
    if principal is not None:
        return Caller(admin=principal)
    identity = await identify_key(gateway.keys, gateway.admin.directory, digest)
    if identity is None:
        await failures.failed(client, config)
        raise unauthenticated("Invalid API key.")
    return Caller(key=identity)
