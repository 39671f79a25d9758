"""Several stages' admission operations run as one atomic step: one Lua script in Redis, one call in memory.

A request is admitted by the rate limit (GCRA limits and concurrency slots) and the budget (a reservation
in every budget that applies) together: each `AdmissionOp` checks in turn, the first refusal stops the checks,
and each one charges only when all of them admitted. That is what keeps a refused budget from consuming
rate-limit allowance, and a refused rate limit from reserving budget, without any undo.

In Redis the operations of a request become one script, composed from their Lua bodies once per combination
of operations (a request with a budget and one without are two scripts) and loaded like any other. Its
`KEYS` and `ARGV` are the steps' own, one after the other; `ARGV` starts with the number of steps and each
step's key and argument counts, so every step's body sees only its own `KEYS` and `ARGV`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.stores.base import AdmissionOp, Admitted, MemoryData, Step


def _table(name: str, ops: Sequence[AdmissionOp]) -> str:
    return f"local {name} = {{}}\n" + "".join(
        f"{name}[{i}] = function(KEYS, ARGV, now)\n{op.lua}\nend\n" for i, op in enumerate(ops, start=1)
    )


def composite_lua(ops: Sequence[AdmissionOp], on_hit: Sequence[AdmissionOp] = ()) -> str:
    """One Lua script running `ops` as one all-or-nothing step (see the module docstring), or `on_hit`
    instead when the guard key (`KEYS[1]` when `ARGV[1]` is 1) exists.

    Returns `{hit, ok, then per step: the length of its answer, its answer}`; a step not looked at answers
    `{}`.
    """
    return (
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
        + _table("steps", ops)
        + _table("hit_steps", on_hit)
        + """
local function run(fns, ki, ai)
  local n = tonumber(ARGV[ai + 1])
  local counts = ai + 1
  ai = ai + 1 + 2 * n
  local finishes, ok = {}, true
  for i = 1, n do
    local nk, na = tonumber(ARGV[counts + 2 * i - 1]), tonumber(ARGV[counts + 2 * i])
    if ok then
      local k, a = {}, {}
      for j = 1, nk do k[j] = KEYS[ki + j] end
      for j = 1, na do a[j] = ARGV[ai + j] end
      local admits, finish = fns[i](k, a, now)
      finishes[i] = finish
      if not admits then ok = false end
    end
    ki, ai = ki + nk, ai + na
  end
  local out = {ok and 1 or 0}
  for i = 1, n do
    local answer = {}
    if finishes[i] then answer = finishes[i](ok) end
    out[#out + 1] = #answer
    for _, v in ipairs(answer) do out[#out + 1] = v end
  end
  return out
end
local guarded = tonumber(ARGV[1])
local out
if guarded == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  out = run(hit_steps, 1 + tonumber(ARGV[2]), 3 + tonumber(ARGV[3]))
  table.insert(out, 1, 1)
else
  out = run(steps, guarded, 3)
  table.insert(out, 1, 0)
end
return out
"""
    )


def _section(steps: Sequence[Step], keys: list[str]) -> list[int]:
    """Add `steps`' keys to `keys`; return their part of `ARGV`: the number of steps, each one's key and
    argument counts, then their arguments (one pass over the steps: this runs for every request)."""
    counts = [len(steps)]
    values: list[int] = []
    for step in steps:
        keys += step.keys
        counts += (len(step.keys), len(step.args))
        values += map(int, step.args)
    counts += values
    return counts


def composite_args(
    steps: Sequence[Step], guard: str | None = None, on_hit: Sequence[Step] = ()
) -> tuple[list[str], list[int]]:
    """The script's `KEYS` and `ARGV` for `steps` (and `on_hit` when `guard` exists)."""
    head = 0 if guard is None else 1
    keys = [] if guard is None else [guard]
    args = _section(steps, keys)
    argv = [head, len(keys) - head, len(args), *args]
    argv += _section(on_hit, keys)
    return keys, argv


def split_answer(raw: Sequence[int], steps: int, on_hit: int = 0) -> tuple[bool, bool, list[list[int]]]:
    """`composite_lua`'s flat answer as (hit, ok, the answer of each step of the list that ran)."""
    hit = int(raw[0]) == 1
    at, results = 2, []
    for _ in range(on_hit if hit else steps):
        length = int(raw[at])
        results.append(list(map(int, raw[at + 1 : at + 1 + length])))
        at += 1 + length
    return hit, int(raw[1]) == 1, results


def admit_in_memory(
    data: MemoryData, steps: Sequence[Step], first: Callable[[bool], list[int]] | None = None
) -> tuple[bool, list[list[int]]]:
    """The same all-or-nothing step against the memory backend's data (called without awaiting). `first`:
    the `finish` of an admitting check of `steps[0]` made already (nothing changed since), not redone."""
    finishes: list[Callable[[bool], list[int]]] = []
    ok = True
    for step in steps:
        if first is not None:
            finish, first = first, None
            finishes.append(finish)
            continue
        admits, finish = step.op.check(data, step.keys, step.args)
        finishes.append(finish)
        if not admits:
            ok = False
            break
    results = [finish(ok) for finish in finishes]
    return ok, results + [[] for _ in range(len(steps) - len(results))]


def refusal_in_memory(
    data: MemoryData, step: Step | Callable[[], Step], hit_step: Step
) -> tuple[list[int] | None, Callable[[bool], list[int]] | None]:
    """(`step`'s answer when both it and `hit_step` refuse, charging nothing, else None; the `finish` of
    `hit_step`'s check when it admits, else None).

    With a refusal the admission refuses whatever else it would hold (its first step refuses on a miss,
    and on a cache hit too), so the caller can answer without building the other stages' steps and reads.
    The hit's step is checked first: it is the smaller check, and when it admits (every admitted request)
    `step`, which may be a function making it, is not needed at all.
    """
    admits, finish = hit_step.op.check(data, hit_step.keys, hit_step.args)
    if admits:
        return None, finish
    if not isinstance(step, Step):
        step = step()
    admits, finish = step.op.check(data, step.keys, step.args)
    return (None if admits else finish(False)), None


def fail_open(steps: Sequence[Step], reads: Sequence[str]) -> Admitted:
    """What `admit` answers when the store is down and `state.on_error` is `fail_open` (never a hit)."""
    results = [step.op.fail_open(step.keys, step.args) for step in steps]
    return Admitted(True, results, [None] * len(reads), [True] * len(steps))
