"""Rate limiting: GCRA limits per key and per model, token reconciliation, concurrency, headers, Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from gateway_testing import serve
from redis_server import RedisServer

from gateway.config import ConfigError, parse_config
from gateway.errors import GatewayError
from gateway.features.ratelimit import (
    Limits,
    RateLimitConfig,
    RateLimitStage,
    estimate_tokens,
    format_duration,
)
from gateway.pipeline import Call, KeyIdentity, Response, Stream
from gateway.providers.mock import MockOptions, chat_body, chat_chunks
from gateway.stores import MemoryStore

pytestmark = pytest.mark.anyio

ALICE = "sk-rl-alice-000001"
BOB = "sk-rl-bob-00000002"
CAROL = "sk-rl-carol-000003"
URL = "/v1/chat/completions"


def config_text(alice: str = "", bob: str = "", feature: str = "{}", extra: str = "") -> str:
    return f"""
auth:
  keys:
    - {{name: alice, key: {ALICE}{alice}}}
    - {{name: bob, key: {BOB}{bob}}}
    - {{name: carol, key: {CAROL}}}
providers:
  - {{name: mock, type: mock}}
  - {{name: broken, type: mock, options: {{fail_rate: 1.0, fail_status: 503}}}}
models:
  - {{name: echo, routes: [{{provider: mock}}]}}
  - {{name: other, routes: [{{provider: mock}}]}}
  - {{name: broken, routes: [{{provider: broken}}]}}
usage: {{database: ":memory:"}}
features:
  rate_limit: {feature}
{extra}
"""


def auth(key: str = ALICE) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat(content: str = "hi", model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@asynccontextmanager
async def gateway(**kwargs: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(parse_config(config_text(**kwargs), "test.yaml")) as client:
        yield client


def assert_429(response: httpx.Response, kind: str = "requests") -> None:
    """A well-formed rate-limit refusal: OpenAI envelope, retry-after, and the limit headers."""
    assert response.status_code == 429
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_exceeded"
    assert kind in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["retry-after-ms"]) > 0
    # A request needs one request unit but possibly many tokens: some tokens may remain, just not enough.
    remaining = int(response.headers[f"x-ratelimit-remaining-{kind}"])
    assert (
        remaining == 0
        if kind == "requests"
        else remaining < int(response.headers[f"x-ratelimit-limit-{kind}"])
    )
    for secret in (ALICE, BOB, CAROL):
        assert secret not in response.text


# --- pieces ----------------------------------------------------------------------------------------------


def test_durations_use_openai_format() -> None:
    assert format_duration(120_000) == "120ms"
    assert format_duration(6_000_000) == "6s"
    assert format_duration(1_500_000) == "1.5s"
    assert format_duration(60_000_000) == "1m0s"
    assert format_duration(90_000_000) == "1m30s"


def make_call(body: dict[str, Any], name: str = "alice") -> Call:
    config = parse_config(config_text(), "t.yaml")
    model = config.model(body["model"])
    assert model is not None
    return Call(
        request_id="r",
        key=KeyIdentity(name=name, key_id=f"id-{name}"),
        endpoint="chat",
        model=body["model"],
        model_config=model,
        body=body,
        headers={},
        stream=bool(body.get("stream")),
    )


def test_estimate_is_prompt_plus_the_completion_allowance() -> None:
    prompt, completion = estimate_tokens(make_call(chat("x" * 400, max_tokens=50)), 256)
    assert 100 <= prompt <= 120 and completion == 50
    assert estimate_tokens(make_call(chat("x")), 256)[1] == 256
    assert estimate_tokens(make_call(chat("x", max_completion_tokens=7, n=3)), 256)[1] == 21


# --- through the app -------------------------------------------------------------------------------------


async def test_rpm_admits_the_limit_then_answers_429_with_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The store's clock stands still, so the wait announced is exact however slow the machine is.
    monkeypatch.setattr(MemoryStore, "_now_us", lambda self: 1_700_000_000_000_000)
    async with gateway(alice=", rpm: 3") as client:
        replies = [await client.post(URL, json=chat(), headers=auth()) for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in replies[:3]] == ["2", "1", "0"]
        assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in replies)
        assert replies[0].headers["x-ratelimit-reset-requests"] == "20s"
        assert_429(replies[3])
        assert replies[3].headers["retry-after"] == "20"  # one request frees up every 20 s
        assert replies[3].headers["x-ratelimit-reset-requests"] == "1m0s"  # until all 3 are free again
        assert "x-ratelimit-limit-tokens" not in replies[0].headers
        # Another key is not affected, and a key without limits gets no limit headers.
        other = await client.post(URL, json=chat(), headers=auth(BOB))
        assert other.status_code == 200 and "x-ratelimit-limit-requests" not in other.headers


async def test_tpm_counts_the_estimate_and_refuses_a_request_that_can_never_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The store's clock stands still: with a real one, a busy machine taking ~12 s between the two long
    # requests would refill enough tokens (1,000 per minute) for the second to fit.
    monkeypatch.setattr(MemoryStore, "_now_us", lambda self: 1_700_000_000_000_000)
    async with gateway(alice=", tpm: 1000") as client:
        ok = await client.post(URL, json=chat(max_tokens=100), headers=auth())
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit-tokens"] == "1000"
        # The headers show the state at admission: the prompt estimate plus the 100-token allowance charged.
        assert 880 <= int(ok.headers["x-ratelimit-remaining-tokens"]) <= 900
        too_big = await client.post(URL, json=chat(max_tokens=5000), headers=auth())
        assert too_big.status_code == 429
        assert "Request too large" in too_big.json()["error"]["message"]
        # Prompts are real usage (the mock echoes them back): two of about 600 tokens do not fit in 1,000.
        long = chat("word " * 480, max_tokens=1)
        assert (await client.post(URL, json=long, headers=auth())).status_code == 200
        assert_429(await client.post(URL, json=long, headers=auth()), "tokens")


async def test_real_usage_is_reconciled_after_the_answer() -> None:
    async with gateway(alice=", tpm: 100000") as client:
        first = await client.post(URL, json=chat(max_tokens=5000), headers=auth())
        second = await client.post(URL, json=chat(max_tokens=10), headers=auth())
        # Without reconciling, the first request would still hold its 5,000-token allowance.
        assert int(second.headers["x-ratelimit-remaining-tokens"]) > 100000 - 200
        assert first.status_code == second.status_code == 200


async def test_limits_of_a_model_per_key_and_shared() -> None:
    async with gateway(feature="{models: {echo: {rpm: 1}}}") as client:
        assert (await client.post(URL, json=chat(), headers=auth())).status_code == 200
        assert_429(await client.post(URL, json=chat(), headers=auth()))
        assert (await client.post(URL, json=chat(model="other"), headers=auth())).status_code == 200
        assert (await client.post(URL, json=chat(), headers=auth(BOB))).status_code == 200
    async with gateway(feature="{models: {echo: {rpm: 1, shared: true}}}") as client:
        assert (await client.post(URL, json=chat(), headers=auth())).status_code == 200
        refused = await client.post(URL, json=chat(), headers=auth(BOB))
        assert_429(refused)
        assert "model 'echo'" in refused.json()["error"]["message"]


async def test_defaults_apply_to_keys_without_limits() -> None:
    async with gateway(alice=", rpm: 5", feature="{default: {rpm: 1}}") as client:
        assert (await client.post(URL, json=chat(), headers=auth(CAROL))).status_code == 200
        assert_429(await client.post(URL, json=chat(), headers=auth(CAROL)))
        assert [(await client.post(URL, json=chat(), headers=auth())).status_code for _ in range(2)] == [
            200,
            200,
        ]


async def test_a_refused_request_charges_no_other_limit() -> None:
    async with gateway(alice=", rpm: 5", feature="{models: {echo: {rpm: 1}}}") as client:
        await client.post(URL, json=chat(), headers=auth())
        for _ in range(3):
            assert (await client.post(URL, json=chat(), headers=auth())).status_code == 429
        other = await client.post(URL, json=chat(model="other"), headers=auth())
        assert other.headers["x-ratelimit-remaining-requests"] == "3"


async def test_upstream_errors_carry_the_limit_headers() -> None:
    async with gateway(alice=", rpm: 5, tpm: 10000") as client:
        failed = await client.post(URL, json=chat(model="broken"), headers=auth())
        assert failed.status_code == 503
        assert failed.headers["x-ratelimit-remaining-requests"] == "4"
        assert "x-ratelimit-remaining-tokens" in failed.headers


async def test_streams_are_limited_and_reconciled() -> None:
    async with gateway(alice=", rpm: 2, tpm: 100000") as client:
        body = chat("stream", stream=True, max_tokens=5000)
        first = await client.post(URL, json=body, headers=auth())
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.text.rstrip().endswith("data: [DONE]")
        second = await client.post(URL, json=chat(max_tokens=10), headers=auth())
        assert int(second.headers["x-ratelimit-remaining-tokens"]) > 100000 - 200
        assert_429(await client.post(URL, json=body, headers=auth()))


async def test_a_cache_hit_counts_as_a_request_but_costs_no_tokens() -> None:
    async with gateway(alice=", rpm: 100, tpm: 100000", extra="  cache: {}") as client:
        body = chat("cached", max_tokens=2000)
        await client.post(URL, json=body, headers=auth())
        hit = await client.post(URL, json=body, headers=auth())
        after = await client.post(URL, json=chat("next", max_tokens=10), headers=auth())
        assert hit.headers["x-gateway-cache"] == "HIT"
        assert hit.headers["x-ratelimit-remaining-requests"] == "98"
        # The hit was admitted as one (its entry existed): its 2,000-token estimate was never charged, so the
        # tokens it shows left are what the first request really used, and the next request finds them too.
        assert int(hit.headers["x-ratelimit-remaining-tokens"]) > 100000 - 300
        assert int(after.headers["x-ratelimit-remaining-tokens"]) > 100000 - 300


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(alice=", rpm: 0", feature="{default: {rmp: 3}}"), "gw.yaml")
    text = str(info.value)
    assert "auth.keys[0].rpm" in text
    assert "features.rate_limit.default.rmp" in text and "did you mean 'rpm'" in text


# --- concurrency (stage level, so the test controls when requests finish) -----------------------------------


async def test_max_concurrent_bounds_requests_in_flight_and_releases_them() -> None:
    store = MemoryStore()
    stage = RateLimitStage(RateLimitConfig(), {"id-alice": Limits(max_concurrent=1, rpm=100)}, store)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(call: Call) -> Response:
        entered.set()
        await release.wait()
        return Response(chat_body(call.body, "m", MockOptions(), "id"))

    async def past_the_limit(call: Call) -> Response:
        raise AssertionError("a second request was admitted while the first held the only slot")

    # Every wait is bounded: a limiter that stops refusing (or never frees the slot) fails here, not hangs.
    with anyio.fail_after(30):
        first_call = make_call(chat())
        first = asyncio.create_task(stage.handle(first_call, slow))
        await entered.wait()  # the first request holds the slot
        with pytest.raises(GatewayError) as info:
            await stage.handle(make_call(chat()), past_the_limit)
        assert info.value.status == 429 and "concurrent" in info.value.message
        assert info.value.headers["retry-after"] == "1"
        assert info.value.headers["x-ratelimit-limit-requests"] == "100"
        release.set()
        await first
        # The slot is free again, and the refused request's RPM charge was given back.
        third_call = make_call(chat())
        assert isinstance(await stage.handle(third_call, slow), Response)
    assert first_call.response_headers["x-ratelimit-remaining-requests"] == "99"
    assert third_call.response_headers["x-ratelimit-remaining-requests"] == "98"


async def test_a_stream_holds_its_slot_until_it_ends_or_is_abandoned() -> None:
    store = MemoryStore()
    stage = RateLimitStage(RateLimitConfig(), {"id-alice": Limits(max_concurrent=1)}, store)

    async def streaming(call: Call) -> Stream:
        return Stream.from_chunks(chat_chunks(call.body, "m", MockOptions(chunk_size=1), "id"))

    stream = await stage.handle(make_call(chat("abc", stream=True)), streaming)
    assert isinstance(stream, Stream)
    with pytest.raises(GatewayError):
        await stage.handle(make_call(chat()), streaming)
    iterator = aiter(stream)
    await anext(iterator)
    await stream.aclose()  # the client went away
    again = await stage.handle(make_call(chat("abc", stream=True)), streaming)
    assert isinstance(again, Stream)
    assert [c async for c in again][-1]["usage"]["total_tokens"] > 0
    assert isinstance(await stage.handle(make_call(chat()), streaming), Stream)


# --- replicas sharing Redis ------------------------------------------------------------------------------


async def test_two_replicas_sharing_redis_admit_the_limit_once(redis_url: str) -> None:
    # A key of its own per run: the session's Redis may still hold the limits of earlier runs.
    key = f"sk-rl-replica-{id(object()):x}"
    text = config_text(extra=f"state: {{redis_url: '{redis_url}'}}").replace(
        "    - {name: carol", f"    - {{name: replicas, key: {key}, rpm: 10}}\n    - {{name: carol"
    )
    config = parse_config(text, "t.yaml")
    async with serve(config) as one, serve(config) as two:
        replies = await asyncio.gather(
            *((one if i % 2 else two).post(URL, json=chat(f"r{i}"), headers=auth(key)) for i in range(30))
        )
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(ok) == 10 and len(refused) == 20
    for reply in refused:
        assert_429(reply)
    assert {r.headers["x-ratelimit-limit-requests"] for r in replies} == {"10"}


async def test_redis_outage_fails_open_or_closed() -> None:
    for policy, status in (("fail_open", 200), ("fail_closed", 503)):
        with RedisServer() as server:
            state = f"state: {{redis_url: '{server.url}', on_error: {policy}, timeout_seconds: 0.5}}"
            async with gateway(alice=", rpm: 1", extra=state) as client:
                assert (await client.post(URL, json=chat(policy), headers=auth())).status_code == 200
                server.stop()
                replies = [await client.post(URL, json=chat(policy), headers=auth()) for _ in range(3)]
                assert {r.status_code for r in replies} == {status}
                if status == 503:
                    assert replies[0].json()["error"]["code"] == "state_store_unavailable"
                # Readiness: a fail-closed replica leaves the rotation, a fail-open one stays in it.
                ready = await client.get("/ready")
                assert ready.status_code == status
                assert ready.json()["state"] == {"backend": "redis", "reachable": False}


def test_the_feature_catalog_reports_whether_rate_limiting_is_on() -> None:
    from gateway.catalog import features_report

    def on(text: str) -> bool:
        return features_report(parse_config(text, "t.yaml"))["rate-limiting"]["enabled"]

    assert on(config_text())  # features.rate_limit is set
    assert on(config_text(alice=", rpm: 5").replace("  rate_limit: {}", "  {}"))
    assert not on(config_text().replace("  rate_limit: {}", "  {}"))


def test_model_limits_must_name_a_configured_model() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(feature="{models: {ohter: {rpm: 1}}}"), "gw.yaml")
    assert "features.rate_limit.models.ohter: unknown model 'ohter', did you mean 'other'?" in str(info.value)


async def test_a_cancelled_request_gives_its_slot_back(redis_url: str) -> None:
    import uuid

    import anyio

    from gateway.stores import RedisStore

    # Redis, because releasing then really awaits the network (the memory backend never suspends).
    store = RedisStore(redis_url)
    key = f"id-{uuid.uuid4().hex}"
    stage = RateLimitStage(RateLimitConfig(), {key: Limits(max_concurrent=1)}, store)
    started = anyio.Event()

    async def hang(call: Call) -> Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    # A cancelled anyio scope cancels every later await in it too; the release must still happen.
    async with anyio.create_task_group() as group:
        group.start_soon(stage.handle, make_call(chat(), key[3:]), hang)
        await started.wait()
        group.cancel_scope.cancel()

    async def answer(call: Call) -> Response:
        return Response(chat_body(call.body, "m", MockOptions(), "id"))

    assert isinstance(await stage.handle(make_call(chat(), key[3:]), answer), Response)
    await store.close()


def test_several_workers_without_redis_get_a_warning(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from gateway.cli import CONFIG_ENV, main

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    # `run` configures process-wide logging, which would hide later tests' log records from caplog.
    monkeypatch.setattr("gateway.logging.configure_logging", lambda level: None)
    monkeypatch.delenv(CONFIG_ENV, raising=False)  # `run --workers` sets it; restored after the test
    path = tmp_path / "gw.yaml"
    path.write_text(config_text(alice=", rpm: 5"))
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "set state.redis_url to share them" in result.output
    path.write_text(config_text(alice=", rpm: 5", extra="state: {redis_url: 'redis://127.0.0.1:1/0'}"))
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--workers", "2"])
    assert "state.redis_url" not in result.output
