"""Redis round trips per request (issue 20): one before the upstream (the admission: rate limit and budget
in one script, the cache lookup and route health read with it), and every write after the answer (rate-limit
release and reconciliation, budget settlement, cache entry) in one pipeline; a cache hit pays one in all.

Trips are counted where redis-py writes commands to a connection (`send_packed_command`: a pipeline of several
commands is one call), and attributed to the features whose keys they name (`gw:<feature>:...`).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.auth import key_id
from gateway.config import parse_config
from gateway.features import cache_generations
from gateway.stores import MemoryStore, RedisStore, Store, Write, store_key
from gateway.stores.ops import GCRA, INCR_WINDOW

pytestmark = pytest.mark.anyio

FEATURE = re.compile(rb"gw:\{?([a-z_]+)\}?:")  # `gw:{rl}:` when hash-tagged for Redis Cluster


class Trips:
    """Round trips to Redis by the features their keys name, counted while installed."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def reset(self) -> None:
        self.seen.clear()

    def counted(self) -> dict[str, int]:
        return dict(self.seen)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    from redis.asyncio.connection import AbstractConnection

    found = Trips()
    original = AbstractConnection.send_packed_command

    async def counting(conn: Any, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)
        raw = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        found.seen["+".join(sorted({m.decode() for m in FEATURE.findall(raw)})) or "other"] += 1
        await original(conn, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return found


@asynccontextmanager
async def sdk(
    redis_url: str, key: str, name: str, global_url: str | None = None
) -> AsyncIterator[openai.AsyncOpenAI]:
    state = f"global_redis_url: '{global_url}', " if global_url else ""
    text = f"""
auth:
  keys:
    - {{name: {name}, key: {key}, rpm: 1000, tpm: 1000000, max_concurrent: 10,
        budget: {{limit_usd: 100, period: monthly}}}}
providers:
  - {{name: mock, type: mock}}
models:
  - {{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 2.5, output_per_1m: 10.0}}}}
usage: {{database: ":memory:"}}
features:
  rate_limit: {{}}
  cache: {{enabled: true, mode: all}}
state: {{{state}redis_url: '{redis_url}', on_error: fail_closed}}
"""
    app = create_app(parse_config(text, "trips.yaml"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway/v1") as http,
    ):
        yield openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=key, http_client=http, max_retries=0)


async def test_a_production_request_takes_one_trip_before_and_one_after_and_a_hit_one(
    redis_url: str, trips: Trips
) -> None:
    name = f"trips{uuid.uuid4().hex[:8]}"
    key = f"sk-{name}-0123456789"
    prompt = [{"role": "user", "content": f"hello {name}"}]
    async with sdk(redis_url, key, name) as client:
        # Warm-up: each script the paths below use is loaded into Redis (a first use costs a trip to load it).
        for _ in range(2):
            await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "warm"}])
        await purge(redis_url)
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "warm"}])
        trips.reset()
        miss = await client.chat.completions.with_raw_response.create(model="echo", messages=prompt)  # type: ignore[arg-type]
        assert miss.headers["x-gateway-cache"] == "MISS"
        # Before the upstream, one pipeline: the rate limit (rpm, tpm and the concurrency slot) and the
        # budget's reservation in one script, the cache lookup (the entry and its purge-generation tokens)
        # and the route's health (cd) in one MGET. After it: one pipeline with every write.
        assert trips.counted() == {"budget+cache+cachegen+cd+rl": 1, "budget+cache+cd+rl": 1}
        trips.reset()
        hit = await client.chat.completions.with_raw_response.create(model="echo", messages=prompt)  # type: ignore[arg-type]
        assert hit.headers["x-gateway-cache"] == "HIT"
        # A hit pays one trip: the same admission, which found the entry (its guard) and so only counted a
        # request (no tokens, no slot, no reservation), leaving nothing to give back after the answer.
        assert trips.counted() == {"budget+cache+cachegen+cd+rl": 1}
        # Purged: the entry is still there but may not be served. The admission that ran as a hit is made
        # again in full (tokens, slot, reservation; the request is not counted twice), then the writes.
        await purge(redis_url)
        trips.reset()
        again = await client.chat.completions.with_raw_response.create(model="echo", messages=prompt)  # type: ignore[arg-type]
        assert again.headers["x-gateway-cache"] == "MISS"
        assert trips.counted() == {"budget+cache+cachegen+cd+rl": 2, "budget+cache+cd+rl": 1}
    # The pipelined writes did apply: the slot is free again, the budget holds no reservation and has spent.
    raw = aioredis.Redis.from_url(redis_url)
    try:
        # The key names are right (the rpm bucket is there), and the concurrency slot is empty again.
        assert await raw.exists(store_key("rl", key_id(key), "*", "req", together=True))
        assert await raw.zcard(store_key("rl", key_id(key), "*", "conc", together=True)) == 0
        [budget] = [
            k async for k in raw.scan_iter(f"gw:{{budget}}:key:{name}:*") if not k.endswith(b":leases")
        ]
        spent, reserved = await raw.hmget(budget, "spent", "reserved")
        assert int(reserved) == 0 and int(spent) > 0
    finally:
        await raw.aclose()


async def test_a_settlement_for_the_global_store_is_not_flushed_into_the_regional_one(
    redis_url: str, trips: Trips
) -> None:
    # Multi-region: budgets in the global store (database 1 here), the rate limit in the region's (0). The
    # budget's settlement must reach the store that holds its reservation, in a trip of its own.
    global_url = redis_url.rsplit("/", 1)[0] + "/1"
    name = f"split{uuid.uuid4().hex[:8]}"
    key = f"sk-{name}-0123456789"
    async with sdk(redis_url, key, name, global_url) as client:
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "warm"}])
        trips.reset()
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": name}])
        # The region's admission (rate limit, cache, route health) and its after-answer pipeline, and the
        # budget's reservation and settlement in the global store: one trip each.
        assert trips.counted() == {"cache+cachegen+cd+rl": 1, "budget": 2, "cache+cd+rl": 1}
    regional, shared = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(global_url)
    try:
        assert [k async for k in regional.scan_iter(f"gw:{{budget}}:key:{name}:*")] == []
        [budget] = [
            k async for k in shared.scan_iter(f"gw:{{budget}}:key:{name}:*") if not k.endswith(b":leases")
        ]
        spent, reserved = await shared.hmget(budget, "spent", "reserved")
        assert int(reserved) == 0 and int(spent) > 0
    finally:
        await regional.aclose()
        await shared.aclose()


async def purge(redis_url: str) -> None:
    """Purge model echo's cached answers, as the admin API does."""
    store = RedisStore(redis_url)
    assert await cache_generations.purge(store, model="echo")
    await store.close()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        s: Store = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    await s.close()


async def test_write_many_applies_every_write_in_order(store: Store) -> None:
    base = store_key("test", uuid.uuid4().hex)
    await store.write_many(
        [
            Write([f"{base}:v"], value=b"cached", ttl=60),
            Write([f"{base}:n"], INCR_WINDOW, [60_000]),
            Write([f"{base}:n"], INCR_WINDOW, [60_000]),
            Write([f"{base}:g"], GCRA, [0, 60_000_000, 5, 2]),
        ]
    )
    assert await store.get(f"{base}:v") == b"cached"
    assert await store.run(INCR_WINDOW, [f"{base}:n"], [60_000]) == [3]
    # Two units of five charged by the pipelined GCRA: a peek sees three left.
    assert (await store.run(GCRA, [f"{base}:g"], [2, 60_000_000, 5, 1]))[1] == 3
    await store.write_many([])


async def test_write_many_reloads_scripts_the_server_forgot(redis_url: str) -> None:
    store = RedisStore(redis_url)
    key = store_key("test", uuid.uuid4().hex)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await store.run(INCR_WINDOW, [key], [60_000])
        await raw.script_flush()  # as after a restart of Redis: the script's sha is unknown now
        await store.write_many([Write([key], INCR_WINDOW, [60_000])])
        assert await store.run(INCR_WINDOW, [key], [60_000]) == [3]
    finally:
        await raw.aclose()
        await store.close()


# --- the after-answer writes at stage level ---------------------------------------------------------------


def limited_stage(store: Store) -> Any:
    from gateway.features.ratelimit import Limits, RateLimitConfig, RateLimitStage

    return RateLimitStage(RateLimitConfig(), {"id-alice": Limits(rpm=100, max_concurrent=1)}, store)


def a_call(stream: bool = False) -> Any:
    from test_ratelimit import chat, make_call

    return make_call(chat(stream=stream))


async def cancelled_after_a_queued_write(store: Any) -> None:
    """A request whose inner stage queued a write (as the budget's settlement is) is cancelled: the write is
    applied all the same and the rate limit's one concurrency slot is given back."""
    import anyio

    from gateway.pipeline import Response
    from gateway.stores.after_writes import defer

    key = store_key("test", uuid.uuid4().hex)
    stage = limited_stage(store)
    started = anyio.Event()

    async def answer_then_hang(call: Any) -> Response:
        assert defer(call, Write([key], value=b"settled", ttl=60), store)
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as group:
        group.start_soon(stage.handle, a_call(), answer_then_hang)
        await started.wait()
        group.cancel_scope.cancel()
    assert await store.get(key) == b"settled"
    assert isinstance(await stage.handle(a_call(), _answer), Response)  # max_concurrent 1: the slot is free


async def test_deferred_writes_are_sent_even_when_the_client_leaves(redis_url: str) -> None:
    # Redis, because the flush then really awaits the network (under a shield).
    store = RedisStore(redis_url)
    await cancelled_after_a_queued_write(store)
    await store.close()


async def test_in_process_the_writes_are_applied_without_awaiting_also_when_the_client_leaves() -> None:
    # The memory store applies a request's after-answer writes without awaiting (no cancel scope).
    await cancelled_after_a_queued_write(MemoryStore())


async def _answer(call: Any) -> Any:
    from gateway.pipeline import Response
    from gateway.providers.mock import MockOptions, chat_body

    return Response(chat_body(call.body, "m", MockOptions(), "id"))


async def test_a_streams_writes_at_its_end_go_to_the_store_directly() -> None:
    from gateway.pipeline import Response, Stream
    from gateway.providers.mock import MockOptions, chat_chunks
    from gateway.stores.after_writes import defer

    store = MemoryStore()
    stage = limited_stage(store)
    call = a_call(stream=True)

    async def streaming(call: Any) -> Stream:
        return Stream.from_chunks(chat_chunks(call.body, "m", MockOptions(chunk_size=1), "id"))

    stream = await stage.handle(call, streaming)
    assert isinstance(stream, Stream)
    # The stage has returned: its list is closed, so a write made when the stream ends is not queued (and
    # lost) but made by its stage right away.
    assert not defer(call, Write(["k"], value=b"v"), store)
    chunks = [c async for c in stream]
    assert chunks[-1]["usage"]["total_tokens"] > 0
    # The stream's end released its slot: another request is admitted.
    assert isinstance(await stage.handle(a_call(), _answer), Response)
