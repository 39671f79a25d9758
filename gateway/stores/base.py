"""The state store interface shared by every feature that replicas must agree on.

A store holds two kinds of state:

* **values**: opaque bytes with an optional TTL (`get`/`set`/`delete`), used for cache entries and flags
  such as a route's cooldown;
* **atomic operations**: named read-modify-write steps (`run`) such as "check and update a rate limit" or
  "reserve an amount if it fits under a limit". Each `AtomicOp` carries two implementations of the same
  semantics: a Lua script (Redis runs it atomically, loaded once and called by EVALSHA) and a plain Python
  function (the memory backend runs it without awaiting, so no other coroutine can interleave).

Adding an atomic operation is one `AtomicOp(...)` value next to the feature that needs it; no backend changes.
Operations read the clock of the store (Redis `TIME` or the memory backend's clock), so replicas with skewed
clocks still agree. Arguments and results are integers (microseconds for time, micro-units for money),
because Redis truncates Lua numbers to integers on the way out.

Keys are built with `store_key(feature, *parts)`. Parts must never contain a raw API key: use the key's
hashed identity (`gateway.stores.hashed_id`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

OnError = Literal["fail_open", "fail_closed"]


class StoreUnavailable(Exception):
    """The shared store could not be reached and `state.on_error` is `fail_closed`.

    Stages turn this into a 503 in the OpenAI error envelope; the message never contains the store URL.
    """


class MemoryData(Protocol):
    """What an atomic operation's Python implementation may touch in the memory backend.

    Values are plain Python objects (ints, dicts); they live apart from the bytes values of `Store.set`, so
    the cache's LRU eviction never drops a rate-limit counter or a budget reservation.
    """

    now_us: int

    def get(self, key: str) -> Any | None:
        """The live value under `key`, or None when absent or expired."""

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl_ms` milliseconds (None: never)."""

    def delete(self, key: str) -> None:
        """Remove `key` if present."""


MemoryImpl = Callable[[MemoryData, Sequence[str], Sequence[int]], list[int]]


@dataclass(frozen=True)
class AtomicOp:
    """One atomic read-modify-write operation, implemented once per backend with the same semantics.

    `lua` receives `KEYS` and integer `ARGV`, and returns a flat array of integers. `memory(data, keys, args)`
    does the same against `MemoryData`. `fail_open(keys, args)` is the result the store returns instead when
    Redis is down and `state.on_error` is `fail_open`, so each operation states what "let it through" means.
    """

    name: str
    lua: str
    memory: MemoryImpl
    fail_open: Callable[[Sequence[str], Sequence[int]], list[int]]


CheckImpl = Callable[[MemoryData, Sequence[str], Sequence[int]], tuple[bool, Callable[[bool], list[int]]]]


@dataclass(frozen=True)
class AdmissionOp:
    """A check-then-apply operation that several stages' admissions run together, all or nothing.

    Admitting a request asks several features at once (rate limits and concurrency slots, budget
    reservations): each checks first, and only when every one of them admits does any of them charge, so a
    refused budget consumes no rate-limit allowance and a refused rate limit reserves no budget. `Store.admit`
    runs the operations of one request in one atomic step (one Lua script in Redis, see
    `gateway/stores/admission.py`).

    `lua` is the body of a Lua function `(KEYS, ARGV, now)` (its own keys and arguments, the store's clock in
    microseconds) that returns `ok, finish`: whether it admits, and a function `finish(charge)` that charges
    when `charge` is true and returns the operation's flat integer answer either way. `check(data, keys,
    args)` is the same for the memory backend. `fail_open` is the answer when the store is down and
    `state.on_error` is `fail_open`. `alone()` makes the operation an `AtomicOp` of its own.
    """

    name: str
    lua: str
    check: CheckImpl
    fail_open: Callable[[Sequence[str], Sequence[int]], list[int]]

    def alone(self) -> AtomicOp:
        """This operation run by itself: charged when its own check admits."""

        def memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
            ok, finish = self.check(data, keys, args)
            return finish(ok)

        lua = (
            "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
            f"local function step(KEYS, ARGV, now)\n{self.lua}\nend\n"
            "local ok, finish = step(KEYS, ARGV, now)\nreturn finish(ok)\n"
        )
        return AtomicOp(self.name, lua, memory, self.fail_open)


# `Step`, `Admitted` and `Write` are named tuples rather than frozen dataclasses: as immutable, but made in
# 0.4 us instead of 0.95 (a frozen dataclass sets each field through object.__setattr__), and a production
# request makes six to eight of them.


class Step(NamedTuple):
    """One `AdmissionOp` on its keys and arguments, as one stage contributes it to a request's admission."""

    op: AdmissionOp
    keys: Sequence[str]
    args: Sequence[int]


class Admitted(NamedTuple):
    """What `Store.admit` answers: `ok` when every step admitted (and so every one charged); `results` each
    step's answer in order (empty for a step not looked at because an earlier one refused); `values` the
    bytes under the keys read alongside (None for absent ones); `charged` whether each step charged (all
    of them when `ok`; on Redis Cluster, whose steps in other slots run apart, a step may have charged
    although a later one refused, and its stage must then give back what it took); `hit` when the guard
    key existed, so the `on_hit` steps ran instead (and `results` and `charged` are theirs)."""

    ok: bool
    results: list[list[int]]
    values: list[bytes | None]
    charged: list[bool]
    hit: bool = False


class Write(NamedTuple):
    """One write whose answer nobody reads, for `Store.write_many`: `op` run on `keys` with `args`, or, with
    `op` None, `value` stored under `keys[0]` for `ttl` seconds (as `Store.set`)."""

    keys: Sequence[str]
    op: AtomicOp | None = None
    args: Sequence[int] = ()
    value: bytes = b""
    ttl: float | None = None


@runtime_checkable
class Store(Protocol):
    """Shared state for the gateway's features: bytes values with TTL plus named atomic operations."""

    backend: str
    # False while the backend is known to be unreachable (set by the last call; fail open hides outages
    # from results, so callers that would write derived state first can skip it instead of timing out).
    healthy: bool

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None when absent, expired, or (fail open) the store is down."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under `keys`, in order, read in one round trip (the cache reads an entry and its
        generation tokens together); None for each absent one, or for all when (fail open) the store is
        down."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` under `key` for `ttl` seconds (None: no expiry); memory evicts LRU."""

    async def delete(self, key: str) -> None:
        """Remove `key` if present."""

    async def run(self, op: AtomicOp, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        """Run `op` atomically on `keys` with integer `args`; returns the operation's integer results."""

    async def admit(
        self,
        steps: Sequence[Step],
        reads: Sequence[str] = (),
        *,
        guard: str | None = None,
        on_hit: Sequence[Step] = (),
    ) -> Admitted:
        """Run `steps` as one atomic all-or-nothing operation (each checks in order, the first refusal stops
        the checks, and every step charges only when all admitted) and read `reads` alongside, in one round
        trip to a remote store. The reads are not part of the atomic step: they see the store as it is.

        With `guard`, the atomic operation runs `on_hit` instead of `steps` when the guard key exists (a
        cached answer: the rate limit then only counts a request, and nothing is reserved). A store that
        cannot check the guard in the same step (Redis Cluster) always runs `steps`.

        Raises `StoreUnavailable` when the store is down and `state.on_error` is `fail_closed`.
        """

    async def write_many(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in order, in one round trip to a remote store (each one atomic, not the batch).

        Raises `StoreUnavailable` when the store is down and `state.on_error` is `fail_closed`.
        """

    async def ping(self) -> bool:
        """True when the store answers now (readiness probes); never raises."""

    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""


def store_key(feature: str, *parts: str, together: bool = False) -> str:
    """The key for `parts` in `feature`'s namespace, e.g. `gw:rl:<key id>:rpm`.

    One prefix per feature keeps features from colliding and lets an operator inspect or flush one feature.
    `together=True` wraps the feature in a Redis Cluster hash tag (`gw:{rl}:...`): every such key of the
    feature hashes to one slot, which a feature needs when one atomic operation touches keys of different
    owners (a key's and a shared model's rate limits, a key's and its team's budgets). A single server or
    Sentinel ignores the braces; a cluster then keeps that feature's counters on one node, while untagged
    keys (cache entries, cooldowns) spread across the cluster.
    """
    if together:
        return ":".join(("gw", "{" + feature + "}", *parts))
    return ":".join(("gw", feature, *parts))


def hashed_id(secret: str) -> str:
    """A stable, non-reversible identity for a secret (an API key) that is safe in store keys and logs."""
    return hashlib.sha256(secret.encode()).hexdigest()[:24]
