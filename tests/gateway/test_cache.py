"""The response cache: key composition, stream assembly and replay, the stage through the real app, Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from gateway_testing import serve

from gateway.config import GatewayConfig, parse_config
from gateway.errors import GatewayError
from gateway.features.cache import CacheConfig, CacheStage, cache_key, request_ttl
from gateway.features.cache_entries import assemble, replay_chunks
from gateway.mock_upstream import MockUpstream
from gateway.pipeline import Call, KeyIdentity, Response, Stream
from gateway.providers.mock import MockOptions, chat_body, chat_chunks
from gateway.stores import MemoryStore

pytestmark = pytest.mark.anyio

ALICE = "sk-cache-alice-0001"
URL = "/v1/chat/completions"
BOB = "sk-cache-bob-00002"


def config_text(cache: str = "{}", state: str = "") -> str:
    return f"""
auth:
  keys:
    - {{name: alice, key: {ALICE}}}
    - {{name: bob, key: {BOB}}}
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
  - {{name: broken, type: mock, options: {{fail_rate: 1.0, fail_status: 503}}}}
models:
  - {{name: echo, routes: [{{provider: up, model: mock-echo}}]}}
  - {{name: embed, routes: [{{provider: up, model: mock-embed}}]}}
  - {{name: broken, routes: [{{provider: broken}}]}}
features:
  cache: {cache}
usage: {{database: ":memory:"}}
{state}
"""


def auth(key: str = ALICE, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **extra}


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


def sse(text: str) -> list[Any]:
    events = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


@asynccontextmanager
async def gateway(
    cache: str = "{}", state: str = ""
) -> AsyncIterator[tuple[httpx.AsyncClient, MockUpstream, CacheStage]]:
    """The app with the cache on, in front of a counting mock upstream."""
    upstream = MockUpstream(MockOptions(chunk_size=3))
    config = parse_config(config_text(cache, state), "test.yaml")
    async with serve(config, transport=httpx.ASGITransport(app=upstream)) as client:
        app_gateway = client._transport.app.state.gateway  # type: ignore[attr-defined]
        stage = next(s for s in app_gateway.stages if isinstance(s, CacheStage))
        yield client, upstream, stage


def make_call(body: dict[str, Any], key_id: str = "k1", headers: dict[str, str] | None = None) -> Call:
    config = parse_config(config_text(), "t.yaml")
    model = config.model("echo")
    assert model is not None
    return Call(
        request_id="req1",
        key=KeyIdentity(name="alice", key_id=key_id),
        endpoint="chat",
        model=body["model"],
        model_config=model,
        body=body,
        headers=headers or {},
        stream=bool(body.get("stream")),
    )


# --- the key -----------------------------------------------------------------------------------------------


def test_key_depends_on_tenant_model_and_every_output_changing_field() -> None:
    base = chat("hi", temperature=0.2)
    key = cache_key(make_call(base))
    assert cache_key(make_call(dict(base))) == key
    assert cache_key(make_call(base, key_id="k2")) != key
    assert cache_key(make_call({**base, "model": "other"})) != key
    for field, value in [
        ("temperature", 0.3),
        ("max_tokens", 5),
        ("seed", 1),
        ("stop", ["x"]),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("response_format", {"type": "json_object"}),
        ("user", "end-user-1"),
        ("top_k", 5),  # a provider extra the gateway does not know
        ("messages", [{"role": "user", "content": "hi!"}]),
    ]:
        assert cache_key(make_call({**base, field: value})) != key, field


def test_key_ignores_delivery_fields_and_float_spelling() -> None:
    base = chat("hi", temperature=1)
    key = cache_key(make_call(base))
    assert cache_key(make_call({**base, "stream": True, "stream_options": {"include_usage": True}})) == key
    assert cache_key(make_call({**base, "temperature": 1.0})) == key
    assert key.startswith("gw:cache:") and "alice" not in key
    # Integral floats are integers at any depth (in objects and in arrays), other floats stay themselves.
    nested = {**base, "logit_bias": {"50256": -100}, "x_extra": [1, {"scale": 2}, [3]]}
    spelled = {**base, "logit_bias": {"50256": -100.0}, "x_extra": [1.0, {"scale": 2.0}, [3.0]]}
    assert cache_key(make_call(spelled)) == cache_key(make_call(nested)) != key
    other = {**nested, "x_extra": [1, {"scale": 2.5}, [3]]}
    assert cache_key(make_call(other)) != cache_key(make_call(nested))


def test_ttl_from_header_model_and_default() -> None:
    config = CacheConfig(ttl_seconds=60, max_ttl_seconds=120, models={"echo": {"ttl_seconds": 90}})
    assert request_ttl(make_call(chat("a")), config) == 90
    assert request_ttl(make_call(chat("a", model="x")), config) == 60
    assert request_ttl(make_call(chat("a"), headers={"x-gateway-cache-ttl": "30"}), config) == 30
    assert request_ttl(make_call(chat("a"), headers={"x-gateway-cache-ttl": "9999"}), config) == 120
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(GatewayError) as info:
            request_ttl(make_call(chat("a"), headers={"x-gateway-cache-ttl": bad}), config)
        assert info.value.status == 400 and "x-gateway-cache-ttl" in info.value.message


# --- streams ------------------------------------------------------------------------------------------------


def test_a_stream_assembles_into_the_body_a_plain_request_gets() -> None:
    body = chat("assemble me please")
    plain = chat_body(body, "m", MockOptions(), "id1")
    streamed = assemble(chat_chunks(body, "m", MockOptions(chunk_size=2), "id1"))
    assert streamed is not None
    assert streamed["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert streamed["choices"][0]["finish_reason"] == "stop"
    assert streamed["usage"] == plain["usage"]
    assert streamed["object"] == "chat.completion"


def test_tool_calls_survive_assembly_and_replay() -> None:
    body = chat("x", tools=[{"type": "function", "function": {"name": "lookup"}}], tool_choice="required")
    stored = assemble(chat_chunks(body, "m", MockOptions(), "id1"))
    assert stored is not None
    call = stored["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup" and call["id"].startswith("call_")
    assert assemble(replay_chunks(stored, 4)) == stored


def test_replay_has_the_chunk_shape_and_ends_with_usage() -> None:
    stored = chat_body(chat("replay this text"), "m", MockOptions(), "id1")
    chunks = replay_chunks(stored, 4)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "id1" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "replay this text"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == stored["usage"]
    assert assemble(chunks) == {**stored, "choices": [{**stored["choices"][0]}]}


def test_partial_or_failed_streams_do_not_assemble() -> None:
    chunks = chat_chunks(chat("cut short"), "m", MockOptions(), "id1")
    assert assemble(chunks[:-2]) is None  # no finish_reason yet
    assert assemble([*chunks[:2], {"error": {"message": "boom"}}]) is None
    finish = chunks[-2]
    failed = [*chunks[:-2], {**finish, "choices": [{**finish["choices"][0], "finish_reason": "error"}]}]
    assert assemble(failed) is None
    assert assemble([]) is None


async def test_a_stream_abandoned_by_the_client_is_not_stored() -> None:
    store = MemoryStore()
    stage = CacheStage(CacheConfig(), store)
    call = make_call(chat("abandon", stream=True))
    chunks = chat_chunks(call.body, "m", MockOptions(chunk_size=1), "id1")

    async def upstream(_: Call) -> Stream:
        return Stream.from_chunks(chunks)

    stream = await stage.handle(call, upstream)
    assert isinstance(stream, Stream)
    iterator = aiter(stream)
    await anext(iterator)
    await anext(iterator)
    await stream.aclose()
    assert await store.get(cache_key(call)) is None and stage.stats.stores == 0

    # The same stream read to the end is stored.
    call = make_call(chat("abandon", stream=True))
    stream = await stage.handle(call, upstream)
    assert isinstance(stream, Stream)
    assert [c async for c in stream] == chunks
    assert await store.get(cache_key(call)) is not None and stage.stats.stores == 1


async def test_entries_expire_with_their_ttl() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    stage = CacheStage(CacheConfig(ttl_seconds=10), store)
    calls = 0

    async def upstream(call: Call) -> Response:
        nonlocal calls
        calls += 1
        return Response(chat_body(call.body, "m", MockOptions(), "id"))

    await stage.handle(make_call(chat("ttl")), upstream)
    now[0] += 9
    await stage.handle(make_call(chat("ttl")), upstream)
    assert calls == 1
    now[0] += 2
    await stage.handle(make_call(chat("ttl")), upstream)
    assert calls == 2


async def test_oversized_entries_are_not_stored() -> None:
    store = MemoryStore()
    stage = CacheStage(CacheConfig(max_entry_bytes=64), store)

    async def upstream(call: Call) -> Response:
        return Response(chat_body(call.body, "m", MockOptions(), "id"))

    call = make_call(chat("a long answer " * 50))
    await stage.handle(call, upstream)
    assert await store.get(cache_key(call)) is None and stage.stats.too_large == 1


# --- through the app ---------------------------------------------------------------------------------------


async def test_second_identical_request_is_a_hit_and_the_upstream_is_called_once() -> None:
    async with gateway() as (client, upstream, stage):
        first = await client.post("/v1/chat/completions", json=chat("cache me"), headers=auth())
        second = await client.post("/v1/chat/completions", json=chat("cache me"), headers=auth())
        assert first.status_code == second.status_code == 200
        assert first.headers["x-gateway-cache"] == "MISS"
        assert second.headers["x-gateway-cache"] == "HIT"
        assert upstream.stats["requests"] == 1
        a, b = first.json(), second.json()
        assert b["choices"] == a["choices"]
        assert b["id"] != a["id"]
        assert b["usage"]["total_tokens"] == 0
        assert b["usage"]["saved_total_tokens"] == a["usage"]["total_tokens"] > 0
        assert b["usage"]["saved_prompt_tokens"] == a["usage"]["prompt_tokens"]

        other = await client.post("/v1/chat/completions", json=chat("cache me"), headers=auth(BOB))
        assert other.headers["x-gateway-cache"] == "MISS"
        assert upstream.stats["requests"] == 2
        assert stage.stats.snapshot() == {
            "hits": 1,
            "misses": 2,
            "bypasses": 0,
            "stores": 2,
            "too_large": 0,
            "tokens_saved": a["usage"]["total_tokens"],
        }


async def test_different_parameters_miss() -> None:
    async with gateway() as (client, upstream, _):
        await client.post("/v1/chat/completions", json=chat("p", temperature=0), headers=auth())
        again = await client.post("/v1/chat/completions", json=chat("p", temperature=0.5), headers=auth())
        assert again.headers["x-gateway-cache"] == "MISS"
        assert upstream.stats["requests"] == 2


async def test_cache_control_no_cache_refreshes_and_no_store_skips() -> None:
    async with gateway() as (client, upstream, _):
        url = "/v1/chat/completions"
        await client.post(url, json=chat("cc"), headers=auth())
        fresh = await client.post(url, json=chat("cc"), headers=auth(**{"cache-control": "no-cache"}))
        assert fresh.headers["x-gateway-cache"] == "BYPASS"
        assert upstream.stats["requests"] == 2
        assert (await client.post(url, json=chat("cc"), headers=auth())).headers["x-gateway-cache"] == "HIT"

        for _ in range(2):
            skipped = await client.post(url, json=chat("ns"), headers=auth(**{"cache-control": "no-store"}))
            assert skipped.headers["x-gateway-cache"] == "BYPASS"
        assert upstream.stats["requests"] == 4
        assert (await client.post(url, json=chat("ns"), headers=auth())).headers["x-gateway-cache"] == "MISS"


async def test_ttl_header_zero_stores_nothing() -> None:
    async with gateway() as (client, _, _):
        url = "/v1/chat/completions"
        await client.post(url, json=chat("zero"), headers=auth(**{"x-gateway-cache-ttl": "0"}))
        again = await client.post(url, json=chat("zero"), headers=auth())
        assert again.headers["x-gateway-cache"] == "MISS"
        bad = await client.post(url, json=chat("zero"), headers=auth(**{"x-gateway-cache-ttl": "later"}))
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_header"


async def test_errors_are_never_stored() -> None:
    async with gateway() as (client, _, stage):
        for _ in range(2):
            failed = await client.post("/v1/chat/completions", json=chat("x", model="broken"), headers=auth())
            assert failed.status_code == 503
        assert stage.stats.stores == 0 and stage.stats.hits == 0


async def test_a_streamed_answer_is_stored_and_replayed_as_sse() -> None:
    async with gateway() as (client, upstream, _):
        body = chat("stream me", stream=True, stream_options={"include_usage": True})
        first = await client.post("/v1/chat/completions", json=body, headers=auth())
        assert first.headers["x-gateway-cache"] == "MISS"
        second = await client.post("/v1/chat/completions", json=body, headers=auth())
        assert second.headers["x-gateway-cache"] == "HIT"
        assert second.headers["content-type"].startswith("text/event-stream")
        assert upstream.stats["requests"] == 1
        chunks = sse(second.text)
        assert chunks[-1] == "[DONE]"
        assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2]) == "stream me"
        assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["saved_total_tokens"] > 0

        # The same entry serves a plain request, and a stream without usage gets no usage chunk.
        plain = await client.post("/v1/chat/completions", json=chat("stream me"), headers=auth())
        assert plain.headers["x-gateway-cache"] == "HIT"
        assert plain.json()["choices"][0]["message"]["content"] == "stream me"
        quiet = await client.post("/v1/chat/completions", json=chat("stream me", stream=True), headers=auth())
        assert not any(c != "[DONE]" and not c["choices"] for c in sse(quiet.text))
        assert upstream.stats["requests"] == 1


async def test_a_plain_answer_serves_a_stream() -> None:
    async with gateway() as (client, upstream, _):
        await client.post("/v1/chat/completions", json=chat("plain first"), headers=auth())
        body = chat("plain first", stream=True)
        streamed = await client.post("/v1/chat/completions", json=body, headers=auth())
        assert streamed.headers["x-gateway-cache"] == "HIT"
        chunks = sse(streamed.text)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "plain first"
        assert upstream.stats["requests"] == 1


async def test_embeddings_are_cached() -> None:
    async with gateway() as (client, upstream, _):
        body = {"model": "embed", "input": ["a", "b"]}
        first = await client.post("/v1/embeddings", json=body, headers=auth())
        second = await client.post("/v1/embeddings", json=body, headers=auth())
        assert second.headers["x-gateway-cache"] == "HIT"
        assert second.json()["data"] == first.json()["data"]
        assert upstream.stats["requests"] == 1


async def test_deterministic_mode_caches_only_reproducible_requests() -> None:
    async with gateway("{mode: deterministic}") as (client, upstream, _):
        url = "/v1/chat/completions"
        creative = await client.post(url, json=chat("d", temperature=0.9), headers=auth())
        assert creative.headers["x-gateway-cache"] == "BYPASS"
        for body in (chat("d", temperature=0), chat("d", seed=7)):
            await client.post(url, json=body, headers=auth())
            again = await client.post(url, json=body, headers=auth())
            assert again.headers["x-gateway-cache"] == "HIT"
        assert upstream.stats["requests"] == 3


async def test_a_model_can_opt_in_when_the_default_is_off() -> None:
    async with gateway("{enabled: false, models: {embed: {enabled: true}}}") as (client, upstream, _):
        assert (await client.post(URL, json=chat("off"), headers=auth())).headers[
            "x-gateway-cache"
        ] == "BYPASS"
        body = {"model": "embed", "input": "on"}
        await client.post("/v1/embeddings", json=body, headers=auth())
        assert (await client.post("/v1/embeddings", json=body, headers=auth())).headers[
            "x-gateway-cache"
        ] == "HIT"
        assert upstream.stats["requests"] == 2


async def test_a_model_can_opt_out() -> None:
    async with gateway("{models: {echo: {enabled: false}}}") as (client, upstream, _):
        for _ in range(2):
            reply = await client.post("/v1/chat/completions", json=chat("opt out"), headers=auth())
            assert reply.headers["x-gateway-cache"] == "BYPASS"
        assert upstream.stats["requests"] == 2


def test_cache_config_errors_name_the_key() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(config_text("{ttl_secs: 5, mode: sometimes}"), "gw.yaml")
    text = str(info.value)
    assert "features.cache.ttl_secs" in text and "did you mean 'ttl_seconds'" in text
    assert "features.cache.mode" in text


# --- two replicas, one Redis -------------------------------------------------------------------------------


async def test_two_replicas_share_the_cache_through_redis(redis_url: str) -> None:
    # A fresh namespace per run: the session's Redis may hold entries of earlier tests.
    upstream = MockUpstream(MockOptions())
    transport = httpx.ASGITransport(app=upstream)
    config: GatewayConfig = parse_config(config_text(state=f"state: {{redis_url: '{redis_url}'}}"), "t.yaml")
    prompt = f"shared across replicas {id(upstream)}"
    async with serve(config, transport=transport) as one, serve(config, transport=transport) as two:
        first = await one.post("/v1/chat/completions", json=chat(prompt), headers=auth())
        second = await two.post("/v1/chat/completions", json=chat(prompt), headers=auth())
        other_key = await two.post("/v1/chat/completions", json=chat(prompt), headers=auth(BOB))
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.json()["choices"] == first.json()["choices"]
    assert other_key.headers["x-gateway-cache"] == "MISS"
    assert upstream.stats["requests"] == 2


async def test_redis_down_fails_open_as_a_miss() -> None:
    from redis_server import RedisServer

    with RedisServer() as server:
        state = f"state: {{redis_url: '{server.url}', on_error: fail_open, timeout_seconds: 0.5}}"
        async with gateway(state=state) as (client, upstream, _):
            server.stop()
            for _ in range(2):
                reply = await client.post("/v1/chat/completions", json=chat("outage"), headers=auth())
                assert reply.status_code == 200 and reply.headers["x-gateway-cache"] == "MISS"
            assert upstream.stats["requests"] == 2


async def test_redis_down_fails_closed_with_503() -> None:
    from redis_server import RedisServer

    with RedisServer() as server:
        state = f"state: {{redis_url: '{server.url}', on_error: fail_closed, timeout_seconds: 0.5}}"
        async with gateway(state=state) as (client, upstream, _):
            server.stop()
            reply = await client.post("/v1/chat/completions", json=chat("outage"), headers=auth())
            assert reply.status_code == 503
            assert reply.json()["error"]["code"] == "state_store_unavailable"
            assert str(server.port) not in reply.text
            assert upstream.stats["requests"] == 0


def test_the_feature_catalog_reports_whether_caching_is_on() -> None:
    from gateway.catalog import features_report

    def on(cache: str) -> bool:
        return features_report(parse_config(config_text(cache), "t.yaml"))["response-caching"]["enabled"]

    assert on("{}")
    assert on("{enabled: false, models: {echo: {enabled: true}}}")
    assert not on("{enabled: false}")
    assert not features_report(parse_config(config_text().replace("  cache: {}", "  {}"), "t.yaml"))[
        "response-caching"
    ]["enabled"]


def test_per_model_settings_must_name_a_configured_model() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(config_text("{models: {ecko: {ttl_seconds: 5}}}"), "gw.yaml")
    assert "features.cache.models.ecko: unknown model 'ecko', did you mean 'echo'?" in str(info.value)


async def test_admin_cache_reports_this_replicas_counters() -> None:
    text = config_text().replace("auth:\n", "auth:\n  master_key: sk-cache-master-01\n")
    upstream = MockUpstream(MockOptions())
    async with serve(parse_config(text, "t.yaml"), transport=httpx.ASGITransport(app=upstream)) as client:
        for _ in range(2):
            await client.post(URL, json=chat("count me"), headers=auth())
        assert (await client.get("/admin/cache", headers=auth())).status_code == 401
        report = (await client.get("/admin/cache", headers=auth("sk-cache-master-01"))).json()
    assert report["enabled"] is True and report["backend"] == "memory"
    assert (
        report["stats"]["hits"] == 1
        and report["stats"]["misses"] == 1
        and report["stats"]["tokens_saved"] > 0
    )


async def test_keys_in_a_shared_group_share_entries_and_nobody_else_does() -> None:
    text = config_text("{shared: {research: [alice, bob]}}").replace(
        "    - {name: bob, key: " + BOB + "}",
        "    - {name: bob, key: " + BOB + "}\n    - {name: carol, key: sk-cache-carol-0003}",
    )
    upstream = MockUpstream(MockOptions())
    async with serve(parse_config(text, "t.yaml"), transport=httpx.ASGITransport(app=upstream)) as client:
        await client.post(URL, json=chat("team answer"), headers=auth())
        shared = await client.post(URL, json=chat("team answer"), headers=auth(BOB))
        outsider = await client.post(URL, json=chat("team answer"), headers=auth("sk-cache-carol-0003"))
    assert shared.headers["x-gateway-cache"] == "HIT"
    assert outsider.headers["x-gateway-cache"] == "MISS"


def test_shared_groups_name_known_keys_once() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(config_text("{shared: {a: [alice, alcie], b: [alice]}}"), "gw.yaml")
    text = str(info.value)
    assert "features.cache.shared.a[1]: unknown key 'alcie', did you mean 'alice'?" in text
    assert "key 'alice' is in two shared groups, 'a' and 'b'" in text
