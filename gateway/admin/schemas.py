"""The admin API's request bodies: strict pydantic models (unknown fields are errors naming the field)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gateway.features.budgets import BudgetConfig
from gateway.features.regions import REGION_PATTERN

# Data residency of a runtime key, as auth.keys[].allowed_regions (at least one region; None: any).
Regions = list[Annotated[str, Field(pattern=REGION_PATTERN)]]

MAX_GRACE_S = 30 * 86400


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(_Body):
    """``POST /admin/v1/keys``."""

    name: str = Field(min_length=1, max_length=200)
    models: list[str] | Literal["*"] = "*"
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    budget: BudgetConfig | None = None
    team: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)
    expires_at: AwareDatetime | None = Field(default=None, description="ISO 8601 with a time zone")
    allowed_regions: Regions | None = Field(default=None, min_length=1)


class KeyUpdate(_Body):
    """``PATCH /admin/v1/keys/{id}``: only the fields sent change; ``null`` clears a field."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[str] | Literal["*"] | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    budget: BudgetConfig | None = None
    team: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None
    expires_at: AwareDatetime | None = None
    allowed_regions: Regions | None = Field(default=None, min_length=1)


class TeamCreate(_Body):
    """``POST /admin/v1/teams``: a team keys join with ``team``; its budget is shared by all its keys,
    ``models`` narrows what they may call, ``rpm``/``tpm`` are one allowance for all of them."""

    # Letters, digits, '.', '_' and '-': a team's name is in URLs (/admin/v1/teams/{name}) and store keys.
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    budget: BudgetConfig | None = None
    models: list[str] | Literal["*"] = "*"
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TeamUpdate(_Body):
    """``PATCH /admin/v1/teams/{name}``: only the fields sent change; ``null`` clears a field."""

    budget: BudgetConfig | None = None
    models: list[str] | Literal["*"] | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    metadata: dict[str, Any] | None = None


class KeyRotate(_Body):
    """``POST /admin/v1/keys/{id}/rotate``: how long the old secret keeps working (default
    ``admin.rotation_grace_s``)."""

    grace_period_s: int | None = Field(default=None, ge=0, le=MAX_GRACE_S)


class CachePurge(_Body):
    """``POST /admin/v1/cache/purge``: ``model``, ``key_id`` or both (that key's entries of that model),
    or ``all``."""

    model: str | None = Field(default=None, min_length=1, description="a model alias clients send")
    key_id: str | None = Field(default=None, min_length=1, description="a key's id (GET /admin/v1/keys)")
    all: bool = Field(default=False, description="purge the whole cache")

    @model_validator(mode="after")
    def _one_target(self) -> CachePurge:
        if self.all and (self.model is not None or self.key_id is not None):
            raise ValueError("all: give either all or model and/or key_id, not both")
        if not self.all and self.model is None and self.key_id is None:
            raise ValueError("give model, key_id (or both), or all: true")
        return self
