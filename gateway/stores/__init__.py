"""Shared state for features that several gateway replicas must agree on (see `base.py` for the interface).

`open_store(StateConfig)` picks the backend: Redis when `state.redis_url` is set, else in-process memory.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.features.regions import REGION_PATTERN
from gateway.stores.base import (
    AdmissionOp,
    Admitted,
    AtomicOp,
    MemoryData,
    OnError,
    Step,
    Store,
    StoreUnavailable,
    Write,
    hashed_id,
    store_key,
)
from gateway.stores.memory import MemoryStore
from gateway.stores.redis_url import parse_redis_url

if TYPE_CHECKING:
    from gateway.stores.redis import RedisStore

__all__ = [
    "AdmissionOp",
    "Admitted",
    "AtomicOp",
    "GlobalFeature",
    "MemoryData",
    "MemoryStore",
    "OnError",
    "PartitionedFeature",
    "RedisStore",
    "StateConfig",
    "Step",
    "Store",
    "StoreUnavailable",
    "Write",
    "hashed_id",
    "open_store",
    "store_key",
]


# Features whose state may live in the global store (multi-region); cooldowns stay regional by design.
GlobalFeature = Literal["budgets", "rate_limit", "cache"]
_BUDGETS_ONLY: list[GlobalFeature] = ["budgets"]
# Features whose limits may be split into per-region shares (gateway/features/partitions.py).
PartitionedFeature = Literal["rate_limit"]


class StateConfig(BaseModel):
    """`state:` in the gateway config: where shared state lives and what happens when it is unreachable."""

    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="redis://[:password@]host:port/db, rediss:// (TLS), "
        "redis+sentinel://[:password@]host:port[,host:port]/service[/db] or "
        "redis+cluster://[:password@]host:port[,host:port]; unset keeps state in this process",
    )
    global_redis_url: str | None = Field(
        default=None,
        description="multi-region: the store every region shares (same URL forms as redis_url), for the "
        "features in global_features; redis_url is then the region's own",
    )
    global_features: list[GlobalFeature] = Field(
        default_factory=lambda: _BUDGETS_ONLY.copy(),
        description="with global_redis_url: the features whose state lives there (budgets exact across "
        "regions by default); the others, and cooldowns, stay in redis_url",
    )
    partitioned_features: list[PartitionedFeature] = Field(
        default_factory=list,
        description="multi-region: features whose limits are split into per-region shares enforced in "
        "redis_url, rebalanced by demand through global_redis_url (gateway/features/partitions.py)",
    )
    regions: list[str] = Field(
        default_factory=list,
        description="with partitioned_features: every region sharing the limits (equal shares to start); "
        "unset: every region a route is in",
    )
    rebalance_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="partitioned limits: how often demand is published and shares recomputed",
    )
    partition_min_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="partitioned limits: the part of an equal split every region keeps whatever its demand",
    )
    on_error: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        description="When Redis is down: fail_open lets requests through uncached and unlimited, "
        "fail_closed answers 503",
    )
    timeout_seconds: float = Field(default=1.0, gt=0, description="Redis connect and command timeout")
    memory_max_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Memory backend: bound on stored values (LRU eviction)"
    )
    memory_max_entries: int = Field(default=100_000, gt=0, description="Memory backend: bound on entries")

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(REGION_PATTERN, name):
                raise ValueError(f"'{name}' is not a region name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("redis_url", "global_redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        # Checked here so a typo is a config error naming the key, not a traceback when the app starts.
        if value:
            parse_redis_url(value)  # its ValueError names the problem, never the password
        return value or None


def __getattr__(name: str) -> Any:
    # The Redis client is imported only when used: a gateway without `state.redis_url` starts faster.
    if name == "RedisStore":
        from gateway.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(config: StateConfig, *, url: str | None = None) -> Store:
    """The store `config` describes (at `url` instead of `redis_url` when given); Redis connects lazily."""
    url = url or config.redis_url
    if url:
        from gateway.stores.redis import RedisStore

        return RedisStore(url, on_error=config.on_error, timeout=config.timeout_seconds)
    return MemoryStore(max_bytes=config.memory_max_bytes, max_entries=config.memory_max_entries)
