"""Budget counters in the shared store: reserve if it fits, settle, restore, read.

Each budget window (one key or team, one period) is one store entry holding two integers in nano-dollars:
``spent`` (settled cost) and ``reserved`` (the maximum cost of requests in flight). A request reserves its
maximum possible cost against every budget that applies to it (its key's and its team's) in one atomic
operation, all or nothing, and only if ``spent + reserved + amount <= limit`` holds for each; afterwards it
settles: ``reserved -= amount`` and ``spent += real cost``. Because the check and the increment are one
operation (a Lua script in Redis, a non-awaiting Python function in memory), concurrent requests, even on
replicas sharing Redis, can never all pass the check before any of them is counted.

Entries expire an hour after their window ends (``total`` windows never expire).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.periods import Window
from gateway.stores import AtomicOp, MemoryData, Store, store_key

# Keep a window's counters a while after it ends, so a request that reserved just before midnight settles
# into the window it reserved in.
GRACE_SECONDS = 3600

# --- reserve: KEYS budget entries; ARGV amount, then (limit, ttl_ms) per key ----------------------------
# Returns {1, 0, then (spent, reserved) per key} when reserved, {0, i, spent, reserved} of the first budget i
# (1-based) it does not fit in.
_RESERVE_LUA = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if spent + reserved + amount > limit then return {0, i, spent, reserved} end
end
local out = {1, 0}
for i = 1, #KEYS do
  local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', amount)
  local ttl = tonumber(ARGV[2 * i + 1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
  out[#out + 1] = reserved
end
return out
"""


def _entry(data: MemoryData, key: str) -> list[int]:
    value = data.get(key)
    return list(value) if value is not None else [0, 0]


def _reserve_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    amount = args[0]
    entries = [_entry(data, key) for key in keys]
    for i, (spent, reserved) in enumerate(entries):
        if spent + reserved + amount > args[1 + 2 * i]:
            return [0, i + 1, spent, reserved]
    out = [1, 0]
    for i, (key, (spent, reserved)) in enumerate(zip(keys, entries, strict=True)):
        ttl = args[2 + 2 * i]
        data.set(key, (spent, reserved + amount), ttl if ttl > 0 else None)
        out += [spent, reserved + amount]
    return out


RESERVE = AtomicOp(
    name="budget_reserve",
    lua=_RESERVE_LUA,
    memory=_reserve_memory,
    # Redis down and state.on_error = fail_open: let the request through unbudgeted.
    fail_open=lambda keys, args: [1, 0, *([0, 0] * len(keys))],
)

# --- settle: KEYS budget entries; ARGV reserved amount, real cost, then ttl_ms per key -------------------
# Returns (spent, reserved) per key after settling.
_SETTLE_LUA = """
local amount, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', -amount)
  if reserved < 0 then
    redis.call('HSET', KEYS[i], 'reserved', 0)
    reserved = 0
  end
  local spent = redis.call('HINCRBY', KEYS[i], 'spent', cost)
  local ttl = tonumber(ARGV[2 + i])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
return out
"""


def _settle_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    amount, cost = args[0], args[1]
    out: list[int] = []
    for i, key in enumerate(keys):
        spent, reserved = _entry(data, key)
        spent, reserved = spent + cost, max(0, reserved - amount)
        ttl = args[2 + i]
        data.set(key, (spent, reserved), ttl if ttl > 0 else None)
        out += [spent, reserved]
    return out


SETTLE = AtomicOp(
    name="budget_settle",
    lua=_SETTLE_LUA,
    memory=_settle_memory,
    fail_open=lambda keys, args: [0, 0] * len(keys),
)

# --- restore: KEYS one entry; ARGV spent, ttl_ms. Sets spent only when the entry does not exist yet ------
# Returns {1} when restored, {0} when the entry already existed (another replica, or Redis kept it).
_RESTORE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1}
"""


def _restore_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    if data.get(keys[0]) is not None:
        return [0]
    data.set(keys[0], (args[0], 0), args[1] if args[1] > 0 else None)
    return [1]


RESTORE = AtomicOp(
    name="budget_restore", lua=_RESTORE_LUA, memory=_restore_memory, fail_open=lambda k, a: [0]
)

# --- read: KEYS entries; returns (spent, reserved) per key -------------------------------------------------
_READ_LUA = """
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  out[#out + 1] = tonumber(v[1] or '0')
  out[#out + 1] = tonumber(v[2] or '0')
end
return out
"""


def _read_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    return [n for key in keys for n in _entry(data, key)]


READ = AtomicOp(
    name="budget_read", lua=_READ_LUA, memory=_read_memory, fail_open=lambda k, a: [0, 0] * len(k)
)


@dataclass(frozen=True)
class BudgetSlot:
    """One budget's current window: whose it is (``scope`` ``key`` or ``team``), its limit and window."""

    scope: str
    name: str
    limit_nanos: int
    window: Window

    @property
    def store_key(self) -> str:
        """The store entry of this window, e.g. ``gw:budget:key:alice:daily:2026-03-08``."""
        return store_key("budget", self.scope, self.name, self.window.key)

    def ttl_ms(self, now: datetime) -> int:
        """How long the entry must live: until the window ends plus a grace hour; 0 for never."""
        left = self.window.seconds_left(now)
        return 0 if left is None else (left + GRACE_SECONDS) * 1000


@dataclass(frozen=True)
class Reservation:
    """The outcome of :meth:`BudgetBook.reserve`.

    ``ok`` tells whether it fits. When it does, ``usage`` holds ``(spent, reserved)`` of each slot after the
    reservation; when it does not, ``refused`` is the slot it did not fit in and ``usage`` its one pair.
    """

    ok: bool
    amount: int
    slots: tuple[BudgetSlot, ...]
    usage: tuple[tuple[int, int], ...]
    refused: BudgetSlot | None = None


class BudgetBook:
    """Reserve, settle, restore and read budget windows in a :class:`~gateway.stores.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def reserve(self, slots: Sequence[BudgetSlot], amount: int, now: datetime) -> Reservation:
        """Reserve ``amount`` nano-dollars in every slot, or in none if it does not fit in one of them."""
        args = [amount]
        for slot in slots:
            args += [slot.limit_nanos, slot.ttl_ms(now)]
        result = await self.store.run(RESERVE, [slot.store_key for slot in slots], args)
        if result[0] == 1:
            pairs = tuple((result[2 + 2 * i], result[3 + 2 * i]) for i in range(len(slots)))
            return Reservation(True, amount, tuple(slots), pairs)
        refused = slots[result[1] - 1]
        return Reservation(False, amount, tuple(slots), ((result[2], result[3]),), refused)

    async def settle(self, reservation: Reservation, cost: int, now: datetime) -> list[tuple[int, int]]:
        """Release ``reservation`` and charge the real ``cost``; returns ``(spent, reserved)`` per slot."""
        slots = reservation.slots
        args = [reservation.amount, cost, *(slot.ttl_ms(now) for slot in slots)]
        result = await self.store.run(SETTLE, [slot.store_key for slot in slots], args)
        return [(result[2 * i], result[2 * i + 1]) for i in range(len(slots))]

    async def restore(self, slot: BudgetSlot, spent: int, now: datetime) -> bool:
        """Set a window's spend (from the ledger) unless the store already has it; True when it was set."""
        result = await self.store.run(RESTORE, [slot.store_key], [spent, slot.ttl_ms(now)])
        return result[0] == 1

    async def read(self, slots: Sequence[BudgetSlot]) -> list[tuple[int, int]]:
        """``(spent, reserved)`` of each slot."""
        if not slots:
            return []
        result = await self.store.run(READ, [slot.store_key for slot in slots], [])
        return [(result[2 * i], result[2 * i + 1]) for i in range(len(slots))]


def fraction_used(spent: int, reserved: int, limit: int) -> float:
    """Share of ``limit`` taken by spend plus reservations (1.0 when the limit is 0)."""
    return 1.0 if limit <= 0 else (spent + reserved) / limit
