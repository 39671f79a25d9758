"""The standalone mock upstream (``gateway mock-upstream``) as an ASGI app, in its three wire formats: OpenAI,
Anthropic Messages (driven by the real ``anthropic`` SDK, served on loopback) and Cohere v2 (read back by the
``cohere`` provider's own parser)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import pytest
from gateway_testing import run_server, sse_chunks

from gateway.mock_upstream import MockUpstream
from gateway.providers.cohere import CohereAdapter
from gateway.providers.mock import MockOptions

pytestmark = pytest.mark.anyio


def client(upstream: MockUpstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://up")


async def test_chat_embeddings_and_models() -> None:
    upstream = MockUpstream(MockOptions(reply="fixed"))
    async with client(upstream) as c:
        chat = await c.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "q"}]}
        )
        assert chat.json()["choices"][0]["message"]["content"] == "fixed"
        assert chat.json()["model"] == "m"
        embedded = await c.post("/v1/embeddings", json={"model": "e", "input": "x"})
        assert len(embedded.json()["data"][0]["embedding"]) == 16
        assert [m["id"] for m in (await c.get("/v1/models")).json()["data"]] == ["mock-echo", "mock-embed"]
        assert (await c.get("/health")).status_code == 200
    assert upstream.stats["requests"] == 4


async def test_stream_usage_only_when_asked() -> None:
    async with client(MockUpstream(MockOptions(chunk_size=2))) as c:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "abcd"}]}
        plain = sse_chunks((await c.post("/v1/chat/completions", json=body)).text)
        assert plain[-1] == "[DONE]" and all(chunk["choices"] for chunk in plain[:-1])
        body["stream_options"] = {"include_usage": True}
        with_usage = sse_chunks((await c.post("/v1/chat/completions", json=body)).text)
        assert with_usage[-2]["usage"]["completion_tokens"] == 1


async def test_errors() -> None:
    async with client(MockUpstream(MockOptions(fail_rate=1.0, fail_status=500))) as c:
        failed = await c.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "upstream_error"
        assert (await c.post("/v1/chat/completions", content=b"nope")).status_code == 400
        assert (await c.get("/v2/anything")).status_code == 404


@contextmanager
def anthropic_client(upstream: MockUpstream) -> Iterator[anthropic.Anthropic]:
    """The Anthropic SDK talking to ``upstream`` served on loopback (the SDK takes no ASGI transport)."""
    with (
        run_server(upstream) as url,
        anthropic.Anthropic(api_key="sk-any", base_url=url, max_retries=0) as sdk,
    ):
        yield sdk


def test_anthropic_messages_with_the_anthropic_sdk() -> None:
    with anthropic_client(MockUpstream()) as sdk:
        message = sdk.messages.create(
            model="claude-mock",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": [{"type": "text", "text": "echo me"}]}],
        )
        counted = sdk.messages.count_tokens(
            model="claude-mock", system="Be brief.", messages=[{"role": "user", "content": "echo me"}]
        )
    assert message.model == "claude-mock" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo me" and message.stop_reason == "end_turn"  # type: ignore[union-attr]
    # The mock's count (3 per message plus a token per 4 characters), system prompt included.
    assert message.usage.input_tokens == (3 + 3) + (3 + 2) and message.usage.output_tokens == 2
    assert counted.input_tokens == message.usage.input_tokens


def test_anthropic_stream_event_sequence() -> None:
    upstream = MockUpstream(MockOptions(chunk_size=3))
    with (
        anthropic_client(upstream) as sdk,
        sdk.messages.stream(
            model="claude-mock", max_tokens=64, messages=[{"role": "user", "content": "streamed text"}]
        ) as stream,
    ):
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].type == "text" and final.content[0].text == "streamed text"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    assert upstream.stats["streams_finished"] == 1


def test_anthropic_forced_tool_use() -> None:
    tool: Any = {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    with anthropic_client(MockUpstream()) as sdk:
        message = sdk.messages.create(
            model="claude-mock",
            max_tokens=64,
            tools=[tool],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "weather?"}],
        )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert isinstance(block.input, dict) and isinstance(block.input["city"], str)


def test_anthropic_errors_use_anthropic_envelope() -> None:
    with anthropic_client(MockUpstream()) as sdk, pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="m", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    body: Any = bad.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    failing = MockUpstream(MockOptions(fail_rate=1.0, fail_status=429))
    with anthropic_client(failing) as sdk, pytest.raises(anthropic.RateLimitError) as limited:
        sdk.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_cohere_chat_answers_in_cohere_v2_format() -> None:
    async with client(MockUpstream()) as c:
        body = {"model": "command-r", "messages": [{"role": "user", "content": "hello cohere"}], "p": 0.5}
        reply = await c.post("/v2/chat", json=body, headers={"authorization": "Bearer co-any"})
    assert reply.status_code == 200
    data = reply.json()
    assert data["finish_reason"] == "COMPLETE"
    assert data["message"] == {"role": "assistant", "content": [{"type": "text", "text": "hello cohere"}]}
    assert data["usage"]["tokens"] == {"input_tokens": 3 + 3, "output_tokens": 3}


async def test_cohere_stream_is_read_by_the_cohere_provider_parser() -> None:
    async with client(MockUpstream(MockOptions(chunk_size=4))) as c:
        body = {
            "model": "command-r",
            "stream": True,
            "messages": [{"role": "user", "content": "stream cohere"}],
        }
        reply = await c.post("/v2/chat", json=body)
    assert reply.headers["content-type"] == "text/event-stream"
    kinds = [line[7:] for line in reply.text.splitlines() if line.startswith("event: ")]
    assert kinds[:2] == ["message-start", "content-start"] and kinds[-2:] == ["content-end", "message-end"]
    assert kinds.count("content-delta") == 4  # 13 characters in chunks of 4
    parse = CohereAdapter().parse_stream_line
    chunks = [c for c in map(parse, reply.text.splitlines()) if isinstance(c, dict)]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "stream cohere"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_cohere_embed_and_errors() -> None:
    async with client(MockUpstream(MockOptions(embedding_dims=8))) as c:
        body = {"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document"}
        embedded = (await c.post("/v2/embed", json=body)).json()
        assert embedded["response_type"] == "embeddings_by_type" and embedded["texts"] == ["a", "b"]
        vectors = embedded["embeddings"]["float"]
        assert len(vectors) == 2 and len(vectors[0]) == 8 and vectors[0] != vectors[1]
        shorter = await c.post("/v2/embed", json={**body, "output_dimension": 4})
        assert len(shorter.json()["embeddings"]["float"][0]) == 4
        bad = await c.post("/v2/chat", json={"model": "m", "messages": [{"role": "bot", "content": "x"}]})
        assert bad.status_code == 400 and "messages[0].role" in bad.json()["message"]
        assert (await c.post("/v2/embed", content=b"nope")).json() == {"message": "Expected a JSON object."}
    async with client(MockUpstream(MockOptions(fail_rate=1.0, fail_status=503))) as c:
        failed = await c.post("/v2/chat", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert failed.status_code == 503 and "injected" in failed.json()["message"]
