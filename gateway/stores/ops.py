"""Atomic operations shared by the features: rate limits, concurrency leases, reservations, windowed counters.

Each is an `AtomicOp` with a Lua script for Redis and a Python function for memory that implement the same
semantics; `tests/gateway/test_stores.py` runs every operation against both backends. Times are microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from gateway.stores.base import AdmissionOp, AtomicOp, MemoryData

# --- GCRA --------------------------------------------------------------------------------------------------
# Generic cell rate algorithm over several limits at once, all or nothing: a request is admitted only when
# every limit (say key RPM, key TPM, model RPM) admits it, and only then are all of them charged. Each limit
# stores one number, its theoretical arrival time (TAT); `limit` units may be spent back to back from idle
# and the allowance refills continuously at limit/period, so there is no burst at a window edge.
#
# KEYS: one per limit.  ARGV: force, then (period_us, limit, cost) per key.
# force=1 charges even when over the limit (reconciling real usage) and may refund (negative cost); force=2
# (peek) answers as 0 would and charges nothing.
# Returns: allowed, then (remaining, reset_us, retry_after_us) per key; retry_after_us = -1 when cost > limit.
#
# TATs are whole microseconds and a request's increment cost*period/limit is rounded down: floats that drift
# up would refuse the last unit of a burst (9 requests of 9 per minute), while rounding down gives at most
# one microsecond per request, never a unit. Remaining units are computed as (free time * limit) / period,
# exact in doubles for any realistic limit.

# The GCRA step as Lua functions, shared by `GCRA` and the rate limit's `RL_ADMISSION` and `RL_FINISH`:
# `keys` the limits, their (period, limit, cost) triples from ARGV[base + 1], `mode` 0 (charge if every limit
# admits), 1 (force: charge regardless) or 2 (peek: compute the answer, charge nothing).
_GCRA_FUNCTIONS = """
local function gcra_check(keys, base, now)
  local tats, news, ok = {}, {}, true
  for i = 1, #keys do
    local period = tonumber(ARGV[base + 3 * i - 2])
    local limit = tonumber(ARGV[base + 3 * i - 1])
    local cost = tonumber(ARGV[base + 3 * i])
    local tat = tonumber(redis.call('GET', keys[i]) or '0')
    if tat < now then tat = now end
    tats[i] = tat
    news[i] = tat + math.floor(cost * period / limit)
    if cost > limit or news[i] - period > now then ok = false end
  end
  return ok, tats, news
end
local function gcra_apply(keys, base, now, ok, tats, news, charge, force)
  local out = {(ok or force) and 1 or 0}
  for i = 1, #keys do
    local period = tonumber(ARGV[base + 3 * i - 2])
    local limit = tonumber(ARGV[base + 3 * i - 1])
    local cost = tonumber(ARGV[base + 3 * i])
    local state = tats[i]
    if charge then
      state = news[i]
      if state <= now then
        redis.call('DEL', keys[i])
      else
        redis.call('SET', keys[i], string.format('%.0f', state), 'PX', math.ceil((state - now) / 1000))
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
end
local function gcra(keys, base, mode, now)
  local ok, tats, news = gcra_check(keys, base, now)
  return gcra_apply(keys, base, now, ok, tats, news, (ok and mode ~= 2) or mode == 1, mode == 1)
end
"""
_GCRA_FN = (
    _GCRA_FUNCTIONS
    + """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""
)

_GCRA_LUA = _GCRA_FN + "return gcra(KEYS, 1, tonumber(ARGV[1]), now)\n"

FORCE, PEEK = 1, 2


def _gcra_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int], base: int = 1) -> list[int]:
    mode = args[base - 1]
    ok, specs, tats, news = _gcra_plan(data, keys, args, base)
    charge = (ok and mode != PEEK) or mode == FORCE
    return _gcra_apply(data, keys, ok, specs, tats, news, charge, mode == FORCE)


def _gcra_plan(
    data: MemoryData, keys: Sequence[str], args: Sequence[int], base: int
) -> tuple[bool, list[tuple[int, int, int]], list[int], list[int]]:
    """Whether every limit admits its cost now, each limit's (period, limit, cost), its TAT and its TAT once
    charged: GCRA's check, which `_gcra_apply` turns into the answer (charging or not) without redoing it."""
    # One indexed pass (no slices, zips or int() of the stored TAT, an int in memory): every admission and
    # every cache hit's check runs this, and the slicing version cost a third of the check.
    now = data.now_us
    get = data.get
    specs: list[tuple[int, int, int]] = []
    tats: list[int] = []
    news: list[int] = []
    ok = True
    at = base
    for key in keys:
        period, limit, cost = spec = (args[at], args[at + 1], args[at + 2])
        at += 3
        tat = get(key) or 0
        if tat < now:
            tat = now
        new = tat + (cost * period) // limit
        specs.append(spec)
        tats.append(tat)
        news.append(new)
        if cost > limit or new - period > now:
            ok = False
    return ok, specs, tats, news


def _gcra_apply(
    data: MemoryData,
    keys: Sequence[str],
    ok: bool,
    specs: list[tuple[int, int, int]],
    tats: list[int],
    news: list[int],
    charge: bool,
    force: bool,
    *,
    answer: bool = True,
) -> list[int]:
    now = data.now_us
    out = [1 if ok or force else 0]
    for key, (period, limit, cost), tat, new in zip(keys, specs, tats, news, strict=True):
        state = tat
        # A charge that moves nothing (a cost of 0: a cache hit's token limits) writes nothing: the TAT
        # stays as it is (or, at or before now, counts as now either way).
        if charge and new != tat:
            state = new
            _store_tat(data, key, state, now)
        if not answer:
            continue
        # Comparisons, not max() calls: this answer is worked out for every admitted request.
        busy = state - now if state > now else 0
        remaining = (period - busy) * limit // period
        retry = -1 if cost > limit else (0 if ok else (new - period - now if new - period > now else 0))
        out.extend((remaining if remaining > 0 else 0, busy, retry))
    return out


def _store_tat(data: MemoryData, key: str, tat: int, now: int) -> None:
    """Keep ``tat`` as ``key``'s theoretical arrival time until it passes (one at or before now is none)."""
    if tat <= now:
        data.delete(key)
    else:
        data.set(key, tat, math.ceil((tat - now) / 1000))


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

# --- A rate-limited request in two trips: admit, then finish -----------------------------------------------
# The rate limit's GCRA limits and concurrency leases checked and taken in one step before the upstream (an
# `AdmissionOp`, so the budget's reservation runs in the same script: `gateway/stores/admission.py`), and
# tokens reconciled and leases released in one after it (four trips before: GCRA, lease, GCRA, release).
#
# RL_ADMISSION KEYS: n GCRA keys, then m lease keys (sorted sets as in LEASE_ACQUIRE).
#           ARGV: n, m, (period_us, limit, cost) per GCRA key, lease ttl_us, lease id, then the m limits.
# It admits when every GCRA limit does and no concurrency limit is full. When a GCRA limit refuses, no slot
# is looked at (a refusal costs what GCRA alone costs); when it is not charged (a slot is full, or another
# step of the admission refused) the GCRA answer is a peek. Answers: GCRA's allowed, the 1-based index of
# the first full concurrency limit (0: none, or GCRA refused), then GCRA's triples.

_RL_ADMIT_LUA = (
    _GCRA_FUNCTIONS
    + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local base = 2 + 3 * n
local ttl, id = tonumber(ARGV[base + 1]), ARGV[base + 2]
local gkeys = {}
for i = 1, n do gkeys[i] = KEYS[i] end
local ok, tats, news = gcra_check(gkeys, 2, now)
local full = 0
if ok then
  for j = 1, m do
    local k = KEYS[n + j]
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    if full == 0 and redis.call('ZCARD', k) >= tonumber(ARGV[base + 2 + j]) then full = j end
  end
end
return ok and full == 0, function(charge)
  local out = gcra_apply(gkeys, 2, now, ok, tats, news, charge, false)
  if charge then
    for j = 1, m do
      redis.call('ZADD', KEYS[n + j], string.format('%.0f', now + ttl), id)
      redis.call('PEXPIRE', KEYS[n + j], math.ceil(ttl / 1000))
    end
  end
  table.insert(out, 2, full)
  return out
end
"""
)


def _rl_admit_check(
    data: MemoryData, keys: Sequence[str], args: Sequence[int]
) -> tuple[bool, Callable[[bool], list[int]]]:
    # GCRA's own layout: the triples from args[2]. Checked first: a refused request touches no slot. The
    # charge in `_rl_admit_finish` applies this same check (nothing runs in between: the admission does not
    # await). The answer (each limit's remaining units and times) is only worked out there: a check whose
    # answer is not read (the in-process refusal pre-check of an admitted request) does not pay for it.
    # `finish` is a partial of a module function, not a closure: every check of every request made one,
    # with a cell for each variable it kept (allocations the profile of a loaded gateway showed).
    n = args[0]
    gkeys = keys[:n]
    plan = _gcra_plan(data, gkeys, args, 2)
    if not plan[0]:
        return False, partial(_rl_admit_finish, data, keys, args, gkeys, plan, 0, None)
    if n == len(keys):
        return True, partial(_rl_admit_finish, data, keys, args, gkeys, plan, 0, ())
    now = data.now_us
    base = 2 + 3 * n
    held = [{k: exp for k, exp in (data.get(key) or {}).items() if exp > now} for key in keys[n:]]
    full = next((j + 1 for j, leases in enumerate(held) if len(leases) >= args[base + 2 + j]), 0)
    return not full, partial(_rl_admit_finish, data, keys, args, gkeys, plan, full, held)


def _rl_admit_finish(
    data: MemoryData,
    keys: Sequence[str],
    args: Sequence[int],
    gkeys: Sequence[str],
    plan: tuple[bool, list[tuple[int, int, int]], list[int], list[int]],
    full: int,
    held: Sequence[dict[int, int]] | None,
    charge: bool,
) -> list[int]:
    """RL_ADMISSION's answer in memory, charging when `charge`: `held` is None when GCRA refused, else each
    concurrency limit's live leases as `_rl_admit_check` found them (`full`: the first full one)."""
    # GCRA's answer with `full` put in as the second value, in place (no copy of the answer).
    if held is None or not charge:
        out = _gcra_apply(data, gkeys, *plan, False, False)
        out.insert(1, full)
        return out
    out = _gcra_apply(data, gkeys, *plan, True, False)
    out.insert(1, 0)
    n = args[0]
    base = 2 + 3 * n
    ttl, lease = args[base], args[base + 1]
    for key, leases in zip(keys[n:], held, strict=True):
        leases[lease] = data.now_us + ttl
        data.set(key, leases, math.ceil(ttl / 1000))
    return out


RL_ADMISSION = AdmissionOp(
    name="rl_admit",
    lua=_RL_ADMIT_LUA,
    check=_rl_admit_check,
    fail_open=lambda keys, args: [1, 0, *(x for i in range(args[0]) for x in (args[3 + 3 * i], 0, 0))],
)
RL_ADMIT = RL_ADMISSION.alone()

# RL_FINISH KEYS: n GCRA keys (the token limits), then m lease keys.
#           ARGV: n, m, (period_us, limit, cost) per GCRA key, lease id.
# Charges (force) the cost difference of each token limit, then releases the lease. Returns nothing.

_RL_FINISH_LUA = (
    _GCRA_FN
    + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
if n > 0 then
  local gkeys = {}
  for i = 1, n do gkeys[i] = KEYS[i] end
  gcra(gkeys, 2, 1, now)
end
local id = ARGV[3 + 3 * n]
for j = 1, m do redis.call('ZREM', KEYS[n + j], id) end
return {}
"""
)


def _rl_finish_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    n = args[0]
    base = 2 + 3 * n
    if n:
        # GCRA forced (charged whatever the limit says), its answer not worked out: nobody reads it. In one
        # pass, without the plan's lists: every answered request reconciles its token estimate here.
        now = data.now_us
        get = data.get
        at = 2
        for key in keys[:n]:
            period, limit, cost = args[at], args[at + 1], args[at + 2]
            at += 3
            tat = get(key) or 0
            if tat < now:
                tat = now
            new = tat + (cost * period) // limit
            if new != tat:  # as `_gcra_apply` charging: a cost that moves nothing writes nothing
                _store_tat(data, key, new, now)
    for key in keys[n:]:
        (data.get(key) or {}).pop(args[base], None)
    return []


RL_FINISH = AtomicOp(
    name="rl_finish", lua=_RL_FINISH_LUA, memory=_rl_finish_memory, fail_open=lambda keys, args: []
)

# RL_STATUS KEYS: n GCRA keys, then m lease keys.  ARGV: n, m, (period_us, limit) per GCRA key.
# A read of the rate limit's state for its status report: writes nothing, so reading it never spends
# allowance or frees a slot. Returns per GCRA key (remaining, reset_us: time until the allowance is whole
# again), then per lease key the slots held (leases not yet expired).

_RL_STATUS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, n do
  local period, limit = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local busy = math.max(tonumber(redis.call('GET', KEYS[i]) or '0') - now, 0)
  out[#out + 1] = math.max(math.floor((period - busy) * limit / period), 0)
  out[#out + 1] = busy
end
for j = 1, m do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[n + j], '(' .. string.format('%.0f', now), '+inf')
end
return out
"""


def _rl_status_memory(data: MemoryData, keys: Sequence[str], args: Sequence[int]) -> list[int]:
    n, m = args[0], args[1]
    now = data.now_us
    out: list[int] = []
    for i in range(n):
        period, limit = args[2 + 2 * i], args[3 + 2 * i]
        busy = max(int(data.get(keys[i]) or 0) - now, 0)
        out += [max(0, (period - busy) * limit // period), busy]
    for key in keys[n : n + m]:
        out.append(sum(1 for expiry in (data.get(key) or {}).values() if expiry > now))
    return out


RL_STATUS = AtomicOp(
    name="rl_status",
    lua=_RL_STATUS_LUA,
    memory=_rl_status_memory,
    # Nothing known: every allowance reported whole and no slot held (the limiter itself fails open too).
    fail_open=lambda keys, args: [
        *(x for i in range(args[0]) for x in (args[3 + 2 * i], 0)),
        *(0 for _ in range(args[1])),
    ],
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
