"""Atomic operations shared by the features: rate limits, concurrency leases, reservations, windowed counters.

Each is an `AtomicOp` with a Lua script for Redis and a Python function for memory that implement the same
semantics; `tests/gateway/test_stores.py` runs every operation against both backends. Times are microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.stores.base import AtomicOp, MemoryData

# --- GCRA --------------------------------------------------------------------------------------------------
# Generic cell rate algorithm over several limits at once, all or nothing: a request is admitted only when
# every limit (say key RPM, key TPM, model RPM) admits it, and only then are all of them charged. Each limit
# stores one number, its theoretical arrival time (TAT); `limit` units may be spent back to back from idle
# and the allowance refills continuously at limit/period, so there is no burst at a window edge.
#
# KEYS: one per limit.  ARGV: force, then (period_us, limit, cost) per key.
# force=1 charges even when over the limit (reconciling real usage) and may refund (negative cost).
# Returns: allowed, then (remaining, reset_us, retry_after_us) per key; retry_after_us = -1 when cost > limit.
#
# TATs are whole microseconds and a request's increment cost*period/limit is rounded down: floats that drift
# up would refuse the last unit of a burst (9 requests of 9 per minute), while rounding down gives at most
# one microsecond per request, never a unit. Remaining units are computed as (free time * limit) / period,
# exact in doubles for any realistic limit.

_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local force = tonumber(ARGV[1]) == 1
local n = #KEYS
local tats, news, ok = {}, {}, true
for i = 1, n do
  local period = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + math.floor(cost * period / limit)
  if cost > limit or news[i] - period > now then ok = false end
end
local out = {(ok or force) and 1 or 0}
for i = 1, n do
  local period = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local state = tats[i]
  if ok or force then
    state = news[i]
    if state <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%.0f', state), 'PX', math.ceil((state - now) / 1000))
    end
  end
  local busy = math.max(state - now, 0)
  local remaining = math.floor((period - busy) * limit / period)
  if remaining < 0 then remaining = 0 end
  local retry = 0
  if cost > limit then
    retry = -1
  elseif not ok then
    retry = math.max(0, news[i] - period - now)
  end
  out[#out + 1] = remaining
  out[#out + 1] = busy
  out[#out + 1] = retry
end
return out
"""


def _gcra_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    now = data.now_us
    force = args[0] == 1
    specs = [(args[3 * i + 1], args[3 * i + 2], args[3 * i + 3]) for i in range(len(keys))]
    tats: list[int] = []
    news: list[int] = []
    ok = True
    for key, (period, limit, cost) in zip(keys, specs, strict=True):
        tat = max(int(data.get(key) or 0), now)
        tats.append(tat)
        news.append(tat + (cost * period) // limit)
        if cost > limit or news[-1] - period > now:
            ok = False
    out = [1 if ok or force else 0]
    for key, (period, limit, cost), tat, new in zip(keys, specs, tats, news, strict=True):
        state = tat
        if ok or force:
            state = new
            if state <= now:
                data.delete(key)
            else:
                data.set(key, state, math.ceil((state - now) / 1000))
        busy = max(state - now, 0)
        remaining = max(0, (period - busy) * limit // period)
        retry = -1 if cost > limit else (0 if ok else max(0, new - period - now))
        out += [remaining, busy, retry]
    return out


GCRA = AtomicOp(
    name="gcra",
    lua=_GCRA_LUA,
    memory=_gcra_memory,
    fail_open=lambda keys, args: [1, *(x for i in range(len(keys)) for x in (args[3 * i + 2], 0, 0))],
)

# --- Concurrency leases ------------------------------------------------------------------------------------
# A sorted set of lease ids scored by expiry: a replica that dies mid-request leaks its slot only until the
# lease expires, unlike a bare counter. KEYS: the limit's key. ARGV: limit, ttl_us, lease id.
# Returns: acquired (0/1), leases held after the call.

_LEASE_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= limit then return {0, held} end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000))
return {1, held + 1}
"""


def _lease_acquire_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    limit, ttl, lease = args[0], args[1], args[2]
    now = data.now_us
    leases = {k: exp for k, exp in (data.get(keys[0]) or {}).items() if exp > now}
    if len(leases) >= limit:
        data.set(keys[0], leases, math.ceil(ttl / 1000))
        return [0, len(leases)]
    leases[lease] = now + ttl
    data.set(keys[0], leases, math.ceil(ttl / 1000))
    return [1, len(leases)]


LEASE_ACQUIRE = AtomicOp(
    name="lease_acquire",
    lua=_LEASE_ACQUIRE_LUA,
    memory=_lease_acquire_memory,
    fail_open=lambda keys, args: [1, 0],
)

_LEASE_RELEASE_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
return {redis.call('ZCARD', KEYS[1])}
"""


def _lease_release_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    leases = data.get(keys[0]) or {}
    leases.pop(args[0], None)
    return [len(leases)]


LEASE_RELEASE = AtomicOp(
    name="lease_release",
    lua=_LEASE_RELEASE_LUA,
    memory=_lease_release_memory,
    fail_open=lambda keys, args: [0],
)

# --- Reserve if it fits ------------------------------------------------------------------------------------
# An integer counter that only grows while it stays within a limit; negative deltas (settle, release) always
# apply. KEYS: the counter. ARGV: delta, limit, ttl_ms (0: no expiry; set when the counter is created).
# Returns: applied (0/1), value after the call.

_ADD_WITHIN_LUA = """
local delta, limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if delta > 0 and cur + delta > limit then return {0, cur} end
local new = cur + delta
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'KEEPTTL')
elseif ttl > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', ttl)
else
  redis.call('SET', KEYS[1], string.format('%.0f', new))
end
return {1, new}
"""


def _add_within_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    delta, limit, ttl = args[0], args[1], args[2]
    entry = data.get(keys[0])
    cur = 0 if entry is None else entry[0]
    if delta > 0 and cur + delta > limit:
        return [0, cur]
    # Keep the original expiry, like Redis's KEEPTTL.
    expires = entry[1] if entry is not None else (data.now_us + ttl * 1000 if ttl > 0 else None)
    remaining_ms = None if expires is None else max(1, math.ceil((expires - data.now_us) / 1000))
    data.set(keys[0], (cur + delta, expires), remaining_ms)
    return [1, cur + delta]


ADD_WITHIN = AtomicOp(
    name="add_within",
    lua=_ADD_WITHIN_LUA,
    memory=_add_within_memory,
    fail_open=lambda keys, args: [1, 0],
)

# --- Counter in a window -----------------------------------------------------------------------------------
# Counts events in a fixed window that starts with the first event (failures before a cooldown).
# KEYS: the counter. ARGV: window_ms. Returns: the count after this event.

_INCR_WINDOW_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n}
"""


def _incr_window_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    entry = data.get(keys[0])
    if entry is None:
        data.set(keys[0], (1, data.now_us + args[0] * 1000), args[0])
        return [1]
    count, expires = entry
    data.set(keys[0], (count + 1, expires), max(1, math.ceil((expires - data.now_us) / 1000)))
    return [count + 1]


INCR_WINDOW = AtomicOp(
    name="incr_window",
    lua=_INCR_WINDOW_LUA,
    memory=_incr_window_memory,
    fail_open=lambda keys, args: [0],
)
