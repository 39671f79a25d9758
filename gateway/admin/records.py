"""A runtime virtual key as stored (:class:`KeyRecord`) and as shown (:func:`public_view`).

A record holds the SHA-256 digest of its secret, never the secret: the secret is shown once, when it is
made (create, rotate). Secrets are 256-bit random values, so a fast hash is enough (no guessing to slow
down), and they start with ``sk-gw-`` so secret scanners can recognise a leaked one. ``revision`` counts
changes: it is the record's ETag and the compare-and-set token of every update.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.features.budgets import BudgetConfig
from gateway.key_digests import presented_digest
from gateway.pipeline import KeyIdentity

SECRET_PREFIX = "sk-gw-"


def new_secret() -> str:
    """A fresh virtual-key secret: ``sk-gw-`` and 43 URL-safe characters (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_id() -> str:
    """A record id that sorts by creation time (pagination walks ids in order) and reveals nothing."""
    return f"key_{time.time_ns():x}{secrets.token_hex(4)}"


def digest_hex(secret: str) -> str:
    """The hex SHA-256 digest a secret is stored and looked up by."""
    return presented_digest(secret).hex()


def hint(secret: str) -> str:
    """What the API shows of a secret: its prefix and last four characters."""
    return f"{SECRET_PREFIX}…{secret[-4:]}"


class KeyRecord(BaseModel):
    """One runtime virtual key as the admin store holds it (times are Unix seconds)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    digest: str
    hint: str
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget: BudgetConfig | None = None
    team: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    expires_at: float | None = None
    # Data residency, enforced like auth.keys[].allowed_regions (None: any region).
    allowed_regions: list[str] | None = None
    created_at: float
    updated_at: float
    revoked_at: float | None = None
    # After a rotation the old secret keeps working until previous_until.
    previous_digest: str | None = None
    previous_until: float | None = None
    revision: int = 1

    @property
    def etag(self) -> str:
        """The record's ETag (a strong validator: it changes with every change)."""
        return f'"{self.id}.{self.revision}"'

    def accepts(self, digest: str, now: float) -> bool:
        """Whether a secret with ``digest`` authenticates this key at ``now`` (not revoked, not expired,
        the current secret or the previous one within its grace period)."""
        if self.revoked_at is not None or (self.expires_at is not None and now >= self.expires_at):
            return False
        if digest == self.digest:
            return True
        return (
            digest == self.previous_digest and self.previous_until is not None and now < self.previous_until
        )

    def identity(self, team: TeamRecord | None = None) -> KeyIdentity:
        """The identity requests made with this key run as (``key_id`` is the record id: stable across
        rotations, so usage and limits follow the key, not the secret), with what its runtime ``team``
        brings: the team's model list narrows the key's, its budget and rpm/tpm apply besides the key's."""
        models = None if self.models is None else frozenset(self.models)
        if team is not None and team.models is not None:
            models = frozenset(team.models) if models is None else models & frozenset(team.models)
        return KeyIdentity(
            name=self.name,
            key_id=self.id,
            team=self.team,
            models=models,
            rpm=self.rpm,
            tpm=self.tpm,
            budget=self.budget,
            team_budget=None if team is None else team.budget,
            team_rpm=None if team is None else team.rpm,
            team_tpm=None if team is None else team.tpm,
            allowed_regions=None if self.allowed_regions is None else frozenset(self.allowed_regions),
        )


def iso(value: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC timestamp."""
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def public_view(record: KeyRecord) -> dict[str, Any]:
    """The record as the API and the audit log show it: no secret, no digest."""
    return {
        "id": record.id,
        "name": record.name,
        "source": "api",
        "key": record.hint,
        "models": record.models if record.models is not None else "*",
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget": None if record.budget is None else record.budget.model_dump(mode="json", exclude_none=True),
        "team": record.team,
        "metadata": record.metadata,
        "expires_at": iso(record.expires_at),
        "allowed_regions": record.allowed_regions,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "revoked": record.revoked_at is not None,
        "revoked_at": iso(record.revoked_at),
        "previous_key_valid_until": iso(record.previous_until),
        "etag": record.etag,
    }


class TeamRecord(BaseModel):
    """One team made at run time (``/admin/v1/teams``, ``/team/new``); keys join it with ``team``.

    Its budget is the team's (spent by every key of the team together), ``models`` narrows what its keys
    may call, and ``rpm``/``tpm`` are one allowance shared by all its keys."""

    model_config = ConfigDict(extra="forbid")

    name: str
    budget: BudgetConfig | None = None
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float
    revision: int = 1

    @property
    def etag(self) -> str:
        """The record's ETag (changes with every change)."""
        return f'"team.{self.name}.{self.revision}"'

    @classmethod
    def parse(cls, raw: str | bytes) -> TeamRecord:
        """A stored team; a team stored by ``/team/new`` before teams had records (a name and metadata
        in LiteLLM's shape) is read as a team without budget, models or limits."""
        data = json.loads(raw)
        if "team_id" in data:
            now = time.time()
            return cls(
                name=data["team_id"], metadata=data.get("metadata") or {}, created_at=now, updated_at=now
            )
        return cls.model_validate(data)


def team_view(record: TeamRecord) -> dict[str, Any]:
    """A runtime team as the API and the audit log show it."""
    return {
        "name": record.name,
        "source": "api",
        "read_only": False,
        "budget": None if record.budget is None else record.budget.model_dump(mode="json", exclude_none=True),
        "models": record.models if record.models is not None else "*",
        "rpm": record.rpm,
        "tpm": record.tpm,
        "metadata": record.metadata,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "etag": record.etag,
    }
