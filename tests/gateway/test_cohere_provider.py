"""The ``cohere`` provider against a fake Cohere v2 API (httpx.MockTransport), on recorded payloads."""

# ruff: noqa: E501  (recorded payloads keep one event or answer per line, as they come over the wire)

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, auth, chat, serve, sse_chunks, tokens

from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.errors import GatewayError
from gateway.providers.cohere import CohereAdapter, chat_to_cohere, cohere_to_chat

pytestmark = pytest.mark.anyio

COHERE_KEY = "co-upstream-secret-0123456789"

ANSWER = {
    "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello from Command."}]},
    "usage": {
        "billed_units": {"input_tokens": 5, "output_tokens": 4},
        "tokens": {"input_tokens": 71, "output_tokens": 4},
    },
}

TOOL_ANSWER = {
    "id": "t1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "tool_plan": "I will look up the weather.",
        "tool_calls": [
            {
                "id": "get_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    "usage": {"billed_units": {"input_tokens": 20, "output_tokens": 10}},
}

# A recorded v2 stream: text, then a tool call, then message-end with usage.
STREAM = [
    {"id": "s1", "type": "message-start", "delta": {"message": {"role": "assistant", "content": []}}},
    {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "lo"}}}},
    {"type": "content-end", "index": 0},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "checking"}}},
    {
        "type": "tool-call-start",
        "index": 0,
        "delta": {"message": {"tool_calls": {"id": "w_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}}},
    },
    {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '{"city":'}}}}},
    {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '"Paris"}'}}}}},
    {"type": "tool-call-end", "index": 0},
    {
        "type": "message-end",
        "delta": {"finish_reason": "TOOL_CALL", "usage": {"billed_units": {"input_tokens": 9, "output_tokens": 6}, "tokens": {"input_tokens": 9, "output_tokens": 6}}},
    },
]  # fmt: skip


class FakeCohere:
    """A Cohere v2 API: records requests, answers by upstream model name."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {COHERE_KEY}":
            return httpx.Response(401, json={"message": "invalid api token"})
        body = json.loads(request.content)
        if request.url.path == "/v2/embed":
            vectors = [[0.5, 0.25] for _ in body["texts"]]
            meta = {"billed_units": {"input_tokens": 3}}
            return httpx.Response(
                200, json={"id": "e1", "embeddings": {"float": vectors}, "texts": body["texts"], "meta": meta}
            )
        if body["model"] == "busy":
            return httpx.Response(429, json={"message": "too many requests"}, headers={"retry-after": "2"})
        if body["model"] == "picky":
            return httpx.Response(400, json={"message": "invalid request: p must be at most 0.99"})
        if body.get("stream"):
            content = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in STREAM)
            return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=TOOL_ANSWER if body.get("tools") else ANSWER)

    def sent(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body


def cohere_config(options: str = "{}") -> GatewayConfig:
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: co, type: cohere, api_key: {COHERE_KEY}, options: {options}}}
models:
  - {{name: command, routes: [{{provider: co, model: command-a-03-2025}}]}}
  - {{name: busy, routes: [{{provider: co, model: busy}}]}}
  - {{name: picky, routes: [{{provider: co, model: picky}}]}}
  - {{name: embed, routes: [{{provider: co, model: embed-v4.0}}]}}
usage: {{database: ":memory:"}}
"""
    )


def test_request_mapping_table() -> None:
    body = {
        "model": "command",
        "messages": [
            {"role": "developer", "content": "Be brief.", "name": "dev"},
            {"role": "user", "content": "Weather?"},
        ],
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": "END",
        "top_p": 0.5,
        "temperature": 0.3,
        "seed": 7,
        "logprobs": True,
        "tools": [
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "b"}},
    }
    assert chat_to_cohere(body, "command-a", True) == {
        "model": "command-a",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        "max_tokens": 20,
        "temperature": 0.3,
        "p": 0.5,
        "seed": 7,
        "stop_sequences": ["END"],
        "tool_choice": "REQUIRED",
        "tools": [{"type": "function", "function": {"name": "b"}}],
        "stream": True,
    }
    assert "tool_choice" not in chat_to_cohere({**body, "tool_choice": "auto"}, "m", False)
    assert chat_to_cohere({**body, "tool_choice": "none"}, "m", False)["tool_choice"] == "NONE"


@pytest.mark.parametrize("vectors", [True, 3, "x", {"a": 1}])
def test_embeddings_that_are_not_a_list_are_a_502(vectors: Any) -> None:
    # Found by the adapter fuzz test: `{"embeddings": {"float": true}}` crashed with a TypeError (a 500).
    with pytest.raises(GatewayError) as caught:
        CohereAdapter().parse_response("embeddings", {"embeddings": {"float": vectors}})
    assert caught.value.status == 502


def test_answer_mapping_prefers_model_tokens_over_billed_units() -> None:
    chat_body = cohere_to_chat(ANSWER, 0)
    assert chat_body["choices"][0]["message"] == {"role": "assistant", "content": "Hello from Command."}
    assert chat_body["choices"][0]["finish_reason"] == "stop"
    assert chat_body["usage"] == {"prompt_tokens": 71, "completion_tokens": 4, "total_tokens": 75}
    tool = cohere_to_chat(TOOL_ANSWER, 0)["choices"][0]
    assert tool["finish_reason"] == "tool_calls" and tool["message"]["content"] is None
    assert tool["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }


async def test_chat_and_tools_through_the_gateway() -> None:
    fake = FakeCohere()
    async with serve(cohere_config(), transport=httpx.MockTransport(fake)) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=chat("hi", model="command"))
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        called = await client.post(
            "/v1/chat/completions",
            headers=auth(),
            json=chat("weather?", model="command", tools=tools, tool_choice="required"),
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from Command."
    assert reply.json()["model"] == "command-a-03-2025"
    assert tokens(reply.json()["usage"]) == {"prompt_tokens": 71, "completion_tokens": 4, "total_tokens": 75}
    assert str(fake.requests[0].url) == "https://api.cohere.com/v2/chat"
    assert called.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert fake.sent()["tool_choice"] == "REQUIRED"


async def test_stream_folds_events_into_chunks() -> None:
    fake = FakeCohere()
    async with serve(cohere_config(), transport=httpx.MockTransport(fake)) as client:
        body = chat("hi", model="command", stream=True, stream_options={"include_usage": True})
        reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
    chunks = sse_chunks(reply.text)[:-1]
    assert (
        chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and chunks[0]["id"] == "s1"
    )
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == "w_1" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city":"Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert tokens(chunks[-1]["usage"]) == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}


async def test_anthropic_clients_reach_cohere_streams() -> None:
    fake = FakeCohere()
    async with serve(cohere_config(), transport=httpx.MockTransport(fake)) as client:
        reply = await client.post(
            "/v1/messages",
            headers={"x-api-key": KEY},
            json={
                "model": "command",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    frames = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert frames[-2]["delta"]["stop_reason"] == "tool_use"
    assert frames[-2]["usage"] == {"input_tokens": 9, "output_tokens": 6}


async def test_embeddings_send_texts_with_input_type() -> None:
    fake = FakeCohere()
    async with serve(
        cohere_config("{input_type: search_query}"), transport=httpx.MockTransport(fake)
    ) as client:
        reply = await client.post(
            "/v1/embeddings", headers=auth(), json={"model": "embed", "input": ["a", "b"]}
        )
        tokens_in = await client.post(
            "/v1/embeddings", headers=auth(), json={"model": "embed", "input": [1, 2, 3]}
        )
    assert reply.status_code == 200, reply.text
    assert [d["embedding"] for d in reply.json()["data"]] == [[0.5, 0.25], [0.5, 0.25]]
    usage = reply.json()["usage"]  # the usage stage may add a cost
    assert (usage["prompt_tokens"], usage["total_tokens"]) == (3, 3)
    assert fake.requests[0].url.path == "/v2/embed"
    assert json.loads(fake.requests[0].content) == {
        "model": "embed-v4.0",
        "texts": ["a", "b"],
        "input_type": "search_query",
        "embedding_types": ["float"],
    }
    assert tokens_in.status_code == 400 and len(fake.requests) == 1


@pytest.mark.parametrize(
    ("model", "status", "fragment"), [("busy", 429, "too many"), ("picky", 400, "p must be")]
)
async def test_errors(model: str, status: int, fragment: str) -> None:
    fake = FakeCohere()
    async with serve(cohere_config(), transport=httpx.MockTransport(fake)) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=chat("x", model=model))
    assert reply.status_code == status and fragment in reply.json()["error"]["message"]
    if status == 429:
        assert reply.headers["retry-after"] == "2"


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        cohere_config("{inputtype: x}")
    assert "inputtype" in str(caught.value)
