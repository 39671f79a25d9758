"""The rate limiter's status read (`RateLimitStage.status`): what a key and its team have used and have left,
on the memory store and on a real redis-server, without spending any allowance or freeing a slot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from gateway.config import parse_config
from gateway.features.ratelimit import Limits, RateLimitConfig, RateLimitStage
from gateway.pipeline import Call, KeyIdentity, Response
from gateway.providers.mock import MockOptions, chat_body
from gateway.stores import MemoryStore, RedisStore
from gateway.stores.base import AtomicOp, Store

pytestmark = pytest.mark.anyio

CONFIG = parse_config(
    "providers: [{name: mock, type: mock}]\nmodels: [{name: echo, routes: [{provider: mock}]}]\n", "t.yaml"
)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        # A clock standing still: the allowance does not refill between steps, so the figures are exact.
        yield MemoryStore(clock=lambda: 1_700_000_000.0)
        return
    redis = RedisStore(request.getfixturevalue("redis_url"))
    yield redis
    await redis.close()


def identity(**team: Any) -> KeyIdentity:
    # A fresh id per test: the Redis server is shared by the session.
    return KeyIdentity(name="alice", key_id=f"id-{uuid.uuid4().hex[:12]}", **team)


def call(key: KeyIdentity) -> Call:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    model = CONFIG.model("echo")
    assert model is not None
    return Call(
        request_id="r", key=key, endpoint="chat", model="echo", model_config=model, body=body, headers={}
    )


async def answer(call: Call) -> Response:
    return Response(chat_body(call.body, "m", MockOptions(), "id"))


def by_kind(rows: list[dict[str, Any]], scope: str = "key") -> dict[str, dict[str, Any]]:
    return {row["kind"]: row for row in rows if row["scope"] == scope}


async def test_a_fresh_key_has_its_whole_allowance(store: Store) -> None:
    key = identity()
    stage = RateLimitStage(RateLimitConfig(), {key.key_id: Limits(rpm=3, tpm=1000, max_concurrent=2)}, store)
    [rows] = await stage.status([key])
    assert rows == [
        {"scope": "key", "name": "alice", "kind": "requests", "limit": 3, "used": 0, "remaining": 3,
         "reset_ms": 0},
        {"scope": "key", "name": "alice", "kind": "tokens", "limit": 1000, "used": 0, "remaining": 1000,
         "reset_ms": 0},
        {"scope": "key", "name": "alice", "kind": "concurrent", "limit": 2, "used": 0, "remaining": 2,
         "reset_ms": None},
    ]  # fmt: skip


async def test_status_shows_what_requests_spent_and_reading_it_spends_nothing(store: Store) -> None:
    key = identity()
    stage = RateLimitStage(RateLimitConfig(), {key.key_id: Limits(rpm=3, tpm=1000)}, store)
    spent = 0
    for _ in range(2):
        result = await stage.handle(call(key), answer)
        assert isinstance(result, Response) and result.usage is not None
        spent += result.usage["total_tokens"]
    for _ in range(5):  # reads: none of them may take a request or a token
        rows = by_kind((await stage.status([key]))[0])
    # One request refills every 20 s: on Redis's real clock a very slow machine may see one back.
    assert rows["requests"]["used"] in (1, 2) and rows["requests"]["remaining"] in (1, 2)
    assert rows["requests"]["used"] + rows["requests"]["remaining"] == 3
    assert 0 < rows["requests"]["reset_ms"] <= 40_000
    assert 0 < rows["tokens"]["used"] <= spent and rows["tokens"]["reset_ms"] > 0
    if isinstance(store, MemoryStore):
        assert rows["requests"]["used"] == 2 and rows["tokens"]["used"] == spent
    # The allowance the reads left is still there: a third request is admitted.
    assert isinstance(await stage.handle(call(key), answer), Response)


async def test_a_request_in_flight_holds_a_slot_and_status_does_not_free_it(store: Store) -> None:
    key = identity()
    stage = RateLimitStage(RateLimitConfig(), {key.key_id: Limits(max_concurrent=1)}, store)
    inside, leave = anyio.Event(), anyio.Event()

    async def slow(call: Call) -> Response:
        inside.set()
        await leave.wait()
        return await answer(call)

    async with anyio.create_task_group() as group:
        group.start_soon(stage.handle, call(key), slow)
        await inside.wait()
        for _ in range(3):
            [rows] = await stage.status([key])
        assert by_kind(rows)["concurrent"] == {
            "scope": "key", "name": "alice", "kind": "concurrent", "limit": 1, "used": 1, "remaining": 0,
            "reset_ms": None,
        }  # fmt: skip
        leave.set()
    assert by_kind((await stage.status([key]))[0])["concurrent"]["used"] == 0


async def test_a_runtime_team_allowance_is_reported_beside_the_key(store: Store) -> None:
    key = identity(team="red", rpm=10, team_rpm=5, team_tpm=2000)
    other = identity(team="red", team_rpm=5, team_tpm=2000)
    stage = RateLimitStage(RateLimitConfig(), {}, store)
    assert isinstance(await stage.handle(call(other), answer), Response)
    mine, theirs = await stage.status([key, other])
    assert by_kind(mine)["requests"]["limit"] == 10 and by_kind(mine)["requests"]["used"] == 0
    team = by_kind(mine, "team")
    assert team["requests"]["name"] == "red" and team["requests"]["limit"] == 5
    assert team["requests"]["used"] == 1  # the other key's request drew on the shared allowance
    assert team["tokens"]["limit"] == 2000 and team["tokens"]["used"] > 0
    assert by_kind(theirs, "team") == team
    # The other key sets no limit of its own and there is no default: only the team's limits.
    assert {row["scope"] for row in theirs} == {"team"}


async def test_status_of_many_keys_is_one_store_operation(store: Store) -> None:
    keys = [identity() for _ in range(5)]
    stage = RateLimitStage(RateLimitConfig(default=Limits(rpm=7, max_concurrent=3)), {}, store)
    ops: list[str] = []
    run = store.run

    async def counted(op: AtomicOp, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        ops.append(op.name)
        return await run(op, keys, args)

    store.run = counted  # type: ignore[method-assign]
    statuses = await stage.status(keys)
    assert ops == ["rl_status"]
    assert [[(r["kind"], r["limit"], r["used"]) for r in rows] for rows in statuses] == [
        [("requests", 7, 0), ("concurrent", 3, 0)]
    ] * 5


async def test_a_key_without_any_limit_has_an_empty_status_and_costs_no_store_read() -> None:
    store = MemoryStore()

    async def refuse(op: AtomicOp, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        raise AssertionError("no limit, so nothing to read")

    store.run = refuse  # type: ignore[method-assign]
    stage = RateLimitStage(RateLimitConfig(), {}, store)
    assert await stage.status([identity(), identity()]) == [[], []]
