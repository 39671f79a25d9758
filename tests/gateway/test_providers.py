"""Provider adapters: mock answers, openai adapter translation, HTTP against real upstreams."""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any

import anyio
import httpx
import pytest
from gateway_testing import auth, chat, openai_config, run_server, serve, sse_chunks
from pydantic import ValidationError

from gateway.app import create_app
from gateway.config import DEFAULT_CONFIG_NAME, ProviderConfig, parse_config
from gateway.errors import GatewayError
from gateway.mock_upstream import MockUpstream
from gateway.pipeline import Call, KeyIdentity, Response, Stream
from gateway.providers.base import DONE
from gateway.providers.mock import MockOptions, MockProvider, chat_body, chat_chunks, embed, embeddings_body
from gateway.providers.openai import OpenAIAdapter, OpenAIProvider

pytestmark = pytest.mark.anyio


# --- mock ------------------------------------------------------------------------------------------------


def test_mock_chat_body_echoes_and_counts_tokens() -> None:
    body = chat_body(chat("12345678"), "m", MockOptions(), "id1")
    assert body["choices"][0]["message"]["content"] == "12345678"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert body["model"] == "m" and body["id"] == "id1"


def test_mock_reply_and_content_parts() -> None:
    parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "ab"}]}]}
    assert chat_body(parts, "m", MockOptions(), "i")["choices"][0]["message"]["content"] == "ab"
    fixed = chat_body(parts, "m", MockOptions(reply="hello"), "i")
    assert fixed["choices"][0]["message"]["content"] == "hello"


def test_mock_stream_chunks_reassemble_to_the_reply_and_end_with_usage() -> None:
    chunks = chat_chunks(chat("abcdefghij"), "m", MockOptions(chunk_size=3), "id")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "abcdefghij"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_mock_streamed_tool_call() -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    body = chat("x", tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}})
    chunks = chat_chunks(body, "m", MockOptions(), "id")
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["function"]["name"] == "lookup" and first["id"].startswith("call_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_tools_without_forcing_answer_normally() -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    body = chat_body(chat("hi", tools=tools), "m", MockOptions(), "i")
    assert body["choices"][0]["message"]["content"] == "hi"


def test_embeddings_are_deterministic_unit_vectors() -> None:
    assert embed("a", 8) == embed("a", 8)
    assert embed("a", 8) != embed("b", 8)
    assert abs(sum(v * v for v in embed("a", 32)) - 1.0) < 1e-4
    body = embeddings_body({"model": "e", "input": ["a", "bb"], "dimensions": 4}, "e", MockOptions())
    assert [len(d["embedding"]) for d in body["data"]] == [4, 4]
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def _call(body: dict[str, Any], stream: bool = False) -> Call:
    config = parse_config("providers: [{name: m, type: mock}]\nmodels: [{name: x, routes: [{provider: m}]}]")
    return Call(
        request_id="r1",
        key=KeyIdentity(name="k", key_id="0"),
        endpoint="chat",
        model="x",
        model_config=config.models[0],
        body=body,
        headers={},
        stream=stream,
    )


async def test_mock_failure_rate_is_seeded_and_reproducible() -> None:
    import random

    rng = random.Random(7)
    expected = [rng.random() < 0.5 for _ in range(20)]
    provider = MockProvider(ProviderConfig(name="m", type="mock", options={"fail_rate": 0.5, "seed": 7}))
    route = _call({}).model_config.routes[0]
    seen = []
    for _ in range(20):
        try:
            await provider.chat(_call(chat()), route)
            seen.append(False)
        except GatewayError as exc:
            assert exc.status == 503
            seen.append(True)
    assert seen == expected
    assert True in seen and False in seen


async def _let_others_run() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_mock_barrier_holds_answers_until_enough_requests_wait() -> None:
    provider = MockProvider(ProviderConfig(name="m", type="mock", options={"barrier": 2}))
    route = _call({}).model_config.routes[0]
    with anyio.fail_after(30):
        first = asyncio.ensure_future(provider.chat(_call(chat("one")), route))
        await _let_others_run()
        assert not first.done()  # held: the barrier is one request short
        second = await provider.chat(_call(chat("two")), route)  # two waiting: both go on
        first_answer = await first
        held = asyncio.ensure_future(provider.chat(_call(chat("held")), route))
        await _let_others_run()
        held.cancel()  # a client that leaves gives its place back: the barrier needs two new requests
        with pytest.raises(asyncio.CancelledError):
            await held
        third = asyncio.ensure_future(provider.chat(_call(chat("three")), route))
        await _let_others_run()
        assert not third.done()
        fourth = await provider.chat(_call(chat("four")), route)
        answers = [first_answer, second, await third, fourth]
    texts = [a.body["choices"][0]["message"]["content"] for a in answers if isinstance(a, Response)]
    assert texts == ["one", "two", "three", "four"]
    with pytest.raises(ValidationError):
        MockOptions(barrier=1)


async def test_mock_provider_stream_result() -> None:
    provider = MockProvider(
        ProviderConfig(name="m", type="mock", options={"reply": "abcdef", "chunk_size": 2})
    )
    call = _call(chat(), stream=True)
    result = await provider.chat(call, call.model_config.routes[0])
    assert isinstance(result, Stream)
    chunks = [c async for c in result]
    assert len(chunks) == 6 and result.completed
    assert result.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


# --- openai adapter --------------------------------------------------------------------------------------


def test_openai_adapter_replaces_the_model_and_always_asks_for_usage_when_streaming() -> None:
    adapter = OpenAIAdapter()
    body = {"model": "alias", "messages": [], "seed": 3, "stream": True, "stream_options": {"x": 1}}
    request = adapter.build_request("chat", body, "upstream-model", True)
    assert request.path == "/chat/completions"
    assert request.json == {
        **body,
        "model": "upstream-model",
        "stream_options": {"x": 1, "include_usage": True},
    }
    assert body["model"] == "alias"  # the client's body is not mutated
    assert adapter.build_request("embeddings", {"input": "a"}, "e", False).path == "/embeddings"


def test_openai_adapter_parses_sse_lines() -> None:
    adapter = OpenAIAdapter()
    assert adapter.parse_stream_line('data: {"a": 1}') == {"a": 1}
    assert adapter.parse_stream_line("data: [DONE]") is DONE
    assert adapter.parse_stream_line(": keep-alive") is None
    assert adapter.parse_stream_line("event: x") is None
    with pytest.raises(GatewayError):
        adapter.parse_stream_line('data: {"error": {"message": "boom"}}')


@pytest.mark.parametrize(
    ("upstream", "status", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (401, 502, "upstream_error"),
        (403, 502, "upstream_error"),
        (404, 400, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 502, "upstream_error"),
        (503, 503, "upstream_error"),
        (504, 504, "upstream_error"),
    ],
)
def test_openai_error_mapping(upstream: int, status: int, kind: str) -> None:
    data = {"error": {"message": "upstream says no", "type": "x", "code": "c"}}
    error = OpenAIAdapter().map_error(upstream, data, httpx.Headers({"retry-after": "7"}))
    assert (error.status, error.type) == (status, kind)
    if upstream == 429:
        assert error.headers == {"retry-after": "7"}


async def test_openai_provider_sends_credentials_and_passes_unknown_fields_through() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json=chat_body(json.loads(request.content), "mock-echo", MockOptions(), "u1")
        )

    async with serve(openai_config("https://up.test/v1"), transport=httpx.MockTransport(handler)) as client:
        body = chat("hi", seed=1, some_future_field={"a": [1]})
        response = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    assert response.headers["x-gateway-route"] == "up/mock-echo"
    [request] = seen
    assert str(request.url) == "https://up.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-upstream-secret"
    assert request.headers["x-request-id"] == response.headers["x-request-id"]
    sent = json.loads(request.content)
    assert sent["model"] == "mock-echo" and sent["some_future_field"] == {"a": [1]} and sent["seed"] == 1
    assert "sk-upstream-secret" not in response.text


async def test_openai_provider_upstream_errors_never_leak_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "Incorrect API key provided: sk-upst****cret"}})

    async with serve(openai_config("https://up.test/v1"), transport=httpx.MockTransport(handler)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth"
    assert "sk-upst" not in response.text


@pytest.mark.parametrize(
    ("exc", "status"), [(httpx.ConnectError("refused"), 502), (httpx.ReadTimeout("slow"), 504)]
)
async def test_openai_provider_network_failures(exc: Exception, status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with serve(openai_config("https://up.test/v1"), transport=httpx.MockTransport(handler)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == status
    assert response.json()["error"]["type"] == "upstream_error"


async def test_openai_provider_invalid_json_is_502() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"<html>"))
    async with serve(openai_config("https://up.test/v1"), transport=transport) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 502


# --- over loopback: gateway → mock-upstream, gateway → gateway ---------------------------------------------


async def test_openai_provider_against_mock_upstream(mock_upstream: tuple[str, MockUpstream]) -> None:
    url, _ = mock_upstream
    async with serve(openai_config(url)) as client:
        plain = await client.post("/v1/chat/completions", json=chat("over http"), headers=auth())
        assert plain.status_code == 200
        assert plain.json()["choices"][0]["message"]["content"] == "over http"
        assert plain.json()["usage"]["total_tokens"] > 0

        streamed = await client.post(
            "/v1/chat/completions", json=chat("streamed text", stream=True), headers=auth()
        )
        chunks = sse_chunks(streamed.text)
        assert chunks[-1] == "[DONE]"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "streamed text"
        assert not any("usage" in c and not c["choices"] for c in chunks[:-1])  # client did not ask

        body = chat("u", stream=True, stream_options={"include_usage": True})
        with_usage = sse_chunks((await client.post("/v1/chat/completions", json=body, headers=auth())).text)
        assert with_usage[-2]["usage"]["completion_tokens"] == 1

        embedded = await client.post(
            "/v1/embeddings", json={"model": "embed", "input": ["a", "b"]}, headers=auth()
        )
        assert [d["index"] for d in embedded.json()["data"]] == [0, 1]


async def test_a_gateway_in_front_of_a_gateway() -> None:
    # The embedded default config, with the ledger in memory: a test leaves no file in the working directory.
    default = resources.files("gateway").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")
    first = create_app(parse_config(default + '\nusage: {database: ":memory:"}\n', DEFAULT_CONFIG_NAME))
    demo_key = "sk-gateway-demo"  # the embedded default's demo key (the loaded config holds its digest)
    with run_server(first) as url:
        async with serve(openai_config(f"{url}/v1", api_key=demo_key)) as client:
            response = await client.post("/v1/chat/completions", json=chat("relay me"), headers=auth())
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "relay me"
            streamed = await client.post(
                "/v1/chat/completions", json=chat("relay", stream=True), headers=auth()
            )
            assert sse_chunks(streamed.text)[-1] == "[DONE]"


def test_client_disconnect_mid_stream_cancels_the_upstream() -> None:
    upstream = MockUpstream(MockOptions(chunk_size=1, chunk_delay_ms=50))
    with run_server(upstream) as upstream_url:
        gateway = create_app(openai_config(f"{upstream_url}/v1"))
        with run_server(gateway) as url, httpx.Client(base_url=url, timeout=10) as client:
            body = chat("a long answer that streams slowly, one character at a time", stream=True)
            with client.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as response:
                assert response.status_code == 200
                next(response.iter_raw())
            deadline = time.monotonic() + 10
            while upstream.stats["streams_cancelled"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
    assert upstream.stats["streams_started"] == 1
    assert upstream.stats["streams_cancelled"] == 1
    assert upstream.stats["streams_finished"] == 0


def test_mock_response_result_usage_property() -> None:
    assert Response({"usage": {"total_tokens": 3}}).usage == {"total_tokens": 3}
    assert Response({}).usage is None


async def test_openai_provider_defaults_to_the_openai_api_without_credentials() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    provider = OpenAIProvider(ProviderConfig(name="o", type="openai"), transport)
    assert provider.base_url == "https://api.openai.com/v1"
    assert "authorization" not in provider.auth_headers


async def test_openai_provider_sends_json_and_decodes_compressed_answers() -> None:
    import gzip

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.dumps(chat_body(json.loads(request.content), "m", MockOptions(), "u1")).encode()
        return httpx.Response(200, content=gzip.compress(body), headers={"content-encoding": "gzip"})

    async with serve(openai_config("https://up.test/v1"), transport=httpx.MockTransport(handler)) as client:
        response = await client.post("/v1/chat/completions", json=chat("zipped"), headers=auth())
    assert response.json()["choices"][0]["message"]["content"] == "zipped"
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["user-agent"].startswith("llm-gateway/")


async def test_an_upstream_error_mid_stream_ends_the_stream_with_an_error_event() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "par"}}],
    }
    events = (
        b": keep-alive\n\n"
        + b"data: "
        + json.dumps(chunk).encode()
        + b"\n\n"
        + b'data: {"error": {"message": "model overloaded", "type": "server_error"}}\n\n'
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})
    )
    async with serve(openai_config("https://up.test/v1"), transport=transport) as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert response.status_code == 200
    received = sse_chunks(response.text)
    assert received[0]["choices"][0]["delta"]["content"] == "par"
    assert received[-1]["error"]["type"] == "upstream_error"
    assert "model overloaded" in received[-1]["error"]["message"]
    assert "[DONE]" not in received
