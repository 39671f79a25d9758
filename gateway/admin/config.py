"""``admin:`` in the gateway config: admin keys with scopes, where runtime keys live, failed-auth limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.key_digests import stored_form

Scope = Literal[
    "keys:read",
    "keys:write",
    "teams:read",
    "teams:write",
    "budgets:read",
    "budgets:write",
    "usage:read",
    "routes:read",
    "routes:write",
    "cache:write",
    "config:reload",
    "audit:read",
    "*",
]


class AdminKeyConfig(BaseModel):
    """One admin key under ``admin.keys``: a credential for ``/admin/v1`` limited to ``scopes``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    # Held only as its digest, like virtual keys (gateway/key_digests.py).
    key: str = Field(min_length=8)
    scopes: list[Scope] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _digest_only(cls, value: str) -> str:
        return stored_form(value)


class AdminConfig(BaseModel):
    """``admin:`` admin keys and the runtime key store's settings."""

    model_config = ConfigDict(extra="forbid")

    keys: list[AdminKeyConfig] = Field(default_factory=list)
    database: str | None = Field(
        default=None,
        description="SQLite file for runtime keys and the audit log when state is not Redis "
        "(default: beside usage.database, '<name>-admin.sqlite3')",
    )
    failed_auth_limit: int = Field(default=10, gt=0, description="failed admin logins per client address")
    failed_auth_window_s: int = Field(default=60, gt=0, description="window of failed_auth_limit, seconds")
    rotation_grace_s: int = Field(
        default=3600, ge=0, description="default time the old secret keeps working after a rotation"
    )
    # How stale a replica's view of runtime keys may be; the API promises a change is honoured within 1 s.
    sync_interval_s: float = Field(default=0.5, gt=0, le=1.0)
