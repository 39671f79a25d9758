"""One admission step for the rate limit and the budget (issue 20): all or nothing on both backends, a cache
hit admitted as one counted request, and a "hit" whose entry was purged admitted again in full."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest

from gateway.admission import Claim, admit
from gateway.app import create_app
from gateway.budget_book import BudgetBook, BudgetSlot
from gateway.config import parse_config
from gateway.periods import Period, window_for
from gateway.stores import MemoryStore, RedisStore, Step, Store, store_key
from gateway.stores.ops import GCRA, PEEK, RL_ADMISSION

pytestmark = pytest.mark.anyio

MINUTE_US = 60_000_000
NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        s: Store = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    await s.close()


def limits(rpm: int, tpm: int, tokens: int, conc: int = 5) -> tuple[list[str], list[int]]:
    """Keys and arguments of an RL_ADMISSION step: one rpm, one tpm and one concurrency limit."""
    base = uuid.uuid4().hex
    keys = [store_key("rl", base, "req", together=True), store_key("rl", base, "tok", together=True)]
    keys.append(store_key("rl", base, "conc", together=True))
    return keys, [2, 1, MINUTE_US, rpm, 1, MINUTE_US, tpm, tokens, MINUTE_US, 7, conc]


async def remaining(store: Store, keys: list[str], rpm: int, tpm: int) -> list[int]:
    """Requests and tokens left (a GCRA peek)."""
    peek = await store.run(GCRA, keys[:2], [PEEK, MINUTE_US, rpm, 1, MINUTE_US, tpm, 1])
    return [peek[1], peek[4]]


def budget(store: Store, limit_nanos: int) -> tuple[BudgetBook, BudgetSlot]:
    window = window_for(Period.TOTAL, NOW, ZoneInfo("UTC"))
    return BudgetBook(store), BudgetSlot("key", f"k{uuid.uuid4().hex[:8]}", limit_nanos, window)


async def test_a_refused_budget_consumes_no_rate_limit_allowance_and_takes_no_slot(store: Store) -> None:
    keys, args = limits(rpm=5, tpm=100, tokens=40, conc=1)
    book, slot = budget(store, limit_nanos=1_000)
    refused = await store.admit([Step(RL_ADMISSION, keys, args), book.reservation_step([slot], 2_000, NOW)])
    assert not refused.ok and refused.charged == [False, False]
    # The rate limit admitted on its own (allowed, no full slot) but charged nothing, as its answer shows.
    assert refused.results[0][:2] == [1, 0]
    assert refused.results[1][:2] == [0, 1]  # the budget refused: its first (only) slot
    assert await remaining(store, keys, 5, 100) == [5, 100]
    # The only concurrency slot is still free, and the budget holds no reservation.
    admitted = await store.admit([Step(RL_ADMISSION, keys, args), book.reservation_step([slot], 500, NOW)])
    assert admitted.ok and admitted.charged == [True, True]
    assert await remaining(store, keys, 5, 100) == [4, 60]
    assert await book.read([slot]) == [(0, 500)]


async def test_a_refused_rate_limit_reserves_no_budget(store: Store) -> None:
    keys, args = limits(rpm=5, tpm=100, tokens=101)  # more tokens than the limit: never admitted
    book, slot = budget(store, limit_nanos=1_000)
    answer = await store.admit([Step(RL_ADMISSION, keys, args), book.reservation_step([slot], 500, NOW)])
    assert not answer.ok
    assert answer.results[1] == []  # the budget was not even looked at
    assert await book.read([slot]) == [(0, 0)]


async def test_reads_ride_along_and_a_guard_runs_the_hit_steps_instead(store: Store) -> None:
    keys, args = limits(rpm=5, tpm=100, tokens=40)
    entry = store_key("cache", uuid.uuid4().hex)
    book, slot = budget(store, limit_nanos=1_000)
    steps = [Step(RL_ADMISSION, keys, args), book.reservation_step([slot], 500, NOW)]
    hit_steps = [Step(RL_ADMISSION, keys[:2], [2, 0, MINUTE_US, 5, 1, MINUTE_US, 100, 0, MINUTE_US, 8])]
    miss = await store.admit(steps, [entry], guard=entry, on_hit=hit_steps)
    assert (miss.ok, miss.hit, miss.values) == (True, False, [None])
    assert len(miss.results) == 2 and await remaining(store, keys, 5, 100) == [4, 60]
    await store.set(entry, b"answer", 60)
    hit = await store.admit(steps, [entry], guard=entry, on_hit=hit_steps)
    assert (hit.ok, hit.hit, hit.values) == (True, True, [b"answer"])
    assert len(hit.results) == 1  # only the hit's step ran: one request, no tokens, no reservation
    assert await remaining(store, keys, 5, 100) == [3, 60]
    assert await book.read([slot]) == [(0, 500)]


async def test_a_guard_apart_from_the_reads_still_decides_the_hit(store: Store) -> None:
    # In memory the reads are looked up first and the guard taken from them when it is one of them; a guard
    # that is not read must still be looked up on its own, and reads answer the same either way.
    keys, args = limits(rpm=5, tpm=100, tokens=40)
    entry, other = store_key("cache", uuid.uuid4().hex), store_key("cache", uuid.uuid4().hex)
    await store.set(other, b"other", 60)
    hit_steps = [Step(RL_ADMISSION, keys[:2], [2, 0, MINUTE_US, 5, 1, MINUTE_US, 100, 0, MINUTE_US, 8])]
    miss = await store.admit([Step(RL_ADMISSION, keys, args)], [other], guard=entry, on_hit=hit_steps)
    assert (miss.ok, miss.hit, miss.values) == (True, False, [b"other"])
    await store.set(entry, b"answer", 60)
    hit = await store.admit([Step(RL_ADMISSION, keys, args)], [other], guard=entry, on_hit=hit_steps)
    assert (hit.ok, hit.hit, hit.values) == (True, True, [b"other"])
    read_too = await store.admit(
        [Step(RL_ADMISSION, keys, args)], [other, entry], guard=entry, on_hit=hit_steps
    )
    assert (read_too.hit, read_too.values) == (True, [b"other", b"answer"])
    assert await remaining(store, keys, 5, 100) == [2, 60]


async def test_a_hit_is_refused_when_nothing_of_a_budget_remains_and_charges_nothing(store: Store) -> None:
    keys, args = limits(rpm=5, tpm=100, tokens=40)
    book, slot = budget(store, limit_nanos=1_000)
    entry = f"gw:cache:{uuid.uuid4().hex}"
    await store.set(entry, b"answer", 60)
    steps = [Step(RL_ADMISSION, keys, args), book.reservation_step([slot], 2_000, NOW)]
    hit_args = [1, 0, MINUTE_US, 5, 1, MINUTE_US, 7]  # the rpm bucket only, one request; lease ttl, id
    hit_steps = [Step(RL_ADMISSION, keys[:1], hit_args), book.remains_step([slot])]
    # Something remains (less than a miss would reserve): the cached answer is served, nothing reserved.
    await book.restore(slot, 999, NOW)
    served = await store.admit(steps, [entry], guard=entry, on_hit=hit_steps)
    assert (served.ok, served.hit) == (True, True) and served.results[1] == [1, 0]
    assert await book.read([slot]) == [(999, 0)]
    assert await remaining(store, keys, 5, 100) == [4, 100]
    # Nothing remains: the hit is refused too, naming the budget, and its request is not counted.
    last = await book.reserve([slot], 1, NOW)
    await book.settle(last, 1, NOW)
    refused = await store.admit(steps, [entry], guard=entry, on_hit=hit_steps)
    assert (refused.ok, refused.hit) == (False, True) and refused.results[1] == [0, 1, 1_000, 0]
    assert refused.charged == [False, False]
    assert await remaining(store, keys, 5, 100) == [4, 100]
    assert await book.read([slot]) == [(1_000, 0)]


async def test_a_claims_step_is_built_once_and_in_process_never_for_a_hit(store: Store) -> None:
    keys, args = limits(rpm=5, tpm=100, tokens=40)
    entry = store_key("cache", uuid.uuid4().hex)
    hit_args = [2, 0, MINUTE_US, 5, 1, MINUTE_US, 100, 0, MINUTE_US, 0]
    built: list[int] = []

    def claims() -> list[Claim]:
        def build() -> Step:
            built.append(1)
            return Step(RL_ADMISSION, keys, args)

        return [
            Claim(store, build=build, hit_step=Step(RL_ADMISSION, keys[:2], hit_args)),
            Claim(store, reads=[entry], guard=entry),
        ]

    miss = claims()
    await admit(miss)
    assert built == [1] and miss[0].step is not None and miss[0].build is None
    assert (miss[0].admitted, miss[0].charged, miss[0].hit) == (True, True, False)
    assert await remaining(store, keys, 5, 100) == [4, 60]
    await store.set(entry, b"answer", 60)
    hit = claims()
    await admit(hit)
    assert (hit[0].admitted, hit[0].hit, hit[1].values) == (True, True, [b"answer"])
    assert await remaining(store, keys, 5, 100) == [3, 60]  # one request counted, no tokens
    # On Redis every step goes in the one round trip, before the store says "hit"; in process the guard is
    # looked at first and the miss's step (a token estimate, a maximum cost) is never built.
    assert built == ([1] if isinstance(store, MemoryStore) else [1, 1])


async def test_claims_on_two_stores_run_one_after_the_other_and_stop_at_a_refusal() -> None:
    first, second = MemoryStore(), MemoryStore()
    keys, args = limits(rpm=1, tpm=100, tokens=1)
    book, slot = budget(second, limit_nanos=1_000)
    claims = [
        Claim(first, Step(RL_ADMISSION, keys, args)),
        Claim(second, book.reservation_step([slot], 5_000, NOW)),
        Claim(second, reads=["gw:cache:x"]),
    ]
    await admit(claims)
    # The budget on the other store refused after the rate limit's store had charged: its claim says so,
    # and its stage gives back what it took (the rate limit's own except path).
    assert [c.charged for c in claims[:2]] == [True, False]
    assert [c.admitted for c in claims] == [True, False, False]
    retry = [Claim(first, Step(RL_ADMISSION, keys, args)), Claim(second, reads=["gw:cache:x"])]
    await admit(retry)
    assert retry[0].result[0] == 0 and retry[1].done and not retry[1].admitted  # rpm spent: not run


@asynccontextmanager
async def through_the_gateway(text: str, key: str) -> AsyncIterator[tuple[Any, openai.AsyncOpenAI]]:
    """The gateway of config ``text`` in process, and an openai client using ``key`` against it."""
    app = create_app(parse_config(text, "admission.yaml"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway/v1") as http,
    ):
        yield (
            app,
            openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=key, http_client=http, max_retries=0),
        )


async def test_through_the_gateway_a_hit_costs_no_budget_and_a_refused_budget_no_rpm() -> None:
    # Prices such that a handful of answers spend the budget: then misses are refused, hits are not.
    text = """
auth:
  keys:
    - {name: ann, key: sk-ann-0123456789, rpm: 50, budget: {limit_usd: 1, period: monthly}}
providers:
  - {name: mock, type: mock}
models:
  - {name: echo, routes: [{provider: mock}], pricing: {input_per_1m: 10000, output_per_1m: 10000}}
usage: {database: ":memory:"}
features:
  rate_limit: {}
  budgets: {default_max_tokens: 16}
  cache: {enabled: true, mode: all}
"""
    async with through_the_gateway(text, "sk-ann-0123456789") as (_, client):
        asked = [{"role": "user", "content": "hi"}]
        first = await client.chat.completions.with_raw_response.create(model="echo", messages=asked)  # type: ignore[arg-type]
        assert first.headers["x-gateway-cache"] == "MISS"
        left = int(first.headers["x-ratelimit-remaining-requests"])
        refusals = 0
        for n in range(20):
            try:
                answer = await client.chat.completions.with_raw_response.create(
                    model="echo",
                    messages=[{"role": "user", "content": f"new {n}"}],  # type: ignore[list-item]
                )
            except openai.RateLimitError as refused:
                assert refused.code == "budget_exceeded"
                refusals += 1
                if refusals == 3:
                    break
            else:
                left = int(answer.headers["x-ratelimit-remaining-requests"])
        assert refusals == 3  # the budget ran out, and the last three were refused by it
        # The cached answer costs nothing: served, the budget not consulted, one request counted; the three
        # refusals counted none (their rate-limit step ran in the same script, uncharged).
        hit = await client.chat.completions.with_raw_response.create(model="echo", messages=asked)  # type: ignore[arg-type]
        assert hit.headers["x-gateway-cache"] == "HIT"
        assert int(hit.headers["x-ratelimit-remaining-requests"]) == left - 1


async def test_through_the_gateway_a_hit_is_refused_once_nothing_of_the_budget_remains() -> None:
    from gateway.features.budgets import BudgetStage

    text = """
auth:
  keys:
    - {name: bob, key: sk-bob-0123456789, rpm: 50, budget: {limit_usd: 1, period: monthly}}
providers:
  - {name: mock, type: mock}
models:
  - {name: echo, routes: [{provider: mock}], pricing: {input_per_1m: 1, output_per_1m: 1}}
usage: {database: ":memory:"}
features:
  cache: {enabled: true, mode: all}
"""
    async with through_the_gateway(text, "sk-bob-0123456789") as (app, client):
        asked = [{"role": "user", "content": "hi"}]
        first = await client.chat.completions.with_raw_response.create(model="echo", messages=asked)  # type: ignore[arg-type]
        assert first.headers["x-gateway-cache"] == "MISS"
        # Spend what is left of bob's budget (as other requests would have), to the last nano-dollar.
        stage = next(s for s in app.state.gateway.runtime.stages if isinstance(s, BudgetStage))
        rule = await stage.key_rule("bob", None)
        assert rule is not None
        slot = rule.slot(datetime.now(UTC))
        [(spent, reserved)] = await stage.book.read([slot])
        assert reserved == 0
        rest = await stage.book.reserve([slot], slot.limit_nanos - spent, datetime.now(UTC))
        await stage.book.settle(rest, slot.limit_nanos - spent, datetime.now(UTC))
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="echo", messages=asked)  # type: ignore[arg-type]
        assert refused.value.code == "budget_exceeded" and "key 'bob'" in refused.value.message


async def test_in_process_a_refusal_is_found_without_charging_and_only_when_a_hit_would_refuse_too() -> None:
    store = MemoryStore(clock=lambda: 1_000.0)  # a still clock: the answers compared below hold times
    keys, args = limits(rpm=5, tpm=100, tokens=101)  # the miss's step refuses: more tokens than the tpm
    hit_args = [2, 0, MINUTE_US, 5, 1, MINUTE_US, 100, 0, MINUTE_US, 8]
    step, hit_step = Step(RL_ADMISSION, keys, args), Step(RL_ADMISSION, keys[:2], hit_args)
    # A hit would still be admitted (one request, no tokens): not a sure refusal.
    assert store.refusal(step, hit_step) is None
    spent = Step(RL_ADMISSION, keys[:2], [2, 0, MINUTE_US, 5, 5, MINUTE_US, 100, 0, MINUTE_US, 8])
    assert (await store.admit([spent])).ok  # all five requests of the minute used
    answer = store.refusal(step, hit_step)
    # The answer `admit` gives a refused miss (refused, no full slot, each limit's state), charging nothing.
    assert answer is not None and answer[:2] == [0, 0]
    assert answer == (await store.admit([step])).results[0]
    assert await remaining(store, keys, 5, 100) == [0, 100]


async def test_in_process_a_hit_reuses_the_pre_check_only_while_nothing_else_touched_the_store() -> None:
    store = MemoryStore(clock=lambda: 1_000.0)
    keys, args = limits(rpm=2, tpm=100, tokens=10)
    hit_args = [2, 0, MINUTE_US, 2, 1, MINUTE_US, 100, 0, MINUTE_US, 0]
    entry = store_key("cache", uuid.uuid4().hex)
    await store.set(entry, b"answer", 60)
    checks: list[int] = []

    def counting(step: Step) -> Step:
        """``step`` with its check counted."""

        def check(data: Any, keys: Any, args: Any) -> Any:
            checks.append(1)
            return RL_ADMISSION.check(data, keys, args)

        return Step(replace(RL_ADMISSION, check=check), step.keys, step.args)

    def never() -> list[Step]:
        raise AssertionError("a hit builds no miss step")

    hit_step = counting(Step(RL_ADMISSION, keys[:2], hit_args))
    assert store.refusal(Step(RL_ADMISSION, keys, args), hit_step) is None and checks == [1]
    served = store.admit_now(never, [entry], guard=entry, on_hit=[hit_step])
    assert served.ok and served.hit and checks == [1]  # the pre-check's answer, charged: not checked again
    assert served.results[0][:2] == [1, 0] and await remaining(store, keys, 2, 100) == [1, 100]
    # The pre-check admits with one request left, then another admission takes it before this one runs:
    # the stale answer is not reused, the request is checked again and refused.
    hit_step = counting(Step(RL_ADMISSION, keys[:2], hit_args))
    assert store.refusal(Step(RL_ADMISSION, keys, args), hit_step) is None and checks == [1, 1]
    assert (await store.admit([Step(RL_ADMISSION, keys[:2], hit_args)])).ok
    late = store.admit_now(never, [entry], guard=entry, on_hit=[hit_step])
    assert not late.ok and late.charged == [False] and checks == [1, 1, 1]
    assert await remaining(store, keys, 2, 100) == [0, 100]


async def test_through_the_gateway_a_refused_request_builds_no_other_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.features import cache

    text = """
auth:
  keys:
    - {name: ann, key: sk-ann-0123456789, rpm: 2, budget: {limit_usd: 100, period: monthly}}
providers:
  - {name: mock, type: mock}
models:
  - {name: echo, routes: [{provider: mock}], pricing: {input_per_1m: 1, output_per_1m: 1}}
usage: {database: ":memory:"}
features:
  rate_limit: {}
  budgets: {default_max_tokens: 16}
  cache: {enabled: true, mode: all}
"""
    keyed: list[str] = []
    real_key = cache.cache_key

    def counted_key(call: Any, tenant: str | None = None) -> str:
        keyed.append(call.model)
        return real_key(call, tenant)

    monkeypatch.setattr(cache, "cache_key", counted_key)
    async with through_the_gateway(text, "sk-ann-0123456789") as (_, client):
        asked = [{"role": "user", "content": "hi"}]
        assert (await client.chat.completions.with_raw_response.create(model="echo", messages=asked)).headers[  # type: ignore[arg-type]
            "x-gateway-cache"
        ] == "MISS"
        hit = await client.chat.completions.with_raw_response.create(model="echo", messages=asked)  # type: ignore[arg-type]
        assert hit.headers["x-gateway-cache"] == "HIT"
        assert len(keyed) == 2
        # rpm spent: a new prompt and the cached one are both refused by the rate limit, with its headers,
        # and neither built a cache key (nor the budget's reservation, nor the routes' reads).
        for content in ("new", "hi"):
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(
                    model="echo",
                    messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
                )
            assert refused.value.code == "rate_limit_exceeded"
            assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
            assert int(refused.value.response.headers["retry-after"]) >= 1
        assert len(keyed) == 2
