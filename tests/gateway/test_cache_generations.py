"""Generation tokens of the response cache (gateway/features/cache_generations.py): what a purge does to
entries, answers computed during a purge, lost tokens, and an unreachable store."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_cache import chat, make_call

from gateway.features import cache_generations
from gateway.features.cache import CacheConfig, CacheStage
from gateway.pipeline import Call, Response
from gateway.providers.mock import MockOptions, chat_body
from gateway.stores import MemoryStore

pytestmark = pytest.mark.anyio


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, call: Call) -> Response:
        self.calls += 1
        return Response(chat_body(call.body, "m", MockOptions(), f"id{self.calls}"))


async def status(stage: CacheStage, upstream: Upstream, prompt: str = "hi", key_id: str = "k1") -> str:
    call = make_call(chat(prompt), key_id=key_id)
    await stage.handle(call, upstream)
    return call.response_headers["x-gateway-cache"]


async def test_each_purge_target_invalidates_its_entries_only() -> None:
    store = MemoryStore()
    stage, upstream = CacheStage(CacheConfig(), store), Upstream()
    assert [await status(stage, upstream, key_id=k) for k in ("k1", "k2")] == ["MISS", "MISS"]
    assert await cache_generations.purge(store, tenant="k1", model="other")  # another model: no effect
    assert [await status(stage, upstream, key_id=k) for k in ("k1", "k2")] == ["HIT", "HIT"]
    assert await cache_generations.purge(store, tenant="k1", model="echo")
    assert [await status(stage, upstream, key_id=k) for k in ("k1", "k2")] == ["MISS", "HIT"]
    assert await cache_generations.purge(store, tenant="k2")
    assert [await status(stage, upstream, key_id=k) for k in ("k1", "k2")] == ["HIT", "MISS"]
    assert await cache_generations.purge(store, model="echo")
    assert [await status(stage, upstream, key_id=k) for k in ("k1", "k2")] == ["MISS", "MISS"]
    assert await cache_generations.purge(store)
    assert [await status(stage, upstream, key_id=k) for k in ("k1", "k2")] == ["MISS", "MISS"]
    assert upstream.calls == 8


async def test_an_answer_computed_while_a_purge_happened_is_not_served_after_it() -> None:
    store = MemoryStore()
    stage = CacheStage(CacheConfig(), store)
    calls = 0

    async def purging_upstream(call: Call) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            # The purge lands while this answer is on its way: it reflects the state before the purge.
            await cache_generations.purge(store, model="echo")
        return Response(chat_body(call.body, "m", MockOptions(), "id"))

    for expected in ("MISS", "MISS", "HIT"):
        call = make_call(chat("race"))
        await stage.handle(call, purging_upstream)
        assert call.response_headers["x-gateway-cache"] == expected
    assert calls == 2


async def test_a_lost_token_costs_a_miss_never_a_stale_hit() -> None:
    store = MemoryStore()
    stage, upstream = CacheStage(CacheConfig(), store), Upstream()
    assert await status(stage, upstream) == "MISS"
    assert await cache_generations.purge(store, model="echo")
    assert await status(stage, upstream) == "MISS"
    # The purged model's token is evicted: neither the entry from before nor the one from after matches.
    await store.delete(cache_generations.model_token("echo"))
    assert await status(stage, upstream) == "MISS"
    assert await status(stage, upstream) == "HIT"


class DownStore(MemoryStore):
    """A store that is unreachable and fails open: every read answers None, writes are dropped."""

    healthy = False

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def get(self, key: str) -> bytes | None:
        return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [None] * len(keys)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.writes += 1


async def test_with_the_store_down_nothing_is_written_and_a_purge_reports_failure() -> None:
    store = DownStore()
    stage, upstream = CacheStage(CacheConfig(), store), Upstream()
    assert [await status(stage, upstream) for _ in range(2)] == ["MISS", "MISS"]
    assert store.writes == 0 and upstream.calls == 2
    assert not await cache_generations.purge(store, model="echo")
