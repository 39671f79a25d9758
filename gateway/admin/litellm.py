"""LiteLLM's key and team management bodies, translated to this gateway's (``/key/generate`` & co.).

Tooling written for a LiteLLM proxy sends these shapes; each field is translated to the admin API's
(:mod:`gateway.admin.schemas`) or refused with a 400 naming it, never silently dropped. What differs:
``token`` in answers is the key's record id (LiteLLM's is the key's hash, which this gateway never shows),
and a custom ``key`` value cannot be chosen (secrets are always generated).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.admin.records import KeyRecord, iso
from gateway.admin.schemas import KeyCreate, KeyUpdate, TeamCreate
from gateway.errors import invalid_request
from gateway.features.budgets import BudgetConfig
from gateway.periods import Period

_DURATION = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
# LiteLLM's budget_duration values that match one of this gateway's calendar periods.
_PERIODS = {
    "1d": Period.DAILY, "24h": Period.DAILY,
    "7d": Period.WEEKLY, "1w": Period.WEEKLY,
    "30d": Period.MONTHLY, "1mo": Period.MONTHLY,
}  # fmt: skip


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyFields(_Body):
    """The key fields LiteLLM's generate and update calls share."""

    key_alias: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[str] | None = None
    max_budget: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    budget_duration: str | None = None
    duration: str | None = None
    rpm_limit: int | None = Field(default=None, gt=0)
    tpm_limit: int | None = Field(default=None, gt=0)
    team_id: str | None = Field(default=None, min_length=1, max_length=200)
    user_id: str | None = None
    metadata: dict[str, Any] | None = None


class KeyGenerate(KeyFields):
    """``POST /key/generate``."""

    key_name: str | None = Field(default=None, min_length=1, max_length=200)


class KeyUpdateBody(KeyFields):
    """``POST /key/update``: ``key`` is the secret (or the key's id)."""

    key: str = Field(min_length=1)


class KeyDelete(_Body):
    """``POST /key/delete``."""

    keys: list[str] = Field(min_length=1, max_length=100)


class TeamNew(_Body):
    """``POST /team/new``: a runtime team (:class:`~gateway.admin.schemas.TeamCreate`)."""

    team_alias: str | None = Field(default=None, min_length=1, max_length=200)
    team_id: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[str] | None = None
    max_budget: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(default=None, gt=0)
    tpm_limit: int | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict)


def team_create(body: TeamNew) -> TeamCreate:
    """The admin API's team create for a LiteLLM ``/team/new`` body (400 naming the field when invalid)."""
    name = body.team_alias or body.team_id
    if name is None:
        raise invalid_request("team_alias: required (or team_id).", param="team_alias")
    try:
        return TeamCreate(
            name=name,
            budget=budget(body.max_budget, body.budget_duration),
            models=body.models if body.models else "*",
            rpm=body.rpm_limit,
            tpm=body.tpm_limit,
            metadata=body.metadata,
        )
    except ValidationError:
        raise invalid_request(
            "team_alias: letters, digits, '.', '_' and '-' only (1 to 200).", param="team_alias"
        ) from None


def team_info(view: dict[str, Any]) -> dict[str, Any]:
    """A team in LiteLLM's shape, from the admin API's view of it."""
    budget = view.get("budget") or {}
    period = budget.get("period")
    durations = {"daily": "1d", "weekly": "7d", "monthly": "30d"}
    return {
        "team_id": view["name"],
        "team_alias": view["name"],
        "source": view["source"],
        "models": [] if view.get("models") == "*" else view.get("models"),
        "max_budget": float(budget["limit_usd"]) if budget else None,
        "budget_duration": durations.get(period) if period else None,
        "rpm_limit": view.get("rpm"),
        "tpm_limit": view.get("tpm"),
        "metadata": view.get("metadata", {}),
        "created_at": view.get("created_at"),
    }


def expires_at(duration: str | None) -> datetime | None:
    """``30d``, ``12h``, ``90m`` from now; None for no expiry; 400 naming ``duration`` otherwise."""
    if duration is None or duration == "permanent":
        return None
    match = _DURATION.match(duration)
    if match is None:
        raise invalid_request("duration: use a number and s, m, h, d, w or mo, e.g. '30d'.", param="duration")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    return datetime.fromtimestamp(time.time() + seconds, UTC)


def budget(max_budget: Decimal | None, duration: str | None) -> BudgetConfig | None:
    """A budget of ``max_budget`` USD per the period ``duration`` names (none: over the key's life)."""
    if max_budget is None:
        if duration is not None:
            raise invalid_request("budget_duration needs max_budget.", param="budget_duration")
        return None
    if duration is None:
        return BudgetConfig(limit_usd=max_budget, period=Period.TOTAL)
    period = _PERIODS.get(duration)
    if period is None:
        raise invalid_request(
            f"budget_duration: one of {', '.join(_PERIODS)} (calendar day, week or month).",
            param="budget_duration",
        )
    return BudgetConfig(limit_usd=max_budget, period=period)


def _metadata(fields: KeyFields) -> dict[str, Any]:
    # LiteLLM's user_id has no counterpart here: kept in metadata, where it is shown again.
    metadata = dict(fields.metadata or {})
    if fields.user_id is not None:
        metadata["user_id"] = fields.user_id
    return metadata


def key_create(body: KeyGenerate) -> KeyCreate:
    """The admin API's create for a LiteLLM generate body."""
    return KeyCreate(
        name=body.key_alias or body.key_name or f"litellm-{int(time.time())}",
        models=body.models if body.models else "*",
        rpm=body.rpm_limit,
        tpm=body.tpm_limit,
        budget=budget(body.max_budget, body.budget_duration),
        team=body.team_id,
        metadata=_metadata(body),
        expires_at=expires_at(body.duration),
    )


def key_update(body: KeyUpdateBody, current: KeyRecord) -> KeyUpdate:
    """The admin API's update for a LiteLLM update body (only the fields it sent)."""
    sent = body.model_fields_set
    change: dict[str, Any] = {}
    if "key_alias" in sent and body.key_alias is not None:
        change["name"] = body.key_alias
    if "models" in sent:
        change["models"] = body.models if body.models else "*"
    if "rpm_limit" in sent:
        change["rpm"] = body.rpm_limit
    if "tpm_limit" in sent:
        change["tpm"] = body.tpm_limit
    if sent & {"max_budget", "budget_duration"}:
        change["budget"] = budget(body.max_budget, body.budget_duration)
    if "team_id" in sent:
        change["team"] = body.team_id
    if sent & {"metadata", "user_id"}:
        change["metadata"] = {**current.metadata, **_metadata(body)}
    if "duration" in sent:
        change["expires_at"] = expires_at(body.duration)
    return KeyUpdate(**change)


def key_info(view: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    """A key in LiteLLM's shape, from the admin API's view of it."""
    budget = view.get("budget") or {}
    period = budget.get("period")
    durations = {"daily": "1d", "weekly": "7d", "monthly": "30d"}
    info = {
        "token": view["id"],
        "key_name": view.get("key"),
        "key_alias": view["name"],
        "models": [] if view.get("models") == "*" else view.get("models"),
        "max_budget": float(budget["limit_usd"]) if budget else None,
        "budget_duration": durations.get(period) if period else None,
        "rpm_limit": view.get("rpm"),
        "tpm_limit": view.get("tpm"),
        "team_id": view.get("team"),
        "metadata": view.get("metadata", {}),
        "expires": view.get("expires_at"),
        "created_at": view.get("created_at"),
        "blocked": view.get("revoked", False),
    }
    if secret is not None:
        info["key"] = secret
    return info


def spend_row(row: dict[str, Any], key_ids: dict[str, str]) -> dict[str, Any]:
    """A usage-ledger record in the shape of a LiteLLM spend log."""
    started = iso(row["ts"])
    return {
        "request_id": row["request_id"],
        "api_key": key_ids.get(row["key_name"], row["key_name"]),
        "key_alias": row["key_name"],
        "team_id": row["team"],
        "model": row["model"],
        "call_type": row["endpoint"],
        "spend": row["cost_nanos"] / 1e9,
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
        "startTime": started,
        "endTime": iso(row["ts"] + row["latency_ms"] / 1000.0),
        "status": "success" if row["status"] < 400 else "failure",
        "cache_hit": row["cache_hit"],
    }
