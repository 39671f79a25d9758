"""In-process memory backend: the default for a single gateway replica.

Atomicity comes from the event loop: `run` calls the operation's Python implementation without awaiting, so no
other coroutine can interleave between its read and its write. Bytes values are bounded (total bytes and
entries) and evicted least recently used; operation state (counters, reservations) lives apart and is never
evicted, only expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from gateway.stores.admission import admit_in_memory, refusal_in_memory
from gateway.stores.base import Admitted, AtomicOp, Step, Write

# Expired entries are also removed lazily on access; a periodic sweep bounds what idle keys cost. It looks
# at every entry, so it runs at most once per as many calls as there are entries (at least every
# `_SWEEP_EVERY` calls): its cost per call stays constant however many entries the cache holds (every 1024
# calls it was 0.7 % of a production request's CPU with a cache filling up, and growing with it).
_SWEEP_EVERY = 1024


class _OpData:
    """The `MemoryData` view an operation's Python implementation works on."""

    def __init__(self, table: dict[str, tuple[Any, int | None]], now_us: int) -> None:
        self._table = table
        self.now_us = now_us

    def get(self, key: str) -> Any | None:
        entry = self._table.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= self.now_us:
            del self._table[key]
            return None
        return value

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        expires = None if ttl_ms is None else self.now_us + max(1, ttl_ms) * 1000
        self._table[key] = (value, expires)

    def delete(self, key: str) -> None:
        self._table.pop(key, None)


class MemoryStore:
    """A `Store` kept in this process; state is lost on restart and not shared between replicas."""

    backend = "memory"
    healthy = True  # this process: never unreachable

    def __init__(
        self,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._clock = clock
        self._values: OrderedDict[str, tuple[bytes, int | None]] = OrderedDict()
        self._bytes = 0
        self._ops: dict[str, tuple[Any, int | None]] = {}
        self._calls = 0  # every call that may change the state counts (see `_checked`)
        self._next_sweep = _SWEEP_EVERY
        # The last admitting check `refusal` made of a hit step, as (`_calls` then, the step, its finish,
        # the data view it ran on): the `admit_now` that follows it (the same request's admission, when its
        # cache entry exists) runs that step first and reuses the check while nothing touched the store in
        # between, so the refusal pre-check costs an admitted cache hit nothing. A miss, too, runs on the
        # same view, at the same time: one clock read per admission.
        self._checked: tuple[int, Step, Callable[[bool], list[int]], _OpData] | None = None

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    @property
    def size_bytes(self) -> int:
        """Total bytes of the values currently held (what `max_bytes` bounds)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._values)

    async def get(self, key: str) -> bytes | None:
        """The value under `key` (and mark it recently used), or None."""
        self._tick()
        return self._get(key)

    def _get(self, key: str, now_us: int | None = None) -> bytes | None:
        """`get` without the tick; `now_us`: the time the caller read already (one clock read for all the
        keys of an admission, which reads the cache entry and its generation tokens on every request)."""
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= (self._now_us() if now_us is None else now_us):
            self._drop(key)
            return None
        self._values.move_to_end(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under `keys`, in order (each as `get` would answer)."""
        self._tick()
        return [self._get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value`; a value larger than `max_bytes` is not stored; older values are evicted to fit."""
        self._tick()
        self._set(key, value, ttl)

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._drop(key)
        if len(value) > self.max_bytes:
            return
        expires = None if ttl is None else self._now_us() + int(ttl * 1_000_000)
        self._values[key] = (value, expires)
        self._bytes += len(value)
        while self._bytes > self.max_bytes or len(self._values) > self.max_entries:
            oldest = next(iter(self._values))
            self._drop(oldest)

    async def delete(self, key: str) -> None:
        """Remove `key` from values and operation state."""
        self._tick()
        self._drop(key)
        self._ops.pop(key, None)

    async def run(self, op: AtomicOp, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        """Run `op`'s Python implementation; nothing awaits inside, so it is atomic within the event loop."""
        self._tick()
        return op.memory(_OpData(self._ops, self._now_us()), list(keys), [int(a) for a in args])

    async def admit(
        self,
        steps: Sequence[Step],
        reads: Sequence[str] = (),
        *,
        guard: str | None = None,
        on_hit: Sequence[Step] = (),
    ) -> Admitted:
        """Run `steps` (or `on_hit` when `guard` is held) all or nothing, then read `reads`; nothing
        suspends in between, so it is atomic."""
        return self.admit_now(lambda: steps, reads, guard=guard, on_hit=on_hit)

    def admit_now(
        self,
        steps: Callable[[], Sequence[Step]],
        reads: Sequence[str] = (),
        *,
        guard: str | None = None,
        on_hit: Sequence[Step] = (),
    ) -> Admitted:
        """`admit`, run now without awaiting (for callers in this process), with the miss's steps made by
        `steps` only on a miss: when `guard` is held the `on_hit` steps run and `steps` is never called,
        so a cache hit builds nothing it would not use (the budget's maximum cost, the token estimate)."""
        checked, self._checked = self._checked, None
        fresh = checked is not None and checked[0] == self._calls
        self._tick()
        data = checked[3] if fresh and checked is not None else _OpData(self._ops, self._now_us())
        now = data.now_us
        # The reads first: the steps touch only operation state, never these values, so this is what
        # reading after them gives; and the guard (the cache entry, also read) is then looked up once.
        values = [self._get(key, now) for key in reads]
        if guard is None:
            hit = False
        elif guard in reads:
            hit = values[reads.index(guard)] is not None
        else:
            hit = self._get(guard, now) is not None
        ran = on_hit if hit else steps()
        first = checked[2] if fresh and checked is not None and ran and ran[0] is checked[1] else None
        ok, results = admit_in_memory(data, ran, first)
        return Admitted(ok, results, values, [ok] * len(ran), hit)

    def refusal(self, step: Step | Callable[[], Step], hit_step: Step) -> list[int] | None:
        """`step`'s answer if `admit` would refuse it both on a miss and as a hit, charging nothing (see
        `refusal_in_memory`); None otherwise. In process this costs no round trip, so a refused request
        need not build the rest of its admission. `step` may be a function making it: it is called only
        when `hit_step` refuses (an admitted request never builds it here)."""
        data = _OpData(self._ops, self._now_us())
        answer, finish = refusal_in_memory(data, step, hit_step)
        self._checked = None if finish is None else (self._calls, hit_step, finish, data)
        return answer

    async def write_many(self, writes: Sequence[Write]) -> None:
        """Apply each write in turn (there is no round trip to save in process)."""
        self.write_now(writes)

    def write_now(self, writes: Sequence[Write]) -> None:
        """`write_many`, applied now without awaiting (for callers in this process: nothing to shield
        from cancellation, no coroutine per write)."""
        self._tick()
        data = _OpData(self._ops, self._now_us())
        for write in writes:
            if write.op is None:
                self._set(write.keys[0], write.value, write.ttl)
            else:
                write.op.memory(data, write.keys, write.args)

    async def ping(self) -> bool:
        """Always True: the memory backend is this process."""
        return True

    async def close(self) -> None:
        """Drop all state."""
        self._tick()
        self._values.clear()
        self._ops.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._values.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])

    def _tick(self) -> None:
        self._calls += 1
        if self._calls < self._next_sweep:
            return
        self._next_sweep = self._calls + max(_SWEEP_EVERY, len(self._values) + len(self._ops))
        now = self._now_us()
        for key in [k for k, (_, exp) in self._values.items() if exp is not None and exp <= now]:
            self._drop(key)
        for key in [k for k, (_, exp) in self._ops.items() if exp is not None and exp <= now]:
            del self._ops[key]
