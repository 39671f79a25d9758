"""Writes the stages make after a request's answer, sent to the store together in one round trip.

Rate-limit release and token reconciliation, budget settlement and the cache's new entry all happen once the
answer is known, each in its own stage; one after the other they cost a Redis round trip each. The outermost
stage that writes to the store (the rate limit's, always in the chain) opens a list on the call with
`open_writes`, the inner stages `defer` their writes into it instead of awaiting the store, and the outer
stage sends them with `flush_writes` in one `Store.write_many` (a Redis pipeline) before the answer leaves.

Only writes made while the outer stage still holds the call are batched: `flush_writes` closes the list first,
so a stream's writes, made when the stream ends (after the stage returned), go to the store directly. Only
writes for the list's own store are batched: with a global store beside the regional one (multi-region), a
budget settlement bound for the global store must not be flushed into the rate limit's regional one, so
`defer` refuses a write for another store and its stage sends it there itself.

For a complete answer on the memory store the outer stage does not flush when it returns: it queues `flush`
as after-answer work (`after_answer`), behind the inner stages' own (the budget's settlement, the cache's
entry), so the client has its answer before the books are kept. On a shared store they stay before it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from functools import partial

import anyio

from gateway.pipeline import After, Call, later
from gateway.stores.base import Store, StoreUnavailable, Write
from gateway.stores.memory import MemoryStore

log = logging.getLogger("gateway.stores")

SCRATCH = "store.after_writes"


def open_writes(call: Call, store: Store) -> None:
    """Start collecting `call`'s after-answer writes to `store` (until `flush_writes`)."""
    call.scratch[SCRATCH] = (store, [])


def defer(call: Call, write: Write, store: Store) -> bool:
    """Queue `write` (to `store`) for `call`'s flush; False when no list is open or the open list is for
    another store (the caller writes it now itself)."""
    pending = call.scratch.get(SCRATCH)
    if pending is None or pending[0] is not store:
        return False
    pending[1].append(write)
    return True


def flush_now(call: Call, store: Store) -> bool:
    """Close `call`'s list and apply what it holds now, when that needs no await: nothing to send, or the
    memory store (in process there is no round trip, and a write applied without awaiting cannot be
    cancelled halfway). True when done; otherwise the caller awaits `flush_writes`, shielded."""
    pending = call.scratch.get(SCRATCH)
    if pending is not None and pending[1]:
        if not isinstance(store, MemoryStore):
            return False
        store.write_now(pending[1])
    call.scratch.pop(SCRATCH, None)
    return True


def after_answer(call: Call, store: Store, work: After) -> Awaitable[None] | None:
    """Run `work`, which writes to `store`, once the answer is out when the store is in process, else now
    (returns what to await, as `gateway.pipeline.later`).

    In process the work still runs before the server reads the client's next request (in the loop turn
    that writes the answer), so a client never sees its own last request unsettled: no slot still held, no
    reservation still counted. On a shared store it would be a round trip later, and a sequential client
    could be refused by its own previous request: there it stays before the answer.
    """
    if isinstance(store, MemoryStore):
        return later(call, work)
    return work()


def flush_after_answer(call: Call, store: Store) -> bool:
    """Queue `flush` as `call`'s after-answer work when its writes may wait for the answer (in process, see
    `after_answer`): True when queued, False when the caller flushes now."""
    if call.after is None or not isinstance(store, MemoryStore):
        return False
    call.after.append(partial(flush, call, store))
    return True


def flush(call: Call, store: Store) -> Awaitable[None] | None:
    """Close `call`'s list and apply it: None when done in process (`flush_now`), else the round trip to
    await, shielded from cancellation."""
    if flush_now(call, store):
        return None
    return _flush_shielded(call, store)


async def _flush_shielded(call: Call, store: Store) -> None:
    # The writes give back slots and reservations, also for a client that went away (its request cancelled).
    with anyio.CancelScope(shield=True):
        await flush_writes(call, store)


async def flush_writes(call: Call, store: Store) -> None:
    """Close `call`'s list and send what it holds in one round trip. Callers shield this from cancellation:
    the writes give back leases and reservations, which must not be lost to a client that went away."""
    _, pending = call.scratch.pop(SCRATCH, (store, []))
    if not pending:
        return
    try:
        await store.write_many(pending)
    except StoreUnavailable:
        # The ledger still has the request's cost; leases and reservations expire on their own.
        log.error(
            "request %s: state store unreachable, %d writes after the answer (budget settlement, rate-limit "
            "release, cache entry) not applied", call.request_id, len(pending),
        )  # fmt: skip
