"""``features.routing``: the router's settings, apart from the stage so gateway.config can import them."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.features.cooldown import CooldownPolicy


class CooldownConfig(BaseModel):
    """``features.routing.cooldown``: when a failing route is taken out, and for how long.

    The defaults are reasoned in docs/gateway/routing.md ("Circuit breaker").
    """

    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(
        default=20, ge=1, description="requests within window_seconds before the failure rate counts"
    )
    failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="share of failed requests in the window that opens the circuit"
    )
    window_seconds: float = Field(default=10.0, gt=0, description="the rolling window (10 buckets)")
    seconds: float = Field(
        default=1.0,
        gt=0,
        description="first cooldown; doubles after each failed probe; the pace of last-option probes",
    )
    max_seconds: float = Field(default=30.0, gt=0, description="the longest cooldown (at least seconds)")
    probe_timeout_seconds: float = Field(
        default=5.0, gt=0, description="a probe that never reports frees the probe slot after this"
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        # The count-based breaker's key: name its replacement rather than answer "unknown key".
        if isinstance(data, dict) and "failures" in data:
            raise ValueError(
                "'failures' was replaced by 'min_requests' and 'failure_rate': the circuit opens on the "
                "share of failed requests once a window holds min_requests (docs/gateway/routing.md)"
            )
        return data

    def policy(self) -> CooldownPolicy:
        """The state machine's parameters."""
        return CooldownPolicy(
            min_requests=self.min_requests,
            failure_rate=self.failure_rate,
            window_s=self.window_seconds,
            cooldown_s=self.seconds,
            max_cooldown_s=self.max_seconds,
            probe_timeout_s=self.probe_timeout_seconds,
        )


class RoutingConfig(BaseModel):
    """``features.routing``: how the router spreads load and recovers from upstream failures."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["weighted", "round_robin", "least_inflight", "latency"] = "weighted"
    max_attempts: int = Field(default=3, ge=1, description="upstream calls per model alias")
    drop_params: bool = Field(
        default=False, description="drop (and report) parameters a route's provider cannot honour, not refuse"
    )
    deadline_seconds: float = Field(default=60.0, gt=0, description="no attempt starts after this")
    retry_after_cap_seconds: float = Field(default=30.0, ge=0, description="longest hold from a retry-after")
    max_wait_seconds: float = Field(default=0.0, ge=0, description="longest wait for a held route")
    backoff_base_seconds: float = Field(default=0.1, ge=0)
    backoff_max_seconds: float = Field(default=2.0, ge=0)
    latency_alpha: float = Field(default=0.3, gt=0, le=1, description="EWMA weight of the newest sample")
    latency_buffer: float = Field(default=0.1, ge=0, description="routes this close to the fastest share")
    latency_explore: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="share of requests that ignore latency, to re-measure slow routes",
    )
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    # Per replica region, the regions to try next, in order, after its own (gateway/features/regions.py).
    region_preference: dict[str, list[str]] = Field(
        default_factory=dict,
        description="e.g. {eu-west: [eu-central, us-east]}: a replica in eu-west tries its own region's "
        "routes, then eu-central's, then us-east's, then any other",
    )


class _Alias(Protocol):
    name: str
    fallbacks: list[str]


def fallback_problems(models: Sequence[_Alias]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Config problems with ``models[].fallbacks``: unknown aliases, an alias naming itself, cycles."""
    names = [model.name for model in models]
    graph = {model.name: model.fallbacks for model in models}
    reported: set[frozenset[str]] = set()
    for i, model in enumerate(models):
        for j, alias in enumerate(model.fallbacks):
            if alias == model.name:
                yield ("models", i, "fallbacks", j), f"model '{alias}' cannot fall back to itself"
            elif alias not in graph:
                close = difflib.get_close_matches(alias, names, n=1, cutoff=0.6)
                hint = f", did you mean '{close[0]}'?" if close else ""
                yield ("models", i, "fallbacks", j), f"unknown model '{alias}'{hint}"
        cycle = _cycle_from(model.name, graph)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            yield ("models", i, "fallbacks"), "fallback cycle: " + " -> ".join([*cycle, cycle[0]])


def _cycle_from(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of two or more aliases through ``start``, in order, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, []):
            if nxt == start and len(path) > 1:
                return path
            if nxt != node and nxt not in seen and nxt in graph:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None
