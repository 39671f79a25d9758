"""Cooldown circuit breaking for routes: take a failing upstream out, probe it again later.

The state machine for one route, as pure functions over :class:`RouteHealth` with the time passed in:

- **closed**: the route takes traffic. A failure is remembered with its time; ``failures`` failures within
  ``window_s`` seconds open the circuit.
- **open**: the route takes no traffic until ``open_until`` (``cooldown_s`` after it opened, or the
  upstream's ``retry-after`` when it sent one).
- **half-open**: after ``open_until`` exactly one request (the probe) may use the route; others still skip it.
  The probe's success closes the circuit and forgets the failures; its failure opens it again for twice the
  previous period, up to ``max_cooldown_s``, so a long outage is probed less and less often. A probe that
  never reports back (a crashed replica) expires after ``probe_timeout_s`` and another request probes.

:class:`CooldownTracker` keeps one ``RouteHealth`` per route in the shared state store, so every replica sees
the same cooldowns. Updates are read-modify-write: two replicas recording failures at the same instant may
lose one count, which only delays opening the circuit by a request; the probe claim is the one step where a
race would matter (two probes), and it is taken with an atomic operation (:data:`CLAIM_PROBE`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gateway.stores.base import AtomicOp, MemoryData, Store, store_key

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class CooldownPolicy:
    """When a route is taken out and for how long."""

    failures: int = 3
    window_s: float = 30.0
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    probe_timeout_s: float = 30.0


@dataclass(frozen=True)
class RouteHealth:
    """What is known about one route: recent failure times, and when its circuit opened and closes."""

    failures: tuple[float, ...] = ()
    open_until: float | None = None
    probe_until: float | None = None
    period_s: float = 0.0
    # Opened by an upstream's retry-after (rate limited) rather than by failures: clients get 429, not 503.
    rate_limited: bool = False

    def to_json(self) -> str:
        """Serialise for the state store."""
        return json.dumps(
            {
                "failures": list(self.failures),
                "open_until": self.open_until,
                "probe_until": self.probe_until,
                "period_s": self.period_s,
                "rate_limited": self.rate_limited,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes | None) -> RouteHealth:
        """Read what :meth:`to_json` wrote; anything unreadable counts as a healthy route (fail open)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(
                failures=tuple(float(t) for t in data.get("failures", ())),
                open_until=None if data.get("open_until") is None else float(data["open_until"]),
                probe_until=None if data.get("probe_until") is None else float(data["probe_until"]),
                period_s=float(data.get("period_s", 0.0)),
                rate_limited=bool(data.get("rate_limited", False)),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


def state_of(health: RouteHealth, now: float) -> State:
    """The circuit state of a route at time ``now``."""
    if health.open_until is None:
        return "closed"
    if now < health.open_until:
        return "open"
    return "half_open"


def can_probe(health: RouteHealth, now: float) -> bool:
    """Whether a half-open route has no live probe, so this request may become its probe."""
    return state_of(health, now) == "half_open" and (health.probe_until is None or now >= health.probe_until)


def start_probe(health: RouteHealth, now: float, policy: CooldownPolicy) -> RouteHealth:
    """Mark a probe in flight on a half-open route, until it reports or ``probe_timeout_s`` passes."""
    return replace(health, probe_until=now + policy.probe_timeout_s)


def record_failure(
    health: RouteHealth, now: float, policy: CooldownPolicy, hold_s: float | None = None
) -> RouteHealth:
    """Fold one failure into the route's health.

    ``hold_s`` (from an upstream's ``retry-after``) opens the circuit at once for that long. A failed probe
    re-opens it for twice the previous period (at most ``max_cooldown_s``). Otherwise the failure counts
    towards ``policy.failures`` in the window.
    """
    if hold_s is not None and hold_s > 0:
        until = max(now + hold_s, health.open_until or 0.0)
        return RouteHealth(open_until=until, period_s=max(hold_s, health.period_s), rate_limited=True)
    state = state_of(health, now)
    if state == "half_open":
        period = min(
            max(health.period_s, policy.cooldown_s) * 2, max(policy.max_cooldown_s, policy.cooldown_s)
        )
        return RouteHealth(open_until=now + period, period_s=period)
    if state == "open":
        # A request that was already on its way when the circuit opened; the circuit is open anyway.
        return health
    recent = (*(t for t in health.failures if now - t < policy.window_s), now)
    if len(recent) >= policy.failures:
        return RouteHealth(open_until=now + policy.cooldown_s, period_s=policy.cooldown_s)
    return RouteHealth(failures=recent)


def record_success(health: RouteHealth, now: float) -> RouteHealth:
    """A success closes a half-open circuit; in the closed state old failures just age out of the window."""
    if state_of(health, now) == "half_open":
        return RouteHealth()
    return health


def _claim_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    if data.get(keys[0]) is not None:
        return [0]
    data.set(keys[0], 1, args[0])
    return [1]


# KEYS: the probe lease.  ARGV: lease time in ms.  Returns 1 when this caller took the lease.
CLAIM_PROBE = AtomicOp(
    name="cooldown_claim_probe",
    lua="if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return {1} end return {0}",
    memory=_claim_memory,
    # With the store down every replica may probe: a few extra requests to a recovering upstream.
    fail_open=lambda keys, args: [1],
)


@dataclass(frozen=True)
class Admission:
    """The tracker's answer for one route: may a request use it now, and if not, when it may again."""

    allowed: bool
    probe: bool = False
    retry_at: float | None = None
    rate_limited: bool = False


@dataclass
class CooldownTracker:
    """Route health shared through the state store, with time from ``clock`` (wall-clock seconds).

    Route health is stored as JSON under ``gw:cd:<route>``, the probe lease under ``gw:cd:<route>:probe``.
    Times inside the JSON come from ``clock`` (replicas' clocks are assumed roughly in sync; a skew of a
    second shifts a cooldown by that second); the store's own TTLs only clean up.
    """

    store: Store
    policy: CooldownPolicy
    clock: Callable[[], float]

    def _key(self, route: str) -> str:
        return store_key("cd", route)

    async def _claim_probe(self, route: str) -> bool:
        lease_ms = max(1, int(self.policy.probe_timeout_s * 1000))
        result = await self.store.run(CLAIM_PROBE, [self._key(route) + ":probe"], [lease_ms])
        return bool(result and result[0] == 1)

    def _ttl(self, health: RouteHealth, now: float) -> float:
        # Keep the record as long as anything in it still matters, and a little longer.
        horizon = max([now + self.policy.window_s, health.open_until or 0.0, health.probe_until or 0.0])
        return max(1.0, horizon - now + self.policy.cooldown_s + self.policy.probe_timeout_s)

    async def health(self, route: str) -> RouteHealth:
        """The stored health of ``route``."""
        return RouteHealth.from_json(await self.store.get(self._key(route)))

    async def _save(self, route: str, health: RouteHealth, now: float) -> None:
        if health == RouteHealth():
            await self.store.delete(self._key(route))
        else:
            await self.store.set(self._key(route), health.to_json().encode(), self._ttl(health, now))

    async def admit(self, route: str) -> Admission:
        """Decide whether a request may use ``route`` now; claims the probe of a half-open route."""
        now = self.clock()
        health = await self.health(route)
        state = state_of(health, now)
        if state == "closed":
            return Admission(allowed=True)
        limited = health.rate_limited
        if state == "open":
            return Admission(allowed=False, retry_at=health.open_until, rate_limited=limited)
        if not can_probe(health, now):
            return Admission(allowed=False, retry_at=health.probe_until, rate_limited=limited)
        # Only one replica wins the probe lease; the others treat the route as still cooling.
        if not await self._claim_probe(route):
            return Admission(allowed=False, retry_at=now + self.policy.probe_timeout_s, rate_limited=limited)
        await self._save(route, start_probe(health, now, self.policy), now)
        return Admission(allowed=True, probe=True)

    async def failure(self, route: str, hold_s: float | None = None) -> RouteHealth:
        """Record a failed attempt on ``route`` (``hold_s``: the upstream asked for that long a pause)."""
        now = self.clock()
        health = record_failure(await self.health(route), now, self.policy, hold_s)
        await self._save(route, health, now)
        if health.open_until is not None:
            await self.store.delete(f"{self._key(route)}:probe")
        return health

    async def success(self, route: str) -> None:
        """Record a successful attempt on ``route``; closes a half-open circuit."""
        now = self.clock()
        before = await self.health(route)
        after = record_success(before, now)
        if after != before:
            await self._save(route, after, now)
            await self.store.delete(f"{self._key(route)}:probe")
