"""The ``azure`` provider against a fake Azure OpenAI resource (httpx.MockTransport), on recorded payloads."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_testing import KEY, auth, chat, serve, sse_chunks, tokens

from gateway.config import ConfigError, GatewayConfig, parse_config

pytestmark = pytest.mark.anyio

AZURE_KEY = "azure-key-0123456789abcdef"

COMPLETION = {
    "id": "chatcmpl-A1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from Azure."},
            "finish_reason": "stop",
            "content_filter_results": {},
        }
    ],
    "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
}


def _chunk(delta: dict[str, object] | None, finish: str | None = None, **extra: object) -> dict[str, object]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": choices, **extra}


# Azure sends a first chunk with only prompt_filter_results (no choices) before the OpenAI chunks.
STREAM = [
    {"id": "", "object": "", "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]},
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hi!"}),
    _chunk({}, "stop"),
    _chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}),
]

CONTENT_FILTER = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
        "policy.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation"},
    }
}


class FakeAzure:
    """An Azure OpenAI resource with deployments ``gpt4o`` and ``embedder``; records requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("api-key") != AZURE_KEY:
            return httpx.Response(401, json={"error": {"code": "401", "message": "Access denied."}})
        body = json.loads(request.content)
        if "forbidden" in json.dumps(body.get("messages")):
            return httpx.Response(400, json=CONTENT_FILTER)
        if request.url.path == "/openai/deployments/busy/chat/completions":
            return httpx.Response(
                429, json={"error": {"code": "429", "message": "Slow down."}}, headers={"retry-after": "3"}
            )
        if request.url.path.endswith("/embeddings"):
            data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": data,
                    "model": "ada",
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                },
            )
        if body.get("stream"):
            content = (
                b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in STREAM) + b"data: [DONE]\n\n"
            )
            return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=COMPLETION)


def azure_config(
    options: str = "{}", base_url: str = "base_url: https://res.openai.azure.com"
) -> GatewayConfig:
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - name: az
    type: azure
    {base_url}
    api_key: {AZURE_KEY}
    options: {options}
models:
  - {{name: gpt, routes: [{{provider: az, model: gpt4o}}]}}
  - {{name: busy, routes: [{{provider: az, model: busy}}]}}
  - {{name: embed, routes: [{{provider: az, model: embedder}}]}}
usage: {{database: ":memory:"}}
"""
    )


async def test_chat_goes_to_the_deployment_with_api_key_and_version() -> None:
    fake = FakeAzure()
    async with serve(
        azure_config("{api_version: 2024-06-01, headers: {x-ms-client: gw}}"),
        transport=httpx.MockTransport(fake),
    ) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=chat("hi", model="gpt"))
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from Azure."
    assert tokens(reply.json()["usage"]) == COMPLETION["usage"]
    request = fake.requests[-1]
    assert (
        str(request.url)
        == "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01"
    )
    assert request.headers["api-key"] == AZURE_KEY and "authorization" not in request.headers
    assert request.headers["x-ms-client"] == "gw"
    assert json.loads(request.content)["messages"] == [{"role": "user", "content": "hi"}]


async def test_stream_skips_filter_only_chunks_and_keeps_usage() -> None:
    fake = FakeAzure()
    async with serve(azure_config(), transport=httpx.MockTransport(fake)) as client:
        body = chat("hi", model="gpt", stream=True, stream_options={"include_usage": True})
        reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
    sent = json.loads(fake.requests[-1].content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "api-version=2024-10-21" in str(fake.requests[-1].url)  # the default version
    chunks = sse_chunks(reply.text)
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] or c.get("usage") for c in chunks[:-1])  # the filter-only chunk is gone
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]) == "Hi!"
    assert tokens(chunks[-2]["usage"]) == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}


async def test_content_filter_is_a_400_content_filter_on_both_routes() -> None:
    fake = FakeAzure()
    async with serve(azure_config(), transport=httpx.MockTransport(fake)) as client:
        openai = await client.post(
            "/v1/chat/completions", headers=auth(), json=chat("forbidden", model="gpt")
        )
        anthropic = await client.post(
            "/v1/messages",
            headers={"x-api-key": KEY},
            json={"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "forbidden"}]},
        )
    assert openai.status_code == 400
    assert openai.json()["error"]["code"] == "content_filter"
    assert "content management policy" in openai.json()["error"]["message"]
    assert len(fake.requests) == 2  # one each: a 400 is not retried
    assert anthropic.status_code == 400 and anthropic.json()["error"]["type"] == "invalid_request_error"


async def test_rate_limit_and_embeddings() -> None:
    fake = FakeAzure()
    async with serve(azure_config(), transport=httpx.MockTransport(fake)) as client:
        limited = await client.post("/v1/chat/completions", headers=auth(), json=chat("x", model="busy"))
        embedded = await client.post("/v1/embeddings", headers=auth(), json={"model": "embed", "input": "x"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert embedded.status_code == 200 and embedded.json()["data"][0]["embedding"] == [0.1, 0.2]
    assert fake.requests[-1].url.path == "/openai/deployments/embedder/embeddings"


async def test_anthropic_clients_reach_azure_deployments() -> None:
    fake = FakeAzure()
    async with serve(azure_config(), transport=httpx.MockTransport(fake)) as client:
        reply = await client.post(
            "/v1/messages",
            headers={"x-api-key": KEY},
            json={"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        )
    assert reply.json()["content"] == [{"type": "text", "text": "Hello from Azure."}]
    assert json.loads(fake.requests[-1].content)["max_tokens"] == 10


@pytest.mark.parametrize(
    ("options", "base_url", "expected"),
    [
        ("{}", "", "base_url: is required for an azure provider"),
        ("{apiversion: x}", "base_url: https://res.openai.azure.com", "unknown option 'apiversion'"),
    ],
)
def test_config_problems(options: str, base_url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        azure_config(options, base_url)
    assert expected in str(caught.value)
