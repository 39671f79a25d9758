"""``POST /admin/v1/cache/purge`` and ``POST /admin/v1/routes/{route}/reset``: through the app in process,
and across two gateway instances sharing a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from gateway_testing import serve
from redis_server import RedisServer

from gateway.config import parse_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

pytestmark = pytest.mark.anyio

MASTER = "sk-purge-test-master"
PURGER = "sk-purge-test-purger"
READER = "sk-purge-test-reader"
ALICE = "sk-purge-test-alice"
BOB = "sk-purge-test-bob"
CAROL = "sk-purge-test-carol"
DAVE = "sk-purge-test-dave"


def config_text(state: str = "") -> str:
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}}}
    - {{name: bob, key: {BOB}}}
    - {{name: carol, key: {CAROL}}}
    - {{name: dave, key: {DAVE}}}
admin:
  keys:
    - {{name: purger, key: {PURGER}, scopes: ["cache:write", "routes:write", "audit:read", "keys:read"]}}
    - {{name: reader, key: {READER}, scopes: ["keys:read", "routes:read"]}}
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
models:
  - {{name: echo, routes: [{{provider: up, model: mock-echo}}]}}
  - {{name: other, routes: [{{provider: up, model: mock-echo}}]}}
features:
  cache: {{shared: {{team: [carol, dave]}}}}
usage: {{database: ":memory:"}}
{state}
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str, content: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def cached(client: httpx.AsyncClient, key: str, model: str = "echo", prompt: str = "hello") -> str:
    reply = await client.post("/v1/chat/completions", json=chat(model, prompt), headers=bearer(key))
    assert reply.status_code == 200, reply.text
    return reply.headers["x-gateway-cache"]


async def purge(client: httpx.AsyncClient, body: dict[str, Any], key: str = PURGER) -> httpx.Response:
    return await client.post("/admin/v1/cache/purge", json=body, headers=bearer(key))


async def key_id(client: httpx.AsyncClient, name: str) -> str:
    listing = (await client.get("/admin/v1/keys", headers=bearer(MASTER))).json()
    return next(k["id"] for k in listing["data"] if k["name"] == name)


@asynccontextmanager
async def gateway(state: str = "") -> AsyncIterator[tuple[httpx.AsyncClient, MockUpstream]]:
    upstream = MockUpstream(MockOptions())
    config = parse_config(config_text(state), "purge.yaml")
    async with serve(config, transport=httpx.ASGITransport(app=upstream)) as client:
        yield client, upstream


async def test_purge_by_model_misses_that_model_only() -> None:
    async with gateway() as (client, upstream):
        for model in ("echo", "other"):
            assert await cached(client, ALICE, model) == "MISS"
            assert await cached(client, ALICE, model) == "HIT"
        reply = await purge(client, {"model": "echo"})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"purged": {"model": "echo"}, "shared_group": None}
        assert await cached(client, ALICE, "echo") == "MISS"
        assert await cached(client, BOB, "echo") == "MISS"
        assert await cached(client, ALICE, "other") == "HIT"
        # The fresh answer is cached again under the new generation.
        assert await cached(client, ALICE, "echo") == "HIT"
        assert upstream.stats["requests"] == 4


async def test_purge_by_key_misses_that_key_only_and_covers_runtime_keys() -> None:
    async with gateway() as (client, _):
        created = await client.post("/admin/v1/keys", json={"name": "svc"}, headers=bearer(MASTER))
        runtime = created.json()
        for key in (ALICE, BOB, runtime["secret"]):
            assert await cached(client, key) == "MISS"
            assert await cached(client, key) == "HIT"
        assert (await purge(client, {"key_id": await key_id(client, "alice")})).status_code == 200
        assert await cached(client, ALICE) == "MISS"
        assert await cached(client, BOB) == "HIT"
        assert await cached(client, runtime["secret"]) == "HIT"
        assert (await purge(client, {"key_id": runtime["id"]})).status_code == 200
        assert await cached(client, runtime["secret"]) == "MISS"
        assert await cached(client, BOB) == "HIT"


async def test_purge_by_key_and_model_together_and_all() -> None:
    async with gateway() as (client, _):
        for key in (ALICE, BOB):
            for model in ("echo", "other"):
                assert await cached(client, key, model) == "MISS"
        alice = await key_id(client, "alice")
        assert (await purge(client, {"key_id": alice, "model": "echo"})).status_code == 200
        assert await cached(client, ALICE, "echo") == "MISS"
        assert await cached(client, ALICE, "other") == "HIT"
        assert await cached(client, BOB, "echo") == "HIT"
        assert (await purge(client, {"all": True})).status_code == 200
        for key in (ALICE, BOB):
            for model in ("echo", "other"):
                assert await cached(client, key, model) == "MISS"


async def test_purging_a_key_of_a_shared_group_purges_the_group() -> None:
    async with gateway() as (client, _):
        assert await cached(client, CAROL) == "MISS"
        assert await cached(client, DAVE) == "HIT"  # the group shares one cache
        reply = await purge(client, {"key_id": await key_id(client, "carol")})
        assert reply.json()["shared_group"] == "team"
        assert await cached(client, DAVE) == "MISS"


async def test_purge_is_validated_scoped_and_audited() -> None:
    async with gateway() as (client, _):
        for body, param in (({}, None), ({"all": True, "model": "echo"}, None), ({"modle": "echo"}, "modle")):
            reply = await purge(client, body)
            assert reply.status_code == 400, body
            assert reply.json()["error"]["param"] == param
        unknown = await purge(client, {"model": "nope"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "model"
        missing = await purge(client, {"key_id": "key_missing"})
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "key_id"
        assert (await purge(client, {"all": True}, key=READER)).status_code == 403
        assert (await purge(client, {"all": True}, key=ALICE)).status_code == 403
        assert (await client.post("/admin/v1/cache/purge", json={"all": True})).status_code == 401
        assert (await purge(client, {"model": "other"})).status_code == 200
        audit = (await client.get("/admin/v1/audit", headers=bearer(PURGER))).json()["data"]
        record = audit[-1]
        assert record["action"] == "cache.purge" and record["target"] == {"model": "other"}
        assert record["actor"]["name"] == "purger"


async def test_a_purge_on_one_instance_takes_effect_on_another_sharing_redis() -> None:
    with RedisServer() as server:
        state = f"state: {{redis_url: '{server.url}'}}"
        upstream = MockUpstream(MockOptions())
        transport = httpx.ASGITransport(app=upstream)
        config = parse_config(config_text(state), "purge.yaml")
        async with serve(config, transport=transport) as one, serve(config, transport=transport) as two:
            for model in ("echo", "other"):
                assert await cached(one, ALICE, model) == "MISS"
                assert await cached(two, ALICE, model) == "HIT"
            assert (await purge(two, {"model": "echo"})).status_code == 200
            assert await cached(one, ALICE, "echo") == "MISS"
            assert await cached(one, ALICE, "other") == "HIT"
            assert await cached(two, BOB, "other") == "MISS"
            assert await cached(one, BOB, "other") == "HIT"
            assert (await purge(one, {"key_id": await key_id(one, "bob")})).status_code == 200
            assert await cached(two, BOB, "other") == "MISS"
            assert await cached(two, ALICE, "other") == "HIT"


async def test_a_purge_that_cannot_reach_redis_says_so() -> None:
    with RedisServer() as server:
        state = f"state: {{redis_url: '{server.url}', on_error: fail_open, timeout_seconds: 0.5}}"
        async with gateway(state) as (client, _):
            server.stop()
            reply = await purge(client, {"all": True})
            assert reply.status_code == 503
            assert reply.json()["error"]["code"] == "state_store_unavailable"
            assert str(server.port) not in reply.text


# --- route cooldown reset -----------------------------------------------------------------------------------


ROUTES_CONFIG = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: alice, key: {ALICE}}}]
admin:
  keys:
    - {{name: purger, key: {PURGER}, scopes: ["routes:write", "audit:read"]}}
    - {{name: reader, key: {READER}, scopes: ["routes:read"]}}
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
models:
  - {{name: echo, routes: [{{provider: up, model: org/mock-echo}}]}}
features:
  cache: {{enabled: false}}
usage: {{database: ":memory:"}}
"""


def upstream_answer(request: httpx.Request, limited: list[bool]) -> httpx.Response:
    if limited[0]:
        return httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "600"})
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "org/mock-echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "back"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )  # fmt: skip


async def test_resetting_a_route_in_cooldown_lets_it_answer_at_once() -> None:
    limited = [True]
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return upstream_answer(request, limited)

    config = parse_config(ROUTES_CONFIG, "routes.yaml")
    async with serve(config, transport=httpx.MockTransport(handler)) as client:
        ask = {"json": chat("echo", "hi"), "headers": bearer(ALICE)}
        assert (await client.post("/v1/chat/completions", **ask)).status_code == 429
        limited[0] = False  # the upstream is fine again, but the route is held for 600 s
        held = await client.post("/v1/chat/completions", **ask)
        assert held.status_code == 429 and len(calls) == 1
        routes = (await client.get("/admin/v1/routes", headers=bearer(READER))).json()
        assert routes["models"]["echo"]["routes"][0]["state"] == "open"

        path = "/admin/v1/routes/up/org/mock-echo/reset"
        assert (await client.post(path, headers=bearer(READER))).status_code == 403
        reply = await client.post(path, headers=bearer(PURGER))
        assert reply.status_code == 200, reply.text
        assert reply.json()["state"] == "closed" and reply.json()["route"] == "up/org/mock-echo"

        answered = await client.post("/v1/chat/completions", **ask)
        assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"] == "back"
        assert len(calls) == 2

        missing = await client.post("/admin/v1/routes/up/nope/reset", headers=bearer(PURGER))
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "route"
        audit = (await client.get("/admin/v1/audit", headers=bearer(PURGER))).json()["data"]
        record = audit[-1]
        assert record["action"] == "route.cooldown.reset" and record["target"] == "up/org/mock-echo"
        assert record["before"]["state"] == "open" and record["after"]["state"] == "closed"
