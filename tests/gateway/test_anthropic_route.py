"""``POST /v1/messages`` through the real app: translation, the unchanged pipeline, Anthropic's error
envelope, and the real ``anthropic`` SDK against a gateway on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from gateway_testing import KEY, LIMITED_KEY, TEST_CONFIG, run_server, serve

from gateway.app import create_app
from gateway.config import parse_config

pytestmark = pytest.mark.anyio

HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]


def message(content: Any = "hello", model: str = "echo", **extra: Any) -> dict[str, Any]:
    """An Anthropic Messages request body."""
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": content}], **extra}


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an Anthropic SSE body."""
    out = []
    for frame in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_message_answers_in_anthropic_format_through_the_pipeline(client: httpx.AsyncClient) -> None:
    body = message("Bonjour", system="Be brief.", stop_sequences=["END"], temperature=0.2, top_k=5)
    reply = await client.post("/v1/messages", headers=HEADERS, json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["id"] == "msg_" + reply.headers["x-request-id"]
    assert data["content"] == [{"type": "text", "text": "Bonjour"}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    # The mock counts 3 per message plus a token per 4 characters: (3 + 3) + (3 + 2).
    assert data["usage"] == {"input_tokens": 11, "output_tokens": 2}
    assert reply.headers["x-gateway-route"] == "mock/mock-echo-v1"
    assert "x-gateway-cost-usd" in reply.headers


async def test_bearer_token_works_too(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/messages", headers={"authorization": f"Bearer {KEY}"}, json=message())
    assert reply.status_code == 200


async def test_max_tokens_reached_is_max_tokens(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/messages", headers=HEADERS, json={**message("x" * 40), "max_tokens": 2})
    assert reply.json()["stop_reason"] == "max_tokens"
    assert reply.json()["content"][0]["text"] == "x" * 8


async def test_streaming_event_sequence(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/v1/messages", headers=HEADERS, json=message("fixed", model="fixed", stream=True)
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    sequence = events(reply.text)
    names = [name for name, _ in sequence]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    text = "".join(data["delta"]["text"] for name, data in sequence if name == "content_block_delta")
    assert text == "fixed answer"
    assert sequence[-2][1]["usage"] == {"input_tokens": 5, "output_tokens": 3}
    assert sequence[-2][1]["delta"]["stop_reason"] == "end_turn"


async def test_forced_tool_use_plain_and_streamed(client: httpx.AsyncClient) -> None:
    body = message("weather?", tools=TOOLS, tool_choice={"type": "any"})
    data = (await client.post("/v1/messages", headers=HEADERS, json=body)).json()
    assert data["stop_reason"] == "tool_use"
    [block] = data["content"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    streamed = events(
        (await client.post("/v1/messages", headers=HEADERS, json={**body, "stream": True})).text
    )
    start = next(data for name, data in streamed if name == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "get_weather"
    assert streamed[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_tool_results_continue_the_conversation(client: httpx.AsyncClient) -> None:
    body = {
        "model": "echo",
        "max_tokens": 50,
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ],
    }
    reply = await client.post("/v1/messages", headers=HEADERS, json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"] == [{"type": "text", "text": "sunny"}]  # the mock echoes the tool message


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind"),
    [
        ({}, message(), 401, "authentication_error"),
        ({"x-api-key": "sk-wrong"}, message(), 401, "authentication_error"),
        ({"x-api-key": LIMITED_KEY}, message(model="fixed"), 403, "permission_error"),
        (HEADERS, message(model="nope"), 404, "not_found_error"),
        (
            HEADERS,
            {"model": "echo", "messages": [{"role": "user", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (HEADERS, message("x" * 5000), 413, "request_too_large"),
        (HEADERS, message(model="busy"), 429, "rate_limit_error"),
        (HEADERS, message(model="broken"), 503, "overloaded_error"),
    ],
)
async def test_errors_use_the_anthropic_envelope(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], status: int, kind: str
) -> None:
    reply = await client.post("/v1/messages", headers=headers, json=body)
    assert reply.status_code == status
    data = reply.json()
    assert data["type"] == "error" and data["error"]["type"] == kind and data["error"]["message"]
    assert "x-request-id" in reply.headers
    if status == 429:
        assert "retry-after" in reply.headers


async def test_invalid_json_is_an_anthropic_error(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/messages", headers=HEADERS, content=b"{not json")
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"


async def test_cache_applies_to_messages_unchanged() -> None:
    config = parse_config(TEST_CONFIG + "features:\n  cache: {}\n")
    async with serve(config) as client:
        first = await client.post("/v1/messages", headers=HEADERS, json=message("cache me"))
        second = await client.post("/v1/messages", headers=HEADERS, json=message("cache me"))
        # The same canonical request from the OpenAI route is the same cache entry.
        openai = await client.post(
            "/v1/chat/completions",
            headers=HEADERS,
            json={"model": "echo", "max_tokens": 100, "messages": [{"role": "user", "content": "cache me"}]},
        )
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.json()["content"] == first.json()["content"]
    assert openai.headers["x-gateway-cache"] == "HIT"


# --- the real anthropic SDK -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server(create_app(parse_config(TEST_CONFIG))) as url:
        yield url


@pytest.fixture
def sdk(base_url: str) -> Iterator[anthropic.Anthropic]:
    # max_retries=0: the SDK would otherwise retry 429/5xx and hide the first answer.
    with anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0) as client:
        yield client


def test_sdk_create(sdk: anthropic.Anthropic) -> None:
    reply = sdk.messages.create(
        model="echo", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "hello sdk"}]
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "hello sdk"
    assert reply.stop_reason == "end_turn"
    assert reply.usage.output_tokens == 3


def test_sdk_stream(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(
        model="fixed", max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "fixed answer"
    assert final.content[0].type == "text" and final.content[0].text == "fixed answer"
    assert final.usage.input_tokens == 7 and final.usage.output_tokens == 3


def test_sdk_tool_use(sdk: anthropic.Anthropic) -> None:
    reply = sdk.messages.create(
        model="echo",
        max_tokens=64,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather?"}],
    )
    assert reply.stop_reason == "tool_use"
    assert reply.content[0].type == "tool_use" and reply.content[0].name == "get_weather"


def test_sdk_errors(base_url: str, sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The model 'nope' does not exist."},
    }
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model="busy", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with (
        anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong.messages.create(model="echo", max_tokens=5, messages=[{"role": "user", "content": "x"}])


async def test_stream_broken_upstream_ends_with_an_error_event() -> None:
    config = parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers: [{{name: breaks, type: mock, options: {{break_after_chunks: 2, chunk_size: 2}}}}]
models: [{{name: breaking, routes: [{{provider: breaks}}]}}]
usage: {{database: ":memory:"}}
"""
    )
    async with serve(config) as client:
        reply = await client.post(
            "/v1/messages", headers=HEADERS, json=message("abcdefgh", model="breaking", stream=True)
        )
    sequence = events(reply.text)
    assert [name for name, _ in sequence][:3] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    name, data = sequence[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"


async def test_count_tokens_estimates_without_calling_an_upstream(client: httpx.AsyncClient) -> None:
    short = await client.post(
        "/v1/messages/count_tokens", headers=HEADERS, json={"model": "broken", **_count("hi")}
    )
    long = await client.post(
        "/v1/messages/count_tokens", headers=HEADERS, json={"model": "echo", **_count("word " * 200)}
    )
    with_tools = await client.post(
        "/v1/messages/count_tokens", headers=HEADERS, json={"model": "echo", "tools": TOOLS, **_count("hi")}
    )
    assert short.status_code == 200, short.text  # "broken" always fails upstream: no upstream was called
    assert short.json() == {"input_tokens": short.json()["input_tokens"]} and short.json()["input_tokens"] > 0
    assert long.json()["input_tokens"] > short.json()["input_tokens"] + 200
    assert with_tools.json()["input_tokens"] > short.json()["input_tokens"]
    denied = await client.post(
        "/v1/messages/count_tokens",
        headers={"x-api-key": LIMITED_KEY},
        json={"model": "fixed", **_count("x")},
    )
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
    invalid = await client.post(
        "/v1/messages/count_tokens", headers=HEADERS, json={"model": "echo", "messages": []}
    )
    assert invalid.status_code == 400 and invalid.json()["type"] == "error"


def _count(text: str) -> dict[str, Any]:
    return {"system": "Be brief.", "messages": [{"role": "user", "content": text}]}


def test_sdk_count_tokens(sdk: anthropic.Anthropic) -> None:
    counted = sdk.messages.count_tokens(model="echo", messages=[{"role": "user", "content": "count me"}])
    assert counted.input_tokens > 0


async def test_dropped_params_are_named_in_a_header(client: httpx.AsyncClient) -> None:
    body = message("x", top_k=5, thinking={"type": "enabled", "budget_tokens": 1024}, **{"bad\nname": 1})
    reply = await client.post("/v1/messages", headers=HEADERS, json=body)
    assert reply.status_code == 200
    assert reply.headers["x-gateway-dropped-params"] == "thinking,top_k"
    plain = await client.post("/v1/messages", headers=HEADERS, json=message("x", temperature=0.1))
    assert "x-gateway-dropped-params" not in plain.headers
