"""Fault injection, upstream side: an upstream that lies about usage or answers garbage.

Each case asserts what the client sees (status, headers, body or in-band stream error) and that the key's
budget and the ledger still agree on sane totals afterwards (:func:`upstream_faults.consistent`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from gateway_testing import serve, sse_chunks
from upstream_faults import (
    ScriptedUpstream,
    alice,
    answer,
    chat,
    chunks,
    config_text,
    consistent,
    sse,
    unique_name,
)

from gateway.config import parse_config

pytestmark = pytest.mark.anyio

# Usage values no upstream should send: negative, absurd, or of the wrong type.
HOSTILE = [-1_000_000, 10**30, "7", 7.5, [7], True, None, {"n": 1}]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """The state store the budgets live in: memory, or the session's real Redis."""
    return None if request.param == "memory" else str(request.getfixturevalue("redis_url"))


@asynccontextmanager
async def _open(
    upstream: ScriptedUpstream, redis_url: str | None = None, *, cache: bool = False, limit_usd: str = "0.01"
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The gateway in front of ``upstream`` and the name of its budgeted key."""
    name = unique_name()
    config = parse_config(config_text(name, redis_url=redis_url, cache=cache, limit_usd=limit_usd))
    async with serve(config, upstream.transport()) as client:
        yield client, name


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
async def test_hostile_prompt_tokens_are_estimated_and_labelled(value: Any, store_url: str | None) -> None:
    upstream = ScriptedUpstream(lambda body: httpx.Response(200, json=answer(
        {"prompt_tokens": value, "completion_tokens": 3, "total_tokens": 3})))  # fmt: skip
    async with _open(upstream, store_url) as (client, name):
        response = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-usage-source"] == "estimated"
        cost = Decimal(response.headers["x-gateway-cost-usd"])
        assert Decimal(0) < cost < Decimal("0.0001")
        usage = response.json()["usage"]
        assert 0 < usage["prompt_tokens"] < 100 and usage["completion_tokens"] >= 0
        assert Decimal(usage["cost_usd"]) == cost
        spent, totals = await consistent(client, name)
        assert spent == cost and totals["estimated"] == 1
        # The budget still works: a normal answer afterwards is admitted and charged.
        upstream.reply = lambda body: httpx.Response(200, json=answer(
            {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}))  # fmt: skip
        again = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert again.status_code == 200 and again.headers["x-gateway-usage-source"] == "reported"
        assert (await consistent(client, name))[0] == cost + Decimal("0.00001")


@pytest.mark.parametrize("field", ["completion_tokens", "total_tokens"])
@pytest.mark.parametrize("value", [-5, 10**30, "7", 2.5, [1]], ids=repr)
async def test_hostile_completion_and_total_tokens_are_estimated(field: str, value: Any) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8, field: value}
    upstream = ScriptedUpstream(lambda body: httpx.Response(200, json=answer(usage)))
    async with _open(upstream) as (client, name):
        response = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-usage-source"] == "estimated"
        assert Decimal(response.headers["x-gateway-cost-usd"]) >= 0
        await consistent(client, name)


async def test_a_negative_usage_cannot_buy_budget() -> None:
    """The attack of the report: -1M prompt tokens used to credit the key $-200 and open the budget wide."""
    upstream = ScriptedUpstream(lambda body: httpx.Response(200, json=answer(
        {"prompt_tokens": -1_000_000, "completion_tokens": 0, "total_tokens": -1_000_000})))  # fmt: skip
    async with _open(upstream, limit_usd="0.0001") as (client, name):
        statuses = [
            (await client.post("/v1/chat/completions", json=chat(), headers=alice())).status_code
            for _ in range(40)
        ]
        # Each estimated answer costs a little, so the tiny budget runs out instead of growing.
        assert statuses[0] == 200 and 429 in statuses
        spent, _ = await consistent(client, name)
        assert spent > 0


@pytest.mark.parametrize("value", [-1_000_000, 10**30, "7", 7.5], ids=repr)
async def test_hostile_usage_in_a_stream_is_estimated(value: Any, store_url: str | None) -> None:
    usage = {"prompt_tokens": value, "completion_tokens": 2, "total_tokens": 2}
    upstream = ScriptedUpstream(lambda body: sse(chunks(usage)))
    async with _open(upstream, store_url) as (client, name):
        body = chat(stream=True, stream_options={"include_usage": True})
        response = await client.post("/v1/chat/completions", json=body, headers=alice())
        assert response.status_code == 200
        events = sse_chunks(response.text)
        assert events[-1] == "[DONE]"
        final = events[-2]["usage"]
        assert 0 < final["prompt_tokens"] < 100 and Decimal(final["cost_usd"]) > 0
        spent, totals = await consistent(client, name)
        assert spent == Decimal(final["cost_usd"]) and totals["estimated"] == 1


async def test_a_wrong_typed_usage_is_not_cached_as_garbage() -> None:
    upstream = ScriptedUpstream(lambda body: httpx.Response(200, json=answer(
        {"prompt_tokens": "7", "completion_tokens": 3, "total_tokens": 10})))  # fmt: skip
    async with _open(upstream, cache=True) as (client, name):
        first = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert first.status_code == 200 and first.headers["x-gateway-cache"] == "MISS"
        second = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert second.status_code == 200 and second.headers["x-gateway-cache"] == "HIT"
        assert second.json()["choices"] == first.json()["choices"]
        usage = second.json()["usage"]
        assert all(isinstance(usage[k], int) and usage[k] >= 0 for k in ("prompt_tokens", "total_tokens"))
        await consistent(client, name)


MALFORMED = {
    "no choices": ({"id": "x", "object": "chat.completion"}, "'choices' is missing"),
    "null choices": (answer(choices=None), "'choices' is null"),
    "string choices": (answer(choices="hello"), "'choices' is str"),
    "empty choices": (answer(choices=[]), "'choices' is empty"),
    "choice not an object": (answer(choices=[1]), "choices[0] is int"),
    "message not an object": (answer(choices=[{"index": 0, "message": "hi"}]), "choices[0].message is str"),
    "no message": (answer(choices=[{"index": 0, "finish_reason": "stop"}]), "choices[0].message is missing"),
    "a list": ([1, 2], "non-object"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=str)
async def test_a_malformed_answer_is_a_502_and_never_cached(case: str) -> None:
    body, message = MALFORMED[case]
    upstream = ScriptedUpstream(lambda _: httpx.Response(200, json=body))
    async with _open(upstream, cache=True) as (client, name):
        for _ in range(2):
            response = await client.post("/v1/chat/completions", json=chat(), headers=alice())
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert message in error["message"] and error["code"] == "upstream_invalid"
            assert response.headers["x-gateway-cache"] == "MISS"
        assert upstream.calls == 2
        spent, totals = await consistent(client, name)
        assert spent == 0 and totals["requests"] == 2


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(
            200, content=b"<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"}
        ),
        httpx.Response(200, content=b"not json at all"),
        httpx.Response(200, content=b'{"choices": [', headers={"content-type": "application/json"}),
    ],
    ids=["html", "text", "truncated json"],
)
async def test_garbage_bodies_are_a_502(reply: httpx.Response) -> None:
    upstream = ScriptedUpstream(lambda _: httpx.Response(reply.status_code, content=reply.content,
                                                         headers=reply.headers))  # fmt: skip
    async with _open(upstream) as (client, name):
        response = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "upstream_error"
        assert (await consistent(client, name))[0] == 0


def _in_band_error(text: str) -> dict[str, Any]:
    events = sse_chunks(text)
    assert "[DONE]" not in events, events
    assert isinstance(events[-1], dict) and "error" in events[-1], events
    return dict(events[-1]["error"])


async def test_an_html_200_to_a_stream_is_an_error_not_an_empty_answer() -> None:
    page = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"
    upstream = ScriptedUpstream(
        lambda _: httpx.Response(200, content=page, headers={"content-type": "text/html"})
    )
    async with _open(upstream) as (client, name):
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=alice())
        assert response.status_code == 502, response.text
        assert "text/html" in response.json()["error"]["message"]
        assert (await consistent(client, name))[0] == 0


async def test_a_stream_that_says_nothing_is_an_error() -> None:
    # Declared as SSE, but no event parses: it used to end as a lone `data: [DONE]`. The router reads the
    # first chunk before answering, so this is still a plain 502.
    upstream = ScriptedUpstream(
        lambda _: httpx.Response(
            200, content=b"<html>oops</html>\n", headers={"content-type": "text/event-stream"}
        )
    )
    async with _open(upstream) as (client, name):
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=alice())
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "upstream_invalid" and "no chunk" in error["message"]
        assert (await consistent(client, name))[0] == 0


BAD_CHUNKS = {
    "choices a string": ({"choices": "hello"}, "'choices' is str"),
    "choices null": ({"choices": None}, "'choices' is null"),
    "choice an int": ({"choices": [1]}, "choices[0] is int"),
    "delta a list": ({"choices": [{"index": 0, "delta": [1]}]}, "choices[0].delta is list"),
    "chunk a list": ([1, 2], "a stream chunk is list"),
}


@pytest.mark.parametrize("case", BAD_CHUNKS, ids=str)
async def test_a_malformed_stream_chunk_is_an_in_band_502(case: str, store_url: str | None) -> None:
    bad, message = BAD_CHUNKS[case]
    good = chunks()[0]
    upstream = ScriptedUpstream(lambda _: sse([good, bad, *chunks()[1:]]))
    async with _open(upstream, store_url, cache=True) as (client, name):
        for _ in range(2):
            response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=alice())
            assert response.status_code == 200
            error = _in_band_error(response.text)
            assert error["type"] == "upstream_error" and error["code"] == "upstream_invalid"
            assert message in error["message"]
        assert upstream.calls == 2  # nothing was cached
        spent, totals = await consistent(client, name)
        # The upstream did generate the first chunk: it is charged (estimated), like any cut-short stream.
        assert totals["requests"] == 2 and totals["errors"] == 2
        assert spent == Decimal(totals["cost_usd"])


async def test_a_truncated_stream_is_an_in_band_error_and_charged_as_estimated() -> None:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield f"data: {json.dumps(chunks()[0])}\n\n".encode()
            raise httpx.ReadError("connection reset")

    upstream = ScriptedUpstream(
        lambda _: httpx.Response(200, stream=Broken(), headers={"content-type": "text/event-stream"})
    )
    async with _open(upstream) as (client, name):
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=alice())
        error = _in_band_error(response.text)
        assert error["code"] == "upstream_stream"
        spent, totals = await consistent(client, name)
        assert totals["estimated"] == 1 and spent > 0


@pytest.mark.parametrize(
    "body",
    [{"object": "list"}, {"object": "list", "data": None}, {"object": "list", "data": [1]}],
    ids=["no data", "null data", "data of ints"],
)
async def test_a_malformed_embeddings_answer_is_a_502(body: dict[str, Any]) -> None:
    upstream = ScriptedUpstream(lambda _: httpx.Response(200, json=body))
    async with _open(upstream) as (client, name):
        response = await client.post(
            "/v1/embeddings", json={"model": "priced", "input": "hello"}, headers=alice()
        )
        assert response.status_code == 502
        message = response.json()["error"]["message"]
        assert "'data'" in message or "data[0]" in message
        await consistent(client, name)


async def test_an_invalid_usage_is_logged_once_per_provider_and_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = ScriptedUpstream(lambda _: httpx.Response(200, json=answer({"prompt_tokens": -1})))
    async with _open(upstream) as (client, _name):
        with caplog.at_level(logging.DEBUG, "gateway.upstream"):
            for _ in range(3):
                response = await client.post("/v1/chat/completions", json=chat(), headers=alice())
                assert response.headers["x-gateway-usage-source"] == "estimated"
    logged = [r for r in caplog.records if "invalid usage" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "usage.prompt_tokens is -1" in logged[0].getMessage()


def test_a_malformed_chunk_over_websocket_is_an_error_frame_and_the_socket_stays_open() -> None:
    from gateway_testing import run_server
    from websockets.sync.client import connect

    from gateway.app import create_app

    name = unique_name()
    good, bad = chunks(), {"choices": "hello"}
    replies = iter([sse([good[0], bad, *good[1:]]), sse(good)])
    upstream = ScriptedUpstream(lambda _: next(replies))
    app = create_app(parse_config(config_text(name)), transport=upstream.transport())
    with run_server(app, ws="auto") as base:
        url = base.replace("http://", "ws://", 1) + "/v1/ws/chat"
        with connect(url, additional_headers=alice(), open_timeout=10) as ws:
            ends = []
            for rid in ("one", "two"):
                ws.send(json.dumps({"type": "chat.request", "id": rid, "body": chat()}))
                while True:
                    frame = json.loads(ws.recv(timeout=10))
                    if frame["type"] in ("chat.done", "chat.error"):
                        ends.append(frame)
                        break
    assert ends[0]["type"] == "chat.error", ends[0]
    assert "'choices' is str" in json.dumps(ends[0])
    assert ends[1]["type"] == "chat.done"
