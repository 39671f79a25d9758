"""Load-balancing strategies: given a model alias's routes, the order in which to try them.

A strategy is one small interface, :class:`Strategy`: ``order(routes)`` returns every usable route once, the
preferred one first; the router tries them in that order, so the tail of the list is where retries go.
Routes with weight 0 are drained: they never appear in the order.

The strategies keep only per-replica state (a round-robin cursor, in-flight counters, latency averages);
what replicas must agree on (cooldowns) lives in :mod:`gateway.features.cooldown`. Randomness comes from an
injected :class:`random.Random`, so tests fix the seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

StrategyName = Literal["weighted", "round_robin", "least_inflight", "latency"]
STRATEGY_NAMES: tuple[str, ...] = ("weighted", "round_robin", "least_inflight", "latency")


@dataclass(frozen=True)
class RouteTarget:
    """One route of a model alias: a provider, the model name upstream, and its share of traffic."""

    provider: str
    model: str
    weight: float = 1.0
    region: str | None = None

    @cached_property
    def key(self) -> str:
        """The route's identity in headers, stats and cooldown keys: ``provider/model``.

        Kept once made (a route is asked its key five times per request); a frozen dataclass still takes
        it, as a cached property writes to the instance's ``__dict__``, not through ``__setattr__``."""
        return f"{self.provider}/{self.model}"


@dataclass
class RouteStats:
    """Per-replica observations the adaptive strategies read: requests in flight and latency averages.

    ``alpha`` is the weight of the newest sample in the exponentially weighted moving average.
    """

    alpha: float = 0.3
    in_flight: dict[str, int] = field(default_factory=dict)
    latency_ewma: dict[str, float] = field(default_factory=dict)

    def started(self, key: str) -> None:
        """Count one more request in flight on ``key``."""
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def finished(self, key: str) -> None:
        """Count one request on ``key`` as no longer in flight."""
        self.in_flight[key] = max(0, self.in_flight.get(key, 0) - 1)

    def observe_latency(self, key: str, seconds: float) -> None:
        """Fold one latency sample into the route's moving average."""
        previous = self.latency_ewma.get(key)
        if previous is None:
            self.latency_ewma[key] = seconds
        else:
            self.latency_ewma[key] = self.alpha * seconds + (1 - self.alpha) * previous


class Strategy(Protocol):
    """The load-balancing extension point: order a route list for one request."""

    def order(self, routes: Sequence[RouteTarget]) -> list[RouteTarget]:
        """Return the routes with a positive weight, each once, the one to try first at the front."""
        ...


def _active(routes: Sequence[RouteTarget]) -> list[RouteTarget]:
    return [route for route in routes if route.weight > 0]


def weighted_shuffle(routes: Sequence[RouteTarget], rng: random.Random) -> list[RouteTarget]:
    """Order routes by weighted sampling without replacement (Efraimidis-Spirakis keys ``u ** (1 / w)``).

    The first element is chosen with probability ``weight / total``; the rest follow the same rule among
    the remaining routes, which makes the retry order weighted too.
    """
    active = _active(routes)
    if len(active) < 2:
        # One route (most aliases): nothing to sort. Its draw is still taken, so a seeded generator gives
        # the same orders as ever to the requests after it.
        if active:
            rng.random()
        return active
    keyed = [(rng.random() ** (1.0 / route.weight), index, route) for index, route in enumerate(active)]
    keyed.sort(key=lambda item: (-item[0], item[1]))
    return [route for _, _, route in keyed]


@dataclass
class WeightedRandom:
    """Pick a route at random in proportion to its weight (the default)."""

    rng: random.Random

    def order(self, routes: Sequence[RouteTarget]) -> list[RouteTarget]:
        """Weighted random order; see :func:`weighted_shuffle`."""
        return weighted_shuffle(routes, self.rng)


@dataclass
class RoundRobin:
    """Smooth weighted round robin (nginx's algorithm): deterministic; weight 2 gets twice the turns.

    The cursor state is per alias route set, keyed by the route keys, so aliases do not disturb each other.
    """

    current: dict[tuple[str, ...], dict[str, float]] = field(default_factory=dict)

    def order(self, routes: Sequence[RouteTarget]) -> list[RouteTarget]:
        """Advance the rotation by one turn; the winner first, then the others by their current standing."""
        active = _active(routes)
        if not active:
            return []
        group = tuple(route.key for route in active)
        state = self.current.setdefault(group, {route.key: 0.0 for route in active})
        total = sum(route.weight for route in active)
        for route in active:
            state[route.key] += route.weight
        ranked = sorted(enumerate(active), key=lambda item: (-state[item[1].key], item[0]))
        winner = ranked[0][1]
        state[winner.key] -= total
        return [route for _, route in ranked]


@dataclass
class LeastInFlight:
    """Prefer the route with the fewest requests in flight per unit of weight; ties go by weighted chance."""

    stats: RouteStats
    rng: random.Random

    def order(self, routes: Sequence[RouteTarget]) -> list[RouteTarget]:
        """Order by ``in_flight / weight``, breaking ties with a weighted shuffle."""
        shuffled = weighted_shuffle(routes, self.rng)
        # sorted() is stable, so the shuffle decides among routes with the same load.
        return sorted(shuffled, key=lambda route: self.stats.in_flight.get(route.key, 0) / route.weight)


@dataclass
class LowestLatency:
    """Prefer the route with the lowest recent latency (moving average).

    Routes within ``buffer`` (a fraction) of the fastest share the traffic by weight, so two nearly equal
    upstreams are both used and both keep being measured. A route never measured counts as fastest, so a new
    route is tried. A share ``explore`` of requests ignores latency (weighted random order), so a slow route
    that recovered gets measured again.
    """

    stats: RouteStats
    rng: random.Random
    buffer: float = 0.1
    explore: float = 0.05

    def order(self, routes: Sequence[RouteTarget]) -> list[RouteTarget]:
        """The routes within the buffer of the best latency (weighted order), then the rest by latency."""
        active = _active(routes)
        if not active:
            return []
        if self.explore and self.rng.random() < self.explore:
            return weighted_shuffle(active, self.rng)
        latency = {route.key: self.stats.latency_ewma.get(route.key, 0.0) for route in active}
        best = min(latency.values())
        threshold = best * (1 + self.buffer)
        near = [route for route in active if latency[route.key] <= threshold]
        far = sorted(
            (route for route in active if latency[route.key] > threshold), key=lambda r: latency[r.key]
        )
        return weighted_shuffle(near, self.rng) + far


def make_strategy(
    name: str,
    *,
    rng: random.Random,
    stats: RouteStats,
    latency_buffer: float = 0.1,
    latency_explore: float = 0.05,
) -> Strategy:
    """Build the strategy called ``name`` (one of :data:`STRATEGY_NAMES`)."""
    if name == "weighted":
        return WeightedRandom(rng)
    if name == "round_robin":
        return RoundRobin()
    if name == "least_inflight":
        return LeastInFlight(stats, rng)
    if name == "latency":
        return LowestLatency(stats, rng, buffer=latency_buffer, explore=latency_explore)
    raise ValueError(f"unknown routing strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}")
