"""Budget counters in the shared store: reserve if it fits, settle, restore, read.

Each budget window (one key or team, one period) is one store entry holding two integers in nano-dollars:
``spent`` (settled cost) and ``reserved`` (the maximum cost of requests in flight). A request reserves its
maximum possible cost against every budget that applies to it (its key's and its team's) in one atomic
operation, all or nothing, and only if ``spent + reserved + amount <= limit`` holds for each; afterwards it
settles: ``reserved -= amount`` and ``spent += real cost``. Because the check and the increment are one
operation (a Lua script in Redis, a non-awaiting Python function in memory), concurrent requests, even on
replicas sharing Redis, can never all pass the check before any of them is counted.

Entries expire an hour after their window ends (``total`` windows never expire). Each reservation is also a
lease that expires (15 minutes by default): budget held by a replica that died mid-request comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import NamedTuple

from gateway.ids import IdSource
from gateway.periods import Window
from gateway.stores import AdmissionOp, AtomicOp, MemoryData, Step, Store, Write, store_key

# Keep a window's counters a while after it ends, so a request that reserved just before midnight settles
# into the window it reserved in.
GRACE_SECONDS = 3600

# Budget entries come in pairs of keys: a hash (``spent``, ``reserved`` and one ``r:<lease>`` field per
# reservation in flight, holding its amount) and a sorted set of the leases by expiry (microseconds, the
# store's clock). A reservation whose replica died before settling expires and is given back ("reaped") by the
# next operation on that budget, so a crash cannot hold budget forever.
_PURGE_FUNCTIONS = """
local function purge(h, z)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(expired) do
    local amount = tonumber(redis.call('HGET', h, 'r:' .. id) or '0')
    if amount > 0 and redis.call('HINCRBY', h, 'reserved', -amount) < 0 then
      redis.call('HSET', h, 'reserved', 0)
    end
    redis.call('HDEL', h, 'r:' .. id)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
local function counters(h)
  local v = redis.call('HMGET', h, 'spent', 'reserved')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
"""
_PURGE_LUA = (
    """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""
    + _PURGE_FUNCTIONS
)

# --- reserve: KEYS (hash, leases) per budget; ARGV amount, lease id, lease ttl (us), (limit, ttl_ms) each
# An `AdmissionOp`: the rate limit's admission runs in the same script (`gateway/stores/admission.py`), and
# nothing is reserved unless it admits too. Answers {1, 0, then (spent, reserved) per budget}: after the
# reservation when charged, as they stand when not; {0, i, spent, reserved} of the first budget i (1-based)
# it does not fit in.
_RESERVE_LUA = (
    _PURGE_FUNCTIONS
    + """
local amount, id, lease_ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 2
local now_counters = {}
for i = 1, n do
  local h = KEYS[2 * i - 1]
  purge(h, KEYS[2 * i])
  local spent, reserved = counters(h)
  if spent + reserved + amount > tonumber(ARGV[2 + 2 * i]) then
    return false, function(charge) return {0, i, spent, reserved} end
  end
  now_counters[i] = {spent, reserved}
end
return true, function(charge)
  local out = {1, 0}
  for i = 1, n do
    local h, z, ttl = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[3 + 2 * i])
    local spent, reserved = now_counters[i][1], now_counters[i][2]
    if charge then
      reserved = redis.call('HINCRBY', h, 'reserved', amount)
      redis.call('HSET', h, 'r:' .. id, amount)
      redis.call('ZADD', z, string.format('%.0f', now + lease_ttl), id)
      if ttl > 0 then
        redis.call('PEXPIRE', h, ttl)
        redis.call('PEXPIRE', z, ttl)
      end
    end
    out[#out + 1] = spent
    out[#out + 1] = reserved
  end
  return out
end
"""
)

# (spent, reserved, leases, earliest): ``earliest`` is no later than the first lease's expiry (a settled lease
# may leave it earlier, which only costs one look at the leases later).
_Entry = tuple[int, int, dict[int, tuple[int, int]], int]
_NEVER = 2**63


def _entry(data: MemoryData, key: str) -> _Entry:
    """(spent, reserved, leases, earliest) of a budget, expired leases given back.

    Before ``earliest`` no lease can have expired, and the entry is returned as stored: every reservation
    and settlement asks, and copying the leases of every request in flight each time made a budget's cost
    grow with the concurrency."""
    value = data.get(key)
    if value is None:
        return 0, 0, {}, _NEVER
    spent, reserved, leases, earliest = value
    now = data.now_us
    if now < earliest:
        return value
    live = {lease: (amount, expires) for lease, (amount, expires) in leases.items() if expires > now}
    for lease in leases.keys() - live.keys():
        reserved = max(0, reserved - leases[lease][0])
    return spent, reserved, live, min((expires for _, expires in live.values()), default=_NEVER)


def _reserve_check(
    data: MemoryData, keys: Sequence[str], args: Sequence[int]
) -> tuple[bool, Callable[[bool], list[int]]]:
    amount = args[0]
    hashes = keys[::2]
    entries = [_entry(data, key) for key in hashes]
    for i, (spent, reserved, _, _) in enumerate(entries):
        if spent + reserved + amount > args[3 + 2 * i]:
            return False, lambda charge, i=i, spent=spent, reserved=reserved: [0, i + 1, spent, reserved]
    # A partial, not a closure: no cell per kept variable on every request's reservation.
    return True, partial(_reserve_finish, data, hashes, entries, args)


def _reserve_finish(
    data: MemoryData, hashes: Sequence[str], entries: list[_Entry], args: Sequence[int], charge: bool
) -> list[int]:
    amount, lease, lease_ttl = args[0], args[1], args[2]
    out = [1, 0]
    for i, (key, (spent, reserved, leases, earliest)) in enumerate(zip(hashes, entries, strict=True)):
        if charge:
            ttl = args[4 + 2 * i]
            expires = data.now_us + lease_ttl
            leases[lease] = (amount, expires)
            reserved += amount
            data.set(key, (spent, reserved, leases, min(earliest, expires)), ttl if ttl > 0 else None)
        out += [spent, reserved]
    return out


RESERVATION = AdmissionOp(
    name="budget_reserve",
    lua=_RESERVE_LUA,
    check=_reserve_check,
    # Redis down and state.on_error = fail_open: let the request through unbudgeted.
    fail_open=lambda keys, args: [1, 0, *([0, 0] * (len(keys) // 2))],
)
RESERVE = RESERVATION.alone()

# --- check (a cache hit): KEYS (hash, leases) per budget; ARGV limit per budget ---------------------------
# A hit costs nothing, so it reserves nothing; but a key whose budget is used up is refused even a cached
# answer, as it is every other request (the design's order: budget before cache). Admits while something
# remains (spent + reserved < limit); answers {1, 0}, or {0, i, spent, reserved} of the first budget i that
# has nothing left. Never charges: expired leases are reaped, as every budget operation does.
_CHECK_LUA = (
    _PURGE_FUNCTIONS
    + """
for i = 1, #KEYS / 2 do
  local h = KEYS[2 * i - 1]
  purge(h, KEYS[2 * i])
  local spent, reserved = counters(h)
  if spent + reserved >= tonumber(ARGV[i]) then
    return false, function(charge) return {0, i, spent, reserved} end
  end
end
return true, function(charge) return {1, 0} end
"""
)


def _check_memory(
    data: MemoryData, keys: Sequence[str], args: Sequence[int]
) -> tuple[bool, Callable[[bool], list[int]]]:
    for i, key in enumerate(keys[::2]):
        spent, reserved, _, _ = _entry(data, key)
        if spent + reserved >= args[i]:
            return False, lambda charge, i=i, spent=spent, reserved=reserved: [0, i + 1, spent, reserved]
    return True, _remains_answer


def _remains_answer(charge: bool) -> list[int]:
    """REMAINS' answer when every budget has something left (one function for every hit, no closure)."""
    return [1, 0]


REMAINS = AdmissionOp(
    name="budget_remains",
    lua=_CHECK_LUA,
    check=_check_memory,
    fail_open=lambda keys, args: [1, 0],
)

# --- settle: KEYS (hash, leases) per budget; ARGV lease id, real cost, then ttl_ms per budget -----------
# Gives the lease's amount back (unless it expired and was reaped already) and adds the cost.
# Returns (spent, reserved) per budget after settling.
_SETTLE_LUA = (
    _PURGE_LUA
    + """
local id, cost = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS / 2 do
  local h, z, ttl = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[2 + i])
  local amount = tonumber(redis.call('HGET', h, 'r:' .. id) or '0')
  if amount > 0 and redis.call('HINCRBY', h, 'reserved', -amount) < 0 then
    redis.call('HSET', h, 'reserved', 0)
  end
  redis.call('HDEL', h, 'r:' .. id)
  redis.call('ZREM', z, id)
  redis.call('HINCRBY', h, 'spent', cost)
  if ttl > 0 then redis.call('PEXPIRE', h, ttl) end
  local spent, reserved = counters(h)
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
return out
"""
)


def _settle_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    lease, cost = args[0], args[1]
    out: list[int] = []
    for i, key in enumerate(keys[::2]):
        spent, reserved, leases, earliest = _entry(data, key)
        amount = leases.pop(lease, (0, 0))[0]
        spent, reserved = spent + cost, max(0, reserved - amount)
        ttl = args[2 + i]
        data.set(key, (spent, reserved, leases, earliest), ttl if ttl > 0 else None)
        out += [spent, reserved]
    return out


SETTLE = AtomicOp(
    name="budget_settle",
    lua=_SETTLE_LUA,
    memory=_settle_memory,
    fail_open=lambda keys, args: [0, 0] * (len(keys) // 2),
)

# --- restore: KEYS (hash, leases); ARGV spent, ttl_ms. Sets spent only when the budget has no entry yet --
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
    data.set(keys[0], (args[0], 0, {}, _NEVER), args[1] if args[1] > 0 else None)
    return [1]


RESTORE = AtomicOp(
    name="budget_restore", lua=_RESTORE_LUA, memory=_restore_memory, fail_open=lambda k, a: [0]
)

# --- reset: KEYS (hash, leases); ARGV ttl_ms. Zeroes ``spent``, keeps the reservations in flight (they
# settle as usual). An absent entry is created with spent 0, so a later restore from the ledger (which
# still holds the spend) does not bring the old amount back. Returns {reserved}.
_RESET_LUA = (
    _PURGE_LUA
    + """
purge(KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'spent', 0)
local _, reserved = counters(KEYS[1])
redis.call('HSET', KEYS[1], 'reserved', reserved)
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {reserved}
"""
)


def _reset_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    _, reserved, leases, earliest = _entry(data, keys[0])
    data.set(keys[0], (0, reserved, leases, earliest), args[0] if args[0] > 0 else None)
    return [reserved]


RESET = AtomicOp(name="budget_reset", lua=_RESET_LUA, memory=_reset_memory, fail_open=lambda k, a: [0])

# --- read: KEYS (hash, leases) per budget; reaps expired leases; returns (spent, reserved) per budget ----
_READ_LUA = (
    _PURGE_LUA
    + """
local out = {}
for i = 1, #KEYS / 2 do
  purge(KEYS[2 * i - 1], KEYS[2 * i])
  local spent, reserved = counters(KEYS[2 * i - 1])
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
return out
"""
)


def _read_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    return [n for key in keys[::2] for n in _entry(data, key)[:2]]


READ = AtomicOp(
    name="budget_read",
    lua=_READ_LUA,
    memory=_read_memory,
    fail_open=lambda keys, args: [0, 0] * (len(keys) // 2),
)


@dataclass(frozen=True)
class BudgetSlot:
    """One budget's current window: whose it is (``scope`` ``key`` or ``team``), its limit and window."""

    scope: str
    name: str
    limit_nanos: int
    window: Window

    # Cached: a budget rule hands out the same slot for its whole window, and every request's admission
    # and settlement asked for these strings again (about 1 % of a request's CPU).
    @cached_property
    def store_key(self) -> str:
        """The store entry of this window, e.g. ``gw:{budget}:key:alice:daily:2026-03-08``.

        Hash-tagged: one reservation spans the key's, its team's and other budgets atomically, so in a Redis
        Cluster all budget windows share one slot.
        """
        return store_key("budget", self.scope, self.name, self.window.key, together=True)

    @cached_property
    def store_keys(self) -> tuple[str, str]:
        """The window's counters and its leases (the sorted set of reservations in flight)."""
        return (self.store_key, self.store_key + ":leases")

    def ttl_ms(self, now: datetime) -> int:
        """How long the entry must live: until the window ends plus a grace hour; 0 for never."""
        # Kept for the second it holds for, as [from, until): every request's reservation and settlement
        # ask, and the date arithmetic was 1-2 % of a budgeted request's CPU.
        known = self.__dict__.get("_ttl")
        if known is not None and now.tzinfo is not None and known[0] <= now < known[1]:
            return known[2]
        left = self.window.seconds_left(now)
        if left is None:
            return 0
        ttl = (left + GRACE_SECONDS) * 1000
        end = self.window.end
        if left > 0 and end is not None and now.tzinfo is not None:
            # `left` is the ceiling of the seconds to `end`: the same for every instant in this second.
            self.__dict__["_ttl"] = (end - timedelta(seconds=left), end - timedelta(seconds=left - 1), ttl)
        return ttl


# A named tuple, like `Step` and `Write` (see gateway.stores.base): one per budgeted request.
class Reservation(NamedTuple):
    """The outcome of :meth:`BudgetBook.reserve`.

    ``ok`` tells whether it fits. When it does, ``usage`` holds ``(spent, reserved)`` of each slot after the
    reservation and ``lease`` identifies it for settling; when it does not, ``refused`` is the slot it did not
    fit in and ``usage`` that slot's one pair.
    """

    ok: bool
    amount: int
    slots: tuple[BudgetSlot, ...]
    usage: tuple[tuple[int, int], ...]
    lease: int = 0
    refused: BudgetSlot | None = None


def _keys(slots: Sequence[BudgetSlot]) -> list[str]:
    return [key for slot in slots for key in slot.store_keys]


class BudgetBook:
    """Reserve, settle, restore and read budget windows in a :class:`~gateway.stores.Store`.

    ``lease_seconds`` bounds how long a reservation holds budget without being settled: longer than any
    request takes, short enough that budget held by a crashed replica comes back soon.
    """

    def __init__(self, store: Store, *, lease_seconds: float = 900.0) -> None:
        self.store = store
        self.lease_us = int(lease_seconds * 1_000_000)
        self.ids = IdSource()

    def reservation_step(self, slots: Sequence[BudgetSlot], amount: int, now: datetime) -> Step:
        """The admission step reserving ``amount`` nano-dollars in every slot, or in none (see
        :meth:`reserve`); run with the rate limit's in one script (``gateway.admission``)."""
        lease = self.ids.int52()  # an integer (store arguments are), exact in Lua's doubles
        args = [amount, lease, self.lease_us]
        for slot in slots:
            args += [slot.limit_nanos, slot.ttl_ms(now)]
        return Step(RESERVATION, _keys(slots), args)

    @staticmethod
    def remains_step(slots: Sequence[BudgetSlot]) -> Step:
        """The admission step of a cache hit: admits while every slot has something left, reserves nothing."""
        return Step(REMAINS, _keys(slots), [slot.limit_nanos for slot in slots])

    @staticmethod
    def reservation(step: Step, slots: Sequence[BudgetSlot], result: Sequence[int]) -> Reservation:
        """The :class:`Reservation` that ``step``'s answer ``result`` describes."""
        amount, lease = int(step.args[0]), int(step.args[1])
        if result[0] == 1:
            pairs = tuple((result[2 + 2 * i], result[3 + 2 * i]) for i in range(len(slots)))
            return Reservation(True, amount, tuple(slots), pairs, lease)
        refused = slots[result[1] - 1]
        return Reservation(False, amount, tuple(slots), ((result[2], result[3]),), refused=refused)

    async def reserve(self, slots: Sequence[BudgetSlot], amount: int, now: datetime) -> Reservation:
        """Reserve ``amount`` nano-dollars in every slot, or in none if it does not fit in one of them."""
        step = self.reservation_step(slots, amount, now)
        return self.reservation(step, slots, await self.store.run(RESERVE, step.keys, step.args))

    async def settle(self, reservation: Reservation, cost: int, now: datetime) -> list[tuple[int, int]]:
        """Give ``reservation`` back and charge the real ``cost``; returns ``(spent, reserved)`` per slot.

        Settling twice gives nothing back the second time (the lease is gone) but charges ``cost`` again, so
        callers settle once.
        """
        slots = reservation.slots
        args = [reservation.lease, cost, *(slot.ttl_ms(now) for slot in slots)]
        result = await self.store.run(SETTLE, _keys(slots), args)
        return [(result[2 * i], result[2 * i + 1]) for i in range(len(slots))]

    def settle_write(self, reservation: Reservation, cost: int, now: datetime) -> Write:
        """:meth:`settle` as a `Write` to send with others (its answer is not read)."""
        slots = reservation.slots
        return Write(_keys(slots), SETTLE, [reservation.lease, cost, *(slot.ttl_ms(now) for slot in slots)])

    async def restore(self, slot: BudgetSlot, spent: int, now: datetime) -> bool:
        """Set a window's spend (from the ledger) unless the store already has it; True when it was set."""
        result = await self.store.run(RESTORE, slot.store_keys, [spent, slot.ttl_ms(now)])
        return result[0] == 1

    async def reset(self, slot: BudgetSlot, now: datetime) -> int:
        """Zero the window's spend, keeping reservations in flight; returns what is still reserved."""
        result = await self.store.run(RESET, slot.store_keys, [slot.ttl_ms(now)])
        return result[0]

    async def read(self, slots: Sequence[BudgetSlot]) -> list[tuple[int, int]]:
        """``(spent, reserved)`` of each slot (expired reservations given back first)."""
        if not slots:
            return []
        result = await self.store.run(READ, _keys(slots), [])
        return [(result[2 * i], result[2 * i + 1]) for i in range(len(slots))]
