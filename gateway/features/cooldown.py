"""Circuit breaking for routes: take an upstream out when most of its requests fail, probe it back in.

The state machine for one route, as pure functions over :class:`RouteHealth` with the time passed in:

- **closed**: the route takes traffic. Every outcome is counted in a rolling window of ``window_s`` seconds
  (:data:`BUCKETS` buckets). When a failure leaves at least ``min_requests`` requests in the window and a
  share of failures of at least ``failure_rate``, the circuit opens. Below the minimum volume nothing opens:
  a few failures out of a few requests say nothing about an upstream, and retries hide them from clients.
- **open**: the route takes no traffic until ``open_until`` (``cooldown_s`` after it opened, or the
  upstream's ``retry-after`` when it sent one: then the route is *rate limited* and clients get 429).
- **half-open**: after ``open_until`` one request at a time (the probe) may use the route; others still
  skip it. The probe's answer closes the circuit at once and clears the counts; its failure re-opens it for
  twice the previous period, up to ``max_cooldown_s``, so a long outage is probed less and less often. A
  probe that never reports back (a crashed replica, a hung upstream) frees the probe slot after
  ``probe_timeout_s``.
- **the last option**: an open circuit is a hint, not a wall, when every route of a model is open (not rate
  limited). The router then asks for a *last-option* probe (``admit(route, last_option=True)``): one request
  at a time may try the route even before ``open_until``, and after a failed probe the next one waits
  ``cooldown_s`` (``probe_after``), however long the cooldown has grown. A model whose upstreams are all
  down answers 503 at once to everyone else, and serves again on the first probe after an upstream comes
  back, instead of after a cooldown that grew during the outage.

:class:`CooldownTracker` keeps this in the shared state store, so every replica sees the same health:

- the counts under ``gw:cd:<route>:n``: one hash of :data:`BUCKETS` slots (bucket number, requests,
  failures), updated by one atomic operation per outcome (:data:`COUNT_OUTCOME`); a success costs one
  increment, a failure also sums the buckets and says whether the window is over the threshold. The counts
  are cleared when a probe closes the circuit, so a recovered route starts with a fresh window;
- the open state as JSON under ``gw:cd:<route>``, written only on transitions (trip, probe result, hold).
  Times inside it come from ``clock`` (replicas' clocks are assumed roughly in sync; a skew of a second
  shifts a cooldown by that second); the store's own TTLs only clean up;
- the probe slot under ``gw:cd:<route>:probe``, claimed atomically (:data:`CLAIM_PROBE`) so replicas never
  probe a route twice at once.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.pipeline import Call
from gateway.stores.after_writes import defer
from gateway.stores.base import AtomicOp, MemoryData, Store, StoreUnavailable, Write, store_key

State = Literal["closed", "open", "half_open"]

# Buckets of the rolling window: the window slides by window_s / BUCKETS, and a route's counts are at most
# 3 * BUCKETS small integers in the store.
BUCKETS = 10


@dataclass(frozen=True)
class CooldownPolicy:
    """When a route is taken out and for how long (see the module docstring and docs/gateway/routing.md)."""

    min_requests: int = 20
    failure_rate: float = 0.5
    window_s: float = 10.0
    cooldown_s: float = 1.0
    max_cooldown_s: float = 30.0
    probe_timeout_s: float = 5.0

    @property
    def bucket_s(self) -> float:
        """The width of one bucket of the rolling window."""
        return self.window_s / BUCKETS


@dataclass(frozen=True)
class RouteHealth:
    """A route's circuit: when it closes again and the period it was opened for; closed when empty."""

    open_until: float | None = None
    period_s: float = 0.0
    # Opened by an upstream's retry-after (rate limited) rather than by failures: clients get 429, not 503.
    rate_limited: bool = False
    # After a failed probe, the next last-option probe waits until then.
    probe_after: float | None = None

    def to_json(self) -> str:
        """Serialise for the state store."""
        return json.dumps(
            {
                "open_until": self.open_until,
                "period_s": self.period_s,
                "rate_limited": self.rate_limited,
                "probe_after": self.probe_after,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes | None) -> RouteHealth:
        """Read what :meth:`to_json` wrote; anything unreadable counts as a healthy route (fail open)."""
        if not text:
            return _CLOSED if cls is RouteHealth else cls()
        try:
            data = json.loads(text)
            open_until, probe_after = data.get("open_until"), data.get("probe_after")
            return cls(
                open_until=None if open_until is None else float(open_until),
                period_s=float(data.get("period_s", 0.0)),
                rate_limited=bool(data.get("rate_limited", False)),
                probe_after=None if probe_after is None else float(probe_after),
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


def trip(health: RouteHealth, now: float, policy: CooldownPolicy) -> RouteHealth:
    """The failure rate crossed the threshold: open a closed circuit for the first cooldown."""
    if state_of(health, now) != "closed":
        return health  # already open or probing: the probe decides
    return RouteHealth(open_until=now + policy.cooldown_s, period_s=policy.cooldown_s)


def hold(health: RouteHealth, now: float, hold_s: float) -> RouteHealth:
    """An upstream 429 with ``retry-after``: open the circuit at once for that long, as rate limited."""
    until = max(now + hold_s, health.open_until or 0.0)
    return RouteHealth(open_until=until, period_s=max(hold_s, health.period_s), rate_limited=True)


def probe_failed(health: RouteHealth, now: float, policy: CooldownPolicy) -> RouteHealth:
    """A probe failed: open again for twice the previous period, at most ``max_cooldown_s``; a last-option
    probe may follow after one first cooldown (``cooldown_s``)."""
    ceiling = max(policy.max_cooldown_s, policy.cooldown_s)
    period = min(max(health.period_s, policy.cooldown_s) * 2, ceiling)
    return RouteHealth(
        open_until=max(now + period, health.open_until or 0.0),
        period_s=period,
        probe_after=now + policy.cooldown_s,
    )


def tripped(requests: int, failures: int, policy: CooldownPolicy) -> bool:
    """Whether window counts open the circuit (the rule :data:`COUNT_OUTCOME` applies in the store)."""
    return requests >= policy.min_requests and failures * 1_000_000 >= _ppm(policy) * requests


_KEYS_KEPT = 4096


def _ppm(policy: CooldownPolicy) -> int:
    # Store operations take integers: the threshold in parts per million.
    return max(1, math.ceil(policy.failure_rate * 1_000_000))


# --- Store operations --------------------------------------------------------------------------------------
# Outcomes: a success, a failure, a failure of a request already counted as a success (a stream that broke
# after its first chunk), or a read of the counts.
SUCCESS, FAILURE, LATE_FAILURE, READ = 0, 1, 2, 3

# KEYS: the counts hash. ARGV: bucket number, outcome, buckets, min_requests, threshold ppm, ttl_ms.
# Slot i (bucket number mod buckets) holds fields e<i> (its bucket number), r<i> (requests), f<i> (failures).
# Returns: requests and failures in the window (0, 0 for a success: it cannot trip, so the sum is skipped),
# and 1 when they are at or over the threshold.
_COUNT_LUA = """
local bucket, outcome, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if outcome ~= 3 then
  local slot = bucket % n
  local e, r, f = 'e' .. slot, 'r' .. slot, 'f' .. slot
  if tonumber(redis.call('HGET', KEYS[1], e) or '-1') ~= bucket then
    redis.call('HSET', KEYS[1], e, bucket, r, 0, f, 0)
  end
  if outcome ~= 2 then redis.call('HINCRBY', KEYS[1], r, 1) end
  if outcome ~= 0 then redis.call('HINCRBY', KEYS[1], f, 1) end
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  if outcome == 0 then return {0, 0, 0} end
end
local requests, failures = 0, 0
for slot = 0, n - 1 do
  local v = redis.call('HMGET', KEYS[1], 'e' .. slot, 'r' .. slot, 'f' .. slot)
  local e = tonumber(v[1] or '-1')
  if e > bucket - n and e <= bucket then
    requests = requests + tonumber(v[2] or '0')
    failures = failures + tonumber(v[3] or '0')
  end
end
local over = requests >= tonumber(ARGV[4]) and failures * 1000000 >= tonumber(ARGV[5]) * requests
return {requests, failures, over and 1 or 0}
"""


def _count_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    bucket, outcome, n, min_requests, ppm, ttl_ms = args
    slots = data.get(keys[0])
    if slots is None or len(slots) != n:
        slots = [[-1, 0, 0] for _ in range(n)]
    if outcome != READ:
        slot = slots[bucket % n]
        if slot[0] != bucket:
            slot[:] = [bucket, 0, 0]
        slot[1] += outcome != LATE_FAILURE
        slot[2] += outcome != SUCCESS
        data.set(keys[0], slots, ttl_ms)
        if outcome == SUCCESS:
            return [0, 0, 0]
    live = [slot for slot in slots if bucket - n < slot[0] <= bucket]
    requests, failures = sum(s[1] for s in live), sum(s[2] for s in live)
    over = requests >= min_requests and failures * 1_000_000 >= ppm * requests
    return [requests, failures, int(over)]


COUNT_OUTCOME = AtomicOp(
    name="cooldown_count_outcome",
    lua=_COUNT_LUA,
    memory=_count_memory,
    # With the store down nothing is counted and no circuit opens (routes count as healthy).
    fail_open=lambda keys, args: [0, 0, 0],
)


def _claim_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    if data.get(keys[0]) is not None:
        return [0]
    data.set(keys[0], 1, args[0])
    return [1]


# KEYS: the probe slot.  ARGV: lease time in ms.  Returns 1 when this caller took the slot.
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


# A healthy route's record and the answer for it, made once: every request reads its route's record (absent
# while the route is healthy) and is admitted; both are frozen, so one instance serves them all.
_CLOSED = RouteHealth()
_ADMITTED = Admission(allowed=True)


@dataclass
class CooldownTracker:
    """Route health shared through the state store, with time from ``clock`` (wall-clock seconds).

    Store cost per attempt: ``admit`` reads the route's state (one GET); the outcome is one atomic
    operation (a success: one hash increment; a failure: the increment plus a read of the window's buckets).
    Transitions add a write or a few deletes.
    """

    store: Store
    policy: CooldownPolicy
    clock: Callable[[], float]
    # Multi-region: told of every route this replica opens, to publish it to other regions
    # (gateway/features/cooldown_events.py).
    on_open: Callable[[str, RouteHealth], None] | None = None
    # Each route's store key and the outcome count's arguments that follow from the policy, made once: every
    # answered request reads a route's key twice and counts its outcome (1.4 us of formatting and
    # arithmetic per request, measured). Keys of at most _KEYS_KEPT routes are kept (the config's routes;
    # the admin API may name others).
    _keys: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _count_keys: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _count_tail: tuple[CooldownPolicy, list[int]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _key(self, route: str) -> str:
        key = self._keys.get(route)
        if key is None:
            key = store_key("cd", route)
            if len(self._keys) < _KEYS_KEPT:
                self._keys[route] = key
        return key

    def _count_key(self, route: str) -> str:
        """The store key of ``route``'s outcome counts in the current window."""
        key = self._count_keys.get(route)
        if key is None:
            key = self._key(route) + ":n"
            if len(self._count_keys) < _KEYS_KEPT:
                self._count_keys[route] = key
        return key

    def key_of(self, route: str) -> str:
        """The store key of ``route``'s circuit state (what :meth:`health` reads)."""
        return self._key(route)

    async def _claim_probe(self, route: str) -> bool:
        lease_ms = max(1, int(self.policy.probe_timeout_s * 1000))
        result = await self.store.run(CLAIM_PROBE, [self._key(route) + ":probe"], [lease_ms])
        return bool(result and result[0] == 1)

    def _count_args(self, outcome: int) -> list[int]:
        policy = self.policy
        known = self._count_tail
        if known is None or known[0] is not policy:
            ttl_ms = max(1, math.ceil((policy.window_s + policy.bucket_s) * 1000))
            known = self._count_tail = (policy, [BUCKETS, policy.min_requests, _ppm(policy), ttl_ms])
        return [int(self.clock() / policy.bucket_s), outcome, *known[1]]

    async def _count(self, route: str, outcome: int) -> tuple[int, int, bool]:
        args = self._count_args(outcome)
        result = await self.store.run(COUNT_OUTCOME, [self._count_key(route)], args)
        if len(result) != 3:
            return 0, 0, False
        return int(result[0]), int(result[1]), result[2] == 1

    def _ttl(self, health: RouteHealth, now: float) -> float:
        # Keep the record while it is open and long enough after that for its probe to report (the period
        # it grew to is only worth keeping while the route is still being probed).
        horizon = max(now, health.open_until or 0.0)
        return max(1.0, horizon - now + self.policy.max_cooldown_s + self.policy.probe_timeout_s)

    async def health(self, route: str) -> RouteHealth:
        """The stored circuit state of ``route``."""
        return RouteHealth.from_json(await self.store.get(self._key(route)))

    async def counts(self, route: str) -> tuple[int, int]:
        """Requests and failures of ``route`` in the current window (for the admin API)."""
        requests, failures, _ = await self._count(route, READ)
        return requests, failures

    async def reset(self, route: str) -> None:
        """Close ``route``'s circuit now, on every replica: drop its open state, its window's counts and
        its probe slot, as a successful probe does (the admin API's cooldown reset)."""
        for suffix in ("", ":n", ":probe"):
            await self.store.delete(self._key(route) + suffix)

    async def _save(self, route: str, health: RouteHealth, now: float, *, publish: bool = True) -> None:
        if health == _CLOSED:
            await self.store.delete(self._key(route))
            return
        await self.store.set(self._key(route), health.to_json().encode(), self._ttl(health, now))
        if publish and self.on_open is not None and health.open_until is not None:
            self.on_open(route, health)

    async def adopt(self, route: str, health: RouteHealth) -> bool:
        """Apply another region's open state of ``route`` unless the local one already lasts as long; never
        published again. True when written."""
        now = self.clock()
        if health.open_until is None or health.open_until <= now:
            return False
        with contextlib.suppress(StoreUnavailable):
            local = await self.health(route)
            if state_of(local, now) != "closed" and (local.open_until or 0.0) >= health.open_until:
                return False
            await self._save(route, health, now, publish=False)
            return True
        return False

    async def admit(
        self, route: str, *, last_option: bool = False, health: RouteHealth | None = None
    ) -> Admission:
        """Decide whether a request may use ``route`` now; claims the probe of a half-open route.

        ``last_option``: every route the request could use is open, so an open (not rate limited) route
        may be probed before its cooldown ends, one request at a time. ``health``: the route's state as
        just read (with the request's admission), instead of reading it now.
        """
        now = self.clock()
        if health is None:
            health = await self.health(route)
        state = state_of(health, now)
        if state == "closed":
            return _ADMITTED
        limited = health.rate_limited
        if state == "open" and (limited or not last_option):
            return Admission(allowed=False, retry_at=health.open_until, rate_limited=limited)
        if state == "open" and health.probe_after is not None and now < health.probe_after:
            return Admission(allowed=False, retry_at=health.probe_after)
        if await self._claim_probe(route):
            return Admission(allowed=True, probe=True)
        # Another request (on any replica) is probing; its answer decides, so ask clients to come back soon.
        return Admission(allowed=False, retry_at=now + self.policy.cooldown_s, rate_limited=limited)

    async def failure(
        self, route: str, *, hold_s: float | None = None, probe: bool = False, late: bool = False
    ) -> None:
        """Record a failed attempt on ``route``.

        ``hold_s``: the upstream asked for that long a pause (retry-after). ``probe``: the attempt was a
        probe. ``late``: a stream that broke after its first chunk, already counted as a success.
        """
        # An outcome is bookkeeping: with the store down (fail_closed) it is dropped rather than failing a
        # request that may still succeed; the store logs the outage once.
        with contextlib.suppress(StoreUnavailable):
            await self._failure(route, hold_s, probe, late)

    async def _failure(self, route: str, hold_s: float | None, probe: bool, late: bool) -> None:
        now = self.clock()
        if hold_s is not None and hold_s > 0:
            health = hold(await self.health(route), now, hold_s)
            await self._save(route, health, now)
            await self.store.delete(f"{self._key(route)}:probe")
        elif probe:
            await self._save(route, probe_failed(await self.health(route), now, self.policy), now)
            await self.store.delete(f"{self._key(route)}:probe")
        else:
            _, _, over = await self._count(route, LATE_FAILURE if late else FAILURE)
            if over:
                before = await self.health(route)
                after = trip(before, now, self.policy)
                if after != before:  # an open circuit stays as it is: its probe decides
                    await self._save(route, after, now)

    async def success(self, route: str, *, probe: bool = False, call: Call | None = None) -> None:
        """Record an answered attempt on ``route``; a probe's answer closes the circuit.

        With ``call``, a plain answer's count (whose result nobody reads) joins the request's other writes
        after the answer, sent in one round trip (``gateway.stores.after_writes``).
        Never raises for the store: the answer is in hand and must reach the client (see :meth:`failure`).
        """
        pending = self.success_now(route, probe=probe, call=call)
        if pending is not None:
            await pending

    def success_now(
        self, route: str, *, probe: bool = False, call: Call | None = None
    ) -> Awaitable[None] | None:
        """:meth:`success`, done now when that needs no await (the count deferred with ``call``'s other
        writes after the answer), else what to await."""
        if not probe:
            # Every answered request comes here: its count's key is kept per route, and the write is
            # deferred without a context manager around it (nothing here can raise before the store).
            write = Write([self._count_key(route)], COUNT_OUTCOME, self._count_args(SUCCESS))
            if call is not None and defer(call, write, self.store):
                return None
        return self._success_on_store(route, probe)

    async def _success_on_store(self, route: str, probe: bool) -> None:
        with contextlib.suppress(StoreUnavailable):
            if not probe:
                await self._count(route, SUCCESS)
                return
            await self.reset(route)
