"""Admission: what every stage asks of the state store before the upstream, sent in one round trip.

Before a request reaches a provider the stages each need the store: the rate limit checks and charges its
limits and takes concurrency slots, the budget reserves the most the request can cost, the cache reads the
entry and its purge-generation tokens, the router reads its routes' health. One after the other that is four
round trips to Redis. Instead each such stage exposes one optional method::

    def admission(self, call: Call) -> Claim | Awaitable[Claim | None] | None

returning (directly, or as an awaitable when it must await something first) what it needs (an atomic
:class:`~gateway.stores.Step` and/or keys to read, on its store) or None, and keeps the claim on
``call.scratch`` under its own name. :class:`AdmissionStage`, placed before the first of them, gathers every
claim in chain order and runs them with :func:`admit`: one ``Store.admit`` per store
(one script and one MGET in one pipeline on Redis), all steps of a store together all or nothing (a refused
budget consumes no rate-limit allowance, a refused rate limit reserves no budget). Each stage then reads its
answer from its claim in ``handle``; a stage used without the admission stage (alone in a test) runs its own
claim the same way.

Steps on different stores (``state.global_features`` puts budgets in a global store) run one store after the
other, stopping at the first refusal; so do steps in different Redis Cluster slots (see
``RedisStore.admit``). A claim's ``charged`` then says whether its step took anything, which its stage must
give back when a later step refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, runtime_checkable

from gateway.pipeline import Call, Handler, Result
from gateway.stores.base import Step, Store, StoreUnavailable
from gateway.stores.memory import MemoryStore


@dataclass(eq=False, slots=True)
class Claim:
    """One stage's share of a request's admission, and (once :func:`admit` ran it) the store's answer.

    ``admitted``: every step of the admission admitted (False also for a claim not run because an earlier
    one refused); ``charged``: this claim's step took what it asked for; ``result``: the step's answer;
    ``values``: the bytes under ``reads``; ``unavailable``: the store is down and ``state.on_error`` is
    ``fail_closed`` (the stage answers its own 503).

    A cache hit: the cache's claim names its entry as ``guard``; when that key exists the store runs each
    claim's ``hit_step`` instead of its ``step`` (None: nothing), and ``hit`` tells the stage so. A hit is
    only counted as a request (no tokens, no concurrency slot, no budget reservation), so nothing is left
    to give back after it and it pays one round trip in all. If the entry turns out unusable (purged), the
    cache stage raises :class:`Readmit` and the request is admitted again in full.

    ``build`` makes ``step`` when it is needed (at most once, then ``step`` holds it), for a step that
    costs something to build (the budget's maximum cost, the rate limit's token estimate): in process the
    guard is looked at first, so a cache hit, which runs only the ``hit_step``, never builds it. On Redis
    every step is built before the one round trip.
    """

    store: Store
    step: Step | None = None
    reads: Sequence[str] = ()
    hit_step: Step | None = None
    guard: str | None = None
    build: Callable[[], Step] | None = None
    done: bool = False
    admitted: bool = False
    charged: bool = False
    unavailable: bool = False
    hit: bool = False
    # Empty tuples until the store answers, not a new list each: four claims are made per request, and
    # their two default factories were a third of a claim's construction.
    result: Sequence[int] = ()
    values: Sequence[bytes | None] = ()


@runtime_checkable
class Admitting(Protocol):
    """A stage that asks the store for something before the upstream (see the module docstring)."""

    def admission(self, call: Call) -> Claim | Awaitable[Claim | None] | None:
        """What ``call`` needs from the store before the upstream, or None; kept on ``call.scratch``.

        Answered directly when making the claim awaits nothing (the rate limit's, a config-file budget's,
        the routes' health): no coroutine per stage and request, where in process nothing is awaited at
        all. An ``async def admission`` (the cache's) is as good: its coroutine is awaited."""
        ...


async def _claim(stage: Admitting, call: Call) -> Claim | None:
    """``stage``'s claim for ``call``, awaited if it came as an awaitable."""
    claim = stage.admission(call)
    if claim is None or isinstance(claim, Claim):
        return claim
    return await claim


async def admit(claims: Sequence[Claim]) -> None:
    """Run ``claims`` (in order) with one ``Store.admit`` per store and fill in their answers."""
    if not claims:
        return
    store = claims[0].store
    groups: list[Sequence[Claim]] = [claims]  # the usual case: every feature on one store
    for claim in claims:
        if claim.store is not store:
            by_store: dict[int, list[Claim]] = {}
            for each in claims:
                by_store.setdefault(id(each.store), []).append(each)
            groups = list(by_store.values())
            break
    refused = False
    for group in groups:
        if refused:
            for claim in group:
                claim.done = True
            continue
        # One pass over the group (every request runs this): what a miss runs, what a hit runs, the reads.
        stepped: list[Claim] = []
        on_hit: list[Claim] = []
        hit_steps: list[Step] = []
        reads: list[str] = []
        guard = None
        for claim in group:
            if claim.step is not None or claim.build is not None:
                stepped.append(claim)
            if claim.hit_step is not None:
                on_hit.append(claim)
                hit_steps.append(claim.hit_step)
            if claim.reads:
                reads += claim.reads
            if guard is None:
                guard = claim.guard
        if guard is None or not on_hit:
            guard, on_hit, hit_steps = None, [], []  # nothing a hit would spare: the plain admission
        store = group[0].store
        try:
            if isinstance(store, MemoryStore):
                # In process the guard is free to look at first: a hit builds no step it would not run.
                answer = store.admit_now(partial(_steps, stepped), reads, guard=guard, on_hit=hit_steps)
            else:
                answer = await store.admit(_steps(stepped), reads, guard=guard, on_hit=hit_steps)
        except StoreUnavailable:
            for claim in group:
                claim.done = claim.unavailable = True
            refused = True
            continue
        ran = on_hit if answer.hit else stepped
        for claim, result, charged in zip(ran, answer.results, answer.charged, strict=True):
            claim.result, claim.charged = result, charged
        at = 0
        ok, hit, values = answer.ok, answer.hit, answer.values
        for claim in group:
            if claim.reads:
                claim.values = values[at : at + len(claim.reads)]
                at += len(claim.reads)
            claim.done, claim.admitted, claim.hit = True, ok, hit
        refused = not ok


def _step(claim: Claim) -> Step:
    """``claim``'s step, built now if it was left to ``build``."""
    if claim.build is not None:
        claim.step, claim.build = claim.build(), None
    assert claim.step is not None  # only claims with a step or a way to build one are asked
    return claim.step


def _steps(claims: Sequence[Claim]) -> list[Step]:
    return [_step(claim) for claim in claims]


class Readmit(Exception):
    """Raised by the cache stage when the admission ran as a hit (its entry existed) but the entry cannot
    be served (purged, or unreadable): :class:`AdmissionStage` admits the request again as a miss."""


FULL = "admission.full"
"""``call.scratch`` flag of a second admission: no guard (the cache serves no hit), and the request the hit
admission already counted is not counted again (the rate limit charges its requests buckets nothing)."""


class AdmissionStage:
    """Runs every admitting stage's claim of a request in one round trip per store, before those stages.

    ``stages`` are the stages after this one; those with an ``admission`` method take part, in chain order.
    """

    def __init__(self, stages: Sequence[object]) -> None:
        self.admitting = [stage for stage in stages if isinstance(stage, Admitting)]

    async def handle(self, call: Call, next: Handler) -> Result:
        """Gather the claims of ``call``, run them, then pass it on (twice when a hit was not one)."""
        await self._admit(call)
        try:
            return await next(call)
        except Readmit:
            call.scratch[FULL] = True
            await self._admit(call)
            return await next(call)

    async def _admit(self, call: Call) -> None:
        claims: list[Claim] = []
        for stage in self.admitting:
            made = stage.admission(call)
            claim = made if made is None or isinstance(made, Claim) else await made
            if claim is None:
                continue
            if not claims and _refused_in_process(claim):
                # Refused whatever the later claims hold (the budget's maximum cost, the cache key, the
                # routes' health): they are not built. Only the stage of this claim runs; it answers the
                # refusal itself (the rate limit's 429) before the later stages would look for theirs.
                return
            claims.append(claim)
        if claims:
            await admit(claims)


def _refused_in_process(claim: Claim) -> bool:
    """Fill in ``claim`` as refused when the memory store says its step refuses both on a miss and as a
    cache hit, charging nothing. Only in process: on Redis finding out would be a round trip of its own, and
    the admission's one trip carries every claim anyway. A claim without a hit step is not looked at (a hit
    would run nothing for it, so only the guard could tell)."""
    store = claim.store
    if not isinstance(store, MemoryStore) or claim.hit_step is None:
        return False
    if claim.step is None and claim.build is None:
        return False
    answer = store.refusal(lambda: _step(claim), claim.hit_step)
    if answer is None:
        return False
    claim.result, claim.done = answer, True
    return True


def ran(call: Call, name: str) -> Claim | Literal[False] | None:
    """The claim kept under ``call.scratch[name]`` once the admission stage ran it (None: the stage claimed
    nothing), else False: the stage awaits :func:`answered` then. Every admitted request of a stage that
    runs in the admission finds its claim here, without a coroutine."""
    claim = call.scratch.get(name, False)
    return claim if claim is None or (claim is not False and claim.done) else False


async def answered(stage: Admitting, call: Call, name: str) -> Claim | None:
    """``stage``'s claim for ``call`` (kept under ``call.scratch[name]``) with the store's answer: the one
    the admission stage ran, else one made and run now (a stage used without the admission stage)."""
    claim = call.scratch[name] if name in call.scratch else await _claim(stage, call)
    if claim is not None and not claim.done:
        await admit([claim])
    return claim
