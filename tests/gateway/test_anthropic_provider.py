"""The ``anthropic`` provider against a fake Anthropic upstream (httpx.MockTransport), and end to end.

The fake answers with recorded Messages API payloads and checks what the gateway sends (path, headers,
body). The last test chains two gateways on loopback: an OpenAI client → gateway A (``anthropic`` provider)
→ gateway B's ``/v1/messages`` → mock, so both translation directions run over real HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, auth, chat, run_server, serve, sse_chunks, tokens

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig, parse_config

pytestmark = pytest.mark.anyio

UPSTREAM_KEY = "sk-ant-upstream-secret"

MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-upstream",
    "content": [{"type": "text", "text": "Bonjour."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 3},
}

STREAM = [
    {
        "type": "message_start",
        "message": {
            **MESSAGE,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 9, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bon"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "jour."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    },
    {"type": "message_stop"},
]

ERRORS: dict[str, tuple[int, str, dict[str, str]]] = {
    "overloaded": (529, "overloaded_error", {}),
    "limited": (429, "rate_limit_error", {"retry-after": "7"}),
    "invalid": (400, "invalid_request_error", {}),
    "denied": (401, "authentication_error", {}),
    "broken": (500, "api_error", {}),
}


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


class FakeAnthropic:
    """A Messages API upstream: records requests, answers by upstream model name."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/v1/messages"
        if request.headers.get("x-api-key") != UPSTREAM_KEY or "anthropic-version" not in request.headers:
            return self.error(401, "authentication_error", {})
        body = json.loads(request.content)
        if body["model"] in ERRORS:
            return self.error(*ERRORS[body["model"]])
        if body.get("stream"):
            return httpx.Response(200, content=_sse(STREAM), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=MESSAGE)

    @staticmethod
    def error(status: int, kind: str, headers: dict[str, str]) -> httpx.Response:
        body = {"type": "error", "error": {"type": kind, "message": f"{kind} happened"}}
        return httpx.Response(status, json=body, headers=headers)

    def sent(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body


def anthropic_config(base_url: str = "https://anthropic.test", options: str = "{}") -> GatewayConfig:
    models = "".join(
        f"\n  - {{name: {name}, routes: [{{provider: claude, model: {name}}}]}}"
        for name in ("claude-upstream", *ERRORS)
    )
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: claude, type: anthropic, base_url: "{base_url}", api_key: {UPSTREAM_KEY}, options: {options}}}
models:
  - {{name: claude, routes: [{{provider: claude, model: claude-upstream}}]}}{models}
usage: {{database: ":memory:"}}
"""
    )


async def test_chat_request_is_translated_and_sent_with_anthropic_headers() -> None:
    fake = FakeAnthropic()
    config = anthropic_config(options='{version: "2023-06-01", beta: [tools-2024], headers: {x-team: a}}')
    async with serve(config, transport=httpx.MockTransport(fake)) as client:
        body = chat("Hello?", model="claude", max_tokens=20, stop="END", temperature=1.5)
        body["messages"].insert(0, {"role": "system", "content": "Be brief."})
        reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["choices"][0]["message"]["content"] == "Bonjour."
    assert data["choices"][0]["finish_reason"] == "stop"
    assert tokens(data["usage"]) == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert reply.headers["x-gateway-route"] == "claude/claude-upstream"
    request = fake.requests[-1]
    assert request.headers["x-api-key"] == UPSTREAM_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["anthropic-beta"] == "tools-2024" and request.headers["x-team"] == "a"
    assert "authorization" not in request.headers
    assert fake.sent() == {
        "model": "claude-upstream",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}],
        "max_tokens": 20,
        "system": "Be brief.",
        "stop_sequences": ["END"],
        "temperature": 1.0,
    }


async def test_base_url_with_v1_and_default_max_tokens() -> None:
    fake = FakeAnthropic()
    async with serve(
        anthropic_config("https://anthropic.test/v1"), transport=httpx.MockTransport(fake)
    ) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=chat("x", model="claude"))
    assert reply.status_code == 200
    assert str(fake.requests[-1].url) == "https://anthropic.test/v1/messages"
    assert fake.sent()["max_tokens"] == 4096


async def test_stream_is_translated_to_canonical_chunks_with_usage() -> None:
    fake = FakeAnthropic()
    async with serve(anthropic_config(), transport=httpx.MockTransport(fake)) as client:
        body = chat("x", model="claude", stream=True, stream_options={"include_usage": True})
        reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
    assert reply.status_code == 200
    assert fake.sent()["stream"] is True
    chunks = sse_chunks(reply.text)
    assert chunks[-1] == "[DONE]"
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"])
        == "Bonjour."
    )
    assert chunks[-3]["choices"][0]["finish_reason"] == "length"
    assert tokens(chunks[-2]["usage"]) == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert {c["id"] for c in chunks[:-1]} == {"msg_01"}


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("overloaded", 503, "upstream_overloaded"),
        ("limited", 429, "rate_limit_exceeded"),
        ("invalid", 400, "invalid_request_error"),
        ("denied", 502, "upstream_auth"),
        ("broken", 502, "upstream_error"),
    ],
)
async def test_upstream_errors_are_mapped(model: str, status: int, code: str) -> None:
    fake = FakeAnthropic()
    async with serve(anthropic_config(), transport=httpx.MockTransport(fake)) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=chat("x", model=model))
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["code"] == code
    assert UPSTREAM_KEY not in reply.text
    if status == 429:
        assert reply.headers["retry-after"] == "7"


async def test_stream_error_event_ends_the_stream_with_an_error() -> None:
    events = [*STREAM[:4], {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})

    async with serve(anthropic_config(), transport=httpx.MockTransport(handler)) as client:
        reply = await client.post(
            "/v1/chat/completions", headers=auth(), json=chat("x", model="claude", stream=True)
        )
    chunks = sse_chunks(reply.text)
    assert chunks[1]["choices"][0]["delta"]["content"] == "Bon"
    assert "Overloaded" in chunks[-1]["error"]["message"]


async def test_embeddings_are_refused() -> None:
    fake = FakeAnthropic()
    async with serve(anthropic_config(), transport=httpx.MockTransport(fake)) as client:
        reply = await client.post("/v1/embeddings", headers=auth(), json={"model": "claude", "input": "x"})
    assert reply.status_code == 400 and "embeddings" in reply.json()["error"]["message"]
    assert fake.requests == []


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        anthropic_config(options="{versoin: x}")
    assert "versoin" in str(caught.value) and "did you mean 'version'" in str(caught.value)


def test_two_gateways_chain_openai_to_anthropic_and_back() -> None:
    """OpenAI client → gateway A (anthropic provider) → gateway B /v1/messages → mock, over loopback."""
    inner = parse_config(
        f"""
auth:
  keys: [{{name: inner, key: {UPSTREAM_KEY}}}]
providers: [{{name: mock, type: mock, options: {{chunk_size: 3}}}}]
models: [{{name: claude-upstream, routes: [{{provider: mock, model: mock-echo}}]}}]
usage: {{database: ":memory:"}}
"""
    )
    with (
        run_server(create_app(inner)) as inner_url,
        run_server(create_app(anthropic_config(inner_url))) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        plain = client.post("/v1/chat/completions", headers=auth(), json=chat("round trip", model="claude"))
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "round trip"
        assert plain.json()["usage"]["completion_tokens"] == 3
        streamed = client.post(
            "/v1/chat/completions",
            headers=auth(),
            json=chat("streamed trip", model="claude", stream=True),
        )
        chunks = sse_chunks(streamed.text)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"])
        assert text == "streamed trip"
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
        forced = client.post(
            "/v1/chat/completions",
            headers=auth(),
            json=chat("x", model="claude", tools=tools, tool_choice="required"),
        )
        message = forced.json()["choices"][0]
        assert message["finish_reason"] == "tool_calls"
        assert message["message"]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_upstream_error_quoting_the_key_is_redacted_on_both_routes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": f"bad key {UPSTREAM_KEY}"},
        }
        return httpx.Response(400, json=body)

    async with serve(anthropic_config(), transport=httpx.MockTransport(handler)) as client:
        openai = await client.post("/v1/chat/completions", headers=auth(), json=chat("x", model="claude"))
        messages = await client.post(
            "/v1/messages",
            headers={"x-api-key": KEY},
            json={"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
    assert openai.status_code == messages.status_code == 400
    assert messages.json()["error"]["type"] == "invalid_request_error"
    for reply in (openai, messages):
        assert UPSTREAM_KEY not in reply.text and "[redacted]" in reply.text
