"""Acceptance: additional-api-formats. An Anthropic-SDK-shaped client talks to ``POST /v1/messages``, and
aliases routed to Anthropic, Azure OpenAI and Cohere upstreams answer OpenAI clients.

Black-box HTTP only: Anthropic's headers (``x-api-key``, ``anthropic-version``), its request shape
(``system``, content blocks, required ``max_tokens``, ``stop_sequences``, tools), its answer shape, its SSE
event sequence and its error envelope, on the gateway's own keys and models.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_anthropic import THINKING, FakeAnthropic
from fake_anthropic import UPSTREAM_KEY as FAKE_ANTHROPIC_KEY
from fake_anthropic import events as fake_events
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config, parse_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

pytestmark = pytest.mark.feature("additional-api-formats")

VERSION = {"anthropic-version": "2023-06-01"}


def _headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, **VERSION}


def _prompt() -> str:
    return f"anthropic format {uuid.uuid4().hex[:12]}"


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        out.append((fields["event"], json.loads(fields["data"])))
    return out


@pytest.mark.feature("additional-api-formats", step=(6, 8))
def test_messages_answers_in_anthropic_format(gateway: Any) -> None:
    prompt = _prompt()
    body = {
        "model": "mock-echo",
        "max_tokens": 256,
        "system": "You are a test.",
        "stop_sequences": ["\n\nHuman:"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    }
    reply = gateway.client.post("/v1/messages", headers=_headers(gateway.key), json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["id"].startswith("msg_")
    assert data["content"] == [{"type": "text", "text": prompt}]
    assert data["stop_reason"] == "end_turn"
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0


@pytest.mark.feature("additional-api-formats", step=(6, 8))
def test_messages_stream_follows_anthropic_event_sequence(gateway: Any) -> None:
    prompt = _prompt()
    body = {
        "model": "mock-echo",
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    reply = gateway.client.post("/v1/messages", headers=_headers(gateway.key), json=body)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = _events(reply.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == prompt
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0


@pytest.mark.feature("additional-api-formats", step=(6, 8))
def test_messages_tool_use(gateway: Any) -> None:
    body = {
        "model": "mock-echo",
        "max_tokens": 256,
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": _prompt()}],
    }
    reply = gateway.client.post("/v1/messages", headers=_headers(gateway.key), json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["stop_reason"] == "tool_use"
    assert data["content"][0]["type"] == "tool_use" and data["content"][0]["name"] == "get_weather"
    tool_id = data["content"][0]["id"]
    follow_up = {
        "model": "mock-echo",
        "max_tokens": 256,
        "messages": [
            body["messages"][0],
            {"role": "assistant", "content": data["content"]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "sunny"}],
            },
        ],
    }
    answer = gateway.client.post("/v1/messages", headers=_headers(gateway.key), json=follow_up)
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"][0]["text"] == "sunny"


@pytest.mark.parametrize(
    ("key", "change", "status", "kind"),
    [
        ("sk-not-a-key", {}, 401, "authentication_error"),
        (None, {"model": "no-such-model-anywhere"}, 404, "not_found_error"),
        (None, {"max_tokens": None}, 400, "invalid_request_error"),
    ],
)
@pytest.mark.feature("additional-api-formats", step=(6, 8))
def test_messages_errors_use_anthropic_envelope(
    gateway: Any, key: str | None, change: dict[str, Any], status: int, kind: str
) -> None:
    body = {
        "model": "mock-echo",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": _prompt()}],
        **change,
    }
    reply = gateway.client.post("/v1/messages", headers=_headers(key or gateway.key), json=body)
    assert reply.status_code == status
    data = reply.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == kind and data["error"]["message"]


@pytest.mark.feature("additional-api-formats", step=(6, 8))
def test_count_tokens(gateway: Any) -> None:
    def count(text: str) -> int:
        body = {"model": "mock-echo", "messages": [{"role": "user", "content": text}]}
        reply = gateway.client.post("/v1/messages/count_tokens", headers=_headers(gateway.key), json=body)
        assert reply.status_code == 200, reply.text
        tokens: int = reply.json()["input_tokens"]
        return tokens

    assert 0 < count(_prompt()) < count(_prompt() * 20)


# Upstream adapters: an alias routed to an Anthropic, Azure OpenAI or Cohere upstream. The Anthropic upstream
# is a second in-process gateway (its /v1/messages speaks Anthropic's wire format); Azure and Cohere are small
# fakes on loopback answering in their recorded formats. These start gateways of their own, so they skip
# against a live gateway.

AZURE_KEY = "azure-acceptance-key-0123456789"
COHERE_KEY = "co-acceptance-key-0123456789"


def _fake_upstream() -> Starlette:
    async def azure(request: Request) -> JSONResponse:
        if request.headers.get("api-key") != AZURE_KEY or "api-version" not in request.query_params:
            return JSONResponse({"error": {"code": "401", "message": "Access denied"}}, status_code=401)
        body = await request.json()
        text = f"azure {request.path_params['deployment']}: {body['messages'][-1]['content']}"
        return JSONResponse(
            {
                "id": "chatcmpl-azure",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "gpt-4o-2024-08-06",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
            }
        )

    async def cohere(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {COHERE_KEY}":
            return JSONResponse({"message": "invalid api token"}, status_code=401)
        body = await request.json()
        text = f"cohere {body['model']}: {body['messages'][-1]['content']}"
        return JSONResponse(
            {
                "id": "cohere-1",
                "finish_reason": "COMPLETE",
                "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
                "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 4}},
            }
        )

    return Starlette(
        routes=[
            Route("/openai/deployments/{deployment}/chat/completions", azure, methods=["POST"]),
            Route("/v2/chat", cohere, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def routed(gateway: Any) -> Iterator[httpx.Client]:
    """A gateway whose aliases route to an Anthropic, an Azure, a Cohere and a native Responses upstream."""
    if gateway.live:
        pytest.skip("starts upstreams and a gateway of its own")
    shared = Path(__file__).with_name("gateway.yaml")
    with ExitStack() as stack:
        anthropic_url = stack.enter_context(run_server(create_app(load_config(shared))))
        fake_url = stack.enter_context(run_server(_fake_upstream()))
        config = {
            "auth": {
                "master_key": "sk-routed-master",
                "keys": [{"name": "k", "key": "sk-routed", "models": "*"}],
            },
            "providers": [
                {
                    "name": "claude",
                    "type": "anthropic",
                    "base_url": anthropic_url,
                    "api_key": "sk-acceptance",
                },
                {"name": "az", "type": "azure", "base_url": fake_url, "api_key": AZURE_KEY},
                {"name": "co", "type": "cohere", "base_url": fake_url, "api_key": COHERE_KEY},
                # The second gateway's /v1/responses as a native Responses upstream.
                {
                    "name": "responses",
                    "type": "openai",
                    "base_url": f"{anthropic_url}/v1",
                    "api_key": "sk-acceptance",
                    "options": {"responses": "native"},
                },
            ],
            "models": [
                {"name": "via-anthropic", "routes": [{"provider": "claude", "model": "mock-echo"}]},
                {"name": "via-azure", "routes": [{"provider": "az", "model": "my-deployment"}]},
                {"name": "via-cohere", "routes": [{"provider": "co", "model": "command-r"}]},
                {"name": "via-responses", "routes": [{"provider": "responses", "model": "mock-echo"}]},
                {
                    "name": "anthropic-or-azure",
                    "routes": [
                        {"provider": "claude", "model": "mock-echo"},
                        {"provider": "az", "model": "my-deployment"},
                    ],
                },
            ],
            "usage": {"database": ":memory:"},
        }
        url = stack.enter_context(run_server(create_app(parse_config(json.dumps(config)))))
        yield stack.enter_context(
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer sk-routed"})
        )


def _ask(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.feature("additional-api-formats", step=2)
def test_an_alias_routed_to_an_anthropic_upstream_answers_in_openai_format(routed: Any) -> None:
    prompt = _prompt()
    reply = routed.post("/v1/chat/completions", json=_ask("via-anthropic", prompt, max_tokens=200))
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == prompt  # the echo, through Anthropic's format
    assert reply.json()["usage"]["prompt_tokens"] > 0
    assert reply.headers["x-gateway-route"] == "claude/mock-echo"
    stream = routed.post(
        "/v1/chat/completions", json=_ask("via-anthropic", prompt, max_tokens=200, stream=True)
    )
    assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
    chunks = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == prompt


@pytest.mark.feature("additional-api-formats", step=3)
def test_an_alias_routed_to_an_azure_deployment(routed: Any) -> None:
    reply = routed.post("/v1/chat/completions", json=_ask("via-azure", "hello"))
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "azure my-deployment: hello"
    assert reply.headers["x-gateway-route"] == "az/my-deployment"


@pytest.mark.feature("additional-api-formats", step=4)
def test_an_alias_routed_to_cohere_v2(routed: Any) -> None:
    reply = routed.post("/v1/chat/completions", json=_ask("via-cohere", "hello"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "cohere command-r: hello"
    assert body["choices"][0]["finish_reason"] == "stop"  # COMPLETE, mapped
    assert body["usage"]["completion_tokens"] == 4


@pytest.mark.feature("additional-api-formats", step=10)
def test_legacy_completions_answer_as_text_completions(gateway: Any) -> None:
    prompt = _prompt()
    body = {"model": "mock-echo", "prompt": prompt, "max_tokens": 64}
    reply = gateway.client.post("/v1/completions", headers=gateway.headers(), json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["object"] == "text_completion"
    assert prompt in answer["choices"][0]["text"]
    assert answer["usage"]["prompt_tokens"] > 0

    streamed = gateway.client.post(
        "/v1/completions", headers=gateway.headers(), json={**body, "stream": True}
    )
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert prompt in "".join(c["choices"][0]["text"] for c in chunks if c["choices"])

    refused = gateway.client.post("/v1/completions", headers=gateway.headers(), json={**body, "echo": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "echo"


@pytest.mark.feature("additional-api-formats", step=10)
def test_embeddings_in_base64_are_the_float_vector(gateway: Any) -> None:
    body = {"model": "mock-embed", "input": "the same text", "dimensions": 8}
    floats = gateway.client.post("/v1/embeddings", headers=gateway.headers(), json=body)
    encoded = gateway.client.post(
        "/v1/embeddings", headers=gateway.headers(), json={**body, "encoding_format": "base64"}
    )
    assert floats.status_code == encoded.status_code == 200, encoded.text
    vector = floats.json()["data"][0]["embedding"]
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert len(vector) == len(decoded) == 8
    assert decoded == pytest.approx(vector, rel=1e-6)
    assert encoded.json()["model"]


OTHER_RESPONSES_KEY = "sk-acceptance-responses-other"


def _response_events(text: str) -> list[dict[str, Any]]:
    events = []
    for kind, data in _events(text):
        assert kind == data["type"]
        events.append(data)
    return events


@pytest.mark.feature("additional-api-formats", step=11)
def test_responses_api_answers_streams_and_continues_a_stored_conversation(gateway: Any) -> None:
    prompt = _prompt()
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }
    body = {"model": "mock-echo", "input": prompt, "instructions": "Answer briefly.", "tools": [tool]}
    reply = gateway.client.post("/v1/responses", headers=gateway.headers(), json=body)
    assert reply.status_code == 200, reply.text
    first = reply.json()
    assert first["object"] == "response" and first["status"] == "completed"
    assert first["output"][0]["type"] == "message"
    assert first["output"][0]["content"][0] == {
        "type": "output_text",
        "text": prompt,
        "annotations": [],
        "logprobs": [],
    }
    usage = first["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0

    forced = {**body, "tool_choice": "required", "previous_response_id": first["id"], "input": "look it up"}
    called = gateway.client.post("/v1/responses", headers=gateway.headers(), json=forced).json()
    (call,) = called["output"]
    assert call["type"] == "function_call" and isinstance(json.loads(call["arguments"])["q"], str)
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": f"found {prompt}"}
    follow = {"model": "mock-echo", "previous_response_id": called["id"], "input": [output]}
    answered = gateway.client.post("/v1/responses", headers=gateway.headers(), json=follow).json()
    assert answered["output"][0]["content"][0]["text"] == f"found {prompt}"
    # Three turns of history reached the model: more input tokens than the first turn alone.
    assert answered["usage"]["input_tokens"] > first["usage"]["input_tokens"]

    streamed = gateway.client.post("/v1/responses", headers=gateway.headers(), json={**body, "stream": True})
    events = _response_events(streamed.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == prompt

    refused = gateway.client.post(
        "/v1/responses", headers=gateway.headers(), json={**body, "tools": [{"type": "web_search"}]}
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools[0].type"


@pytest.mark.feature("additional-api-formats", step=11)
def test_stored_responses_belong_to_their_key(gateway: Any) -> None:
    created = gateway.client.post(
        "/v1/responses", headers=gateway.headers(), json={"model": "mock-echo", "input": _prompt()}
    ).json()
    path = f"/v1/responses/{created['id']}"
    assert gateway.client.get(path, headers=gateway.headers()).json() == created
    if not gateway.live:  # the second key is in the in-process config only
        other = gateway.headers(OTHER_RESPONSES_KEY)
        assert gateway.client.get(path, headers=other).status_code == 404
        assert gateway.client.delete(path, headers=other).status_code == 404
        follow = {"model": "mock-echo", "input": "x", "previous_response_id": created["id"]}
        assert gateway.client.post("/v1/responses", headers=other, json=follow).status_code == 404
    deleted = gateway.client.delete(path, headers=gateway.headers())
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert gateway.client.get(path, headers=gateway.headers()).status_code == 404
    unstored = gateway.client.post(
        "/v1/responses",
        headers=gateway.headers(),
        json={"model": "mock-echo", "input": _prompt(), "store": False},
    ).json()
    assert gateway.client.get(f"/v1/responses/{unstored['id']}", headers=gateway.headers()).status_code == 404


@pytest.mark.feature("additional-api-formats", step=11)
def test_an_alias_routed_natively_to_a_responses_upstream(routed: Any) -> None:
    prompt = _prompt()
    first = routed.post("/v1/responses", json={"model": "via-responses", "input": prompt})
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["id"].startswith("resp_")
    assert routed.get(f"/v1/responses/{answer['id']}").json() == answer  # stored by the first gateway
    assert answer["output"][0]["content"][0]["text"] == prompt
    assert first.headers["x-gateway-route"] == "responses/mock-echo"
    follow = {
        "model": "via-responses",
        "input": "again",
        "previous_response_id": answer["id"],
        "stream": True,
    }
    streamed = routed.post("/v1/responses", json=follow)
    events = _response_events(streamed.text)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["previous_response_id"] == answer["id"]
    assert events[-1]["response"]["usage"]["input_tokens"] > answer["usage"]["input_tokens"]


@pytest.mark.feature("additional-api-formats", step=1)
def test_the_router_sends_a_parameter_only_to_routes_that_honour_it(routed: Any) -> None:
    # seed has no Anthropic equivalent: of a 50/50 Anthropic/Azure alias, only Azure may serve it.
    for _ in range(4):
        reply = routed.post("/v1/chat/completions", json=_ask("anthropic-or-azure", "hi", seed=3))
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gateway-route"] == "az/my-deployment"
    refused = routed.post("/v1/chat/completions", json=_ask("via-anthropic", "hi", seed=3))
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unsupported_parameter"
    assert refused.json()["error"]["param"] == "seed"


@pytest.mark.feature("additional-api-formats", step=5)
def test_unsupported_parameters_are_refused_or_dropped_and_reported(routed: Any) -> None:
    cases = [("via-anthropic", {"n": 2}, "n"), ("via-cohere", {"logprobs": True}, "logprobs")]
    for model, extra, name in cases:
        refused = routed.post("/v1/chat/completions", json=_ask(model, "hi", **extra))
        assert refused.status_code == 400 and refused.json()["error"]["param"] == name, refused.text
        dropped = routed.post(
            "/v1/chat/completions",
            json=_ask(model, "hi", **extra),
            headers={"x-gateway-drop-params": "true"},
        )
        assert dropped.status_code == 200, dropped.text
        assert dropped.headers["x-gateway-dropped-params"] == name
    honoured = routed.post("/v1/chat/completions", json=_ask("via-azure", "hi", n=1, seed=3))
    assert honoured.status_code == 200 and "x-gateway-dropped-params" not in honoured.headers


@pytest.fixture(scope="module")
def claude(gateway: Any) -> Iterator[tuple[httpx.Client, Any]]:
    """A gateway whose alias ``claude`` routes to a fake Anthropic upstream that records what it received."""
    if gateway.live:
        pytest.skip("starts an upstream and a gateway of its own")
    fake = FakeAnthropic()
    with ExitStack() as stack:
        upstream = stack.enter_context(run_server(fake.app()))
        config = {
            "auth": {"keys": [{"name": "k", "key": "sk-claude-acceptance"}]},
            "providers": [
                {"name": "claude", "type": "anthropic", "base_url": upstream, "api_key": FAKE_ANTHROPIC_KEY}
            ],
            "models": [{"name": "claude", "routes": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}],
            "usage": {"database": ":memory:"},
        }
        url = stack.enter_context(run_server(create_app(parse_config(json.dumps(config)))))
        client = stack.enter_context(
            httpx.Client(base_url=url, timeout=30, headers={"x-api-key": "sk-claude-acceptance", **VERSION})
        )
        yield client, fake


@pytest.mark.feature("additional-api-formats", step=12)
def test_claude_only_fields_pass_through_unchanged_both_ways(claude: tuple[httpx.Client, Any]) -> None:
    client, fake = claude
    ephemeral = {"type": "ephemeral"}
    body = {
        "model": "claude",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": ephemeral}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [THINKING, {"type": "text", "text": "Hello."}]},
            {"role": "user", "content": [{"type": "text", "text": "Again", "cache_control": ephemeral}]},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 4,
    }  # fmt: skip
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
    reply = client.post("/v1/messages", json=body, headers=beta)
    assert reply.status_code == 200, reply.text
    assert fake.last_body == {**body, "model": "claude-sonnet-4-5"}
    assert fake.last_headers["anthropic-beta"] == beta["anthropic-beta"]
    answer = reply.json()
    assert answer["content"][0] == THINKING  # the signed thinking block, as the upstream sent it
    assert answer["usage"]["cache_read_input_tokens"] == 1000
    assert reply.headers["request-id"] == reply.headers["x-request-id"]
    # 10 input at $3, 1000 cache reads at $0.30, 2000 cache writes at $3.75, 20 output at $15 per 1M tokens.
    assert reply.headers["x-gateway-cost-usd"] == "0.00813"
    streamed = client.post("/v1/messages", json={**body, "stream": True}, headers=beta)
    names = [line[7:] for line in streamed.text.splitlines() if line.startswith("event: ")]
    assert names == [event["type"] for event in fake_events("claude-sonnet-4-5")]  # thinking, ping included


@pytest.mark.feature("additional-api-formats", step=12)
def test_anthropic_clients_get_anthropic_models_and_errors(claude: tuple[httpx.Client, Any]) -> None:
    client, _ = claude
    models = client.get("/v1/models").json()
    assert models["data"][0]["type"] == "model" and models["first_id"] == models["last_id"] == "claude"
    assert models["has_more"] is False
    for method, path in (("GET", "/v1/messages"), ("POST", "/v1/messages/batches")):
        reply = client.request(method, path, json={})
        assert reply.status_code in (404, 405)
        assert reply.json()["type"] == "error" and reply.json()["error"]["message"]


@pytest.mark.feature("additional-api-formats", step=12)
def test_azure_deployment_paths_with_the_api_key_header(gateway: Any) -> None:
    prompt = _prompt()
    reply = gateway.client.post(
        "/openai/deployments/mock-echo/chat/completions",
        params={"api-version": "2024-10-21"},
        headers={"api-key": gateway.key},
        json={"messages": [{"role": "user", "content": prompt}]},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == prompt
    embedded = gateway.client.post(
        "/openai/deployments/mock-embed/embeddings",
        params={"api-version": "2024-10-21"},
        headers={"api-key": gateway.key},
        json={"input": "x", "encoding_format": "base64"},
    )
    raw = base64.b64decode(embedded.json()["data"][0]["embedding"])
    assert len(raw) % 4 == 0 and len(raw) > 0


# Step 7: the shipped mock upstream (gateway mock-upstream) speaks Anthropic and Cohere by path, so an
# `anthropic` and a `cohere` provider can point at it: no key, no fake written here. An `openai` provider on
# the same mock answers the same requests directly, so every translation must give back the same answer.

MOCK_KEYS = {"anthropic": "sk-ant-mock-0123456789", "cohere": "co-mock-0123456789"}


@pytest.fixture(scope="module")
def mocked(gateway: Any) -> Iterator[openai.OpenAI]:
    """The `openai` SDK on a gateway whose aliases route to one MockUpstream in three wire formats."""
    if gateway.live:
        pytest.skip("starts an upstream and a gateway of its own")
    with ExitStack() as stack:
        upstream = stack.enter_context(run_server(MockUpstream(MockOptions(chunk_size=5))))
        config = {
            "auth": {"keys": [{"name": "k", "key": "sk-mocked", "models": "*"}]},
            "providers": [
                {"name": "ant", "type": "anthropic", "base_url": upstream, "api_key": MOCK_KEYS["anthropic"]},
                {"name": "co", "type": "cohere", "base_url": upstream, "api_key": MOCK_KEYS["cohere"]},
                {"name": "oai", "type": "openai", "base_url": f"{upstream}/v1", "api_key": "sk-mock"},
            ],
            "models": [
                {"name": "via-anthropic", "routes": [{"provider": "ant", "model": "claude-mock"}]},
                {"name": "via-cohere", "routes": [{"provider": "co", "model": "command-mock"}]},
                {"name": "cohere-embed", "routes": [{"provider": "co", "model": "embed-mock"}]},
                {"name": "direct", "routes": [{"provider": "oai", "model": "mock-echo"}]},
            ],
            "usage": {"database": ":memory:"},
        }
        url = stack.enter_context(run_server(create_app(parse_config(json.dumps(config)))))
        yield stack.enter_context(openai.OpenAI(base_url=f"{url}/v1", api_key="sk-mocked", max_retries=0))


def _conversation(prompt: str) -> list[Any]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompt}]


@pytest.mark.parametrize(
    ("alias", "route"), [("via-anthropic", "ant/claude-mock"), ("via-cohere", "co/command-mock")]
)
@pytest.mark.feature("additional-api-formats", step=7)
def test_the_mock_upstream_answers_anthropic_and_cohere_providers(
    mocked: openai.OpenAI, alias: str, route: str
) -> None:
    prompt = _prompt()
    direct = mocked.chat.completions.create(model="direct", messages=_conversation(prompt), max_tokens=200)
    raw = mocked.chat.completions.with_raw_response.create(
        model=alias, messages=_conversation(prompt), max_tokens=200
    )
    assert raw.headers["x-gateway-route"] == route
    answer = raw.parse()
    assert answer.choices[0].message.content == prompt
    assert answer.choices[0].finish_reason == "stop"
    # Same counts as the mock answering in its own format: nothing lost or added in either translation.
    assert answer.usage is not None and direct.usage is not None
    assert answer.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    assert answer.usage.completion_tokens == direct.usage.completion_tokens > 0
    cut = mocked.chat.completions.create(model=alias, messages=_conversation(prompt), max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == prompt[:8]


@pytest.mark.parametrize("alias", ["via-anthropic", "via-cohere"])
@pytest.mark.feature("additional-api-formats", step=7)
def test_the_mock_upstream_streams_in_anthropic_and_cohere_formats(mocked: openai.OpenAI, alias: str) -> None:
    prompt = _prompt()
    chunks = list(
        mocked.chat.completions.create(
            model=alias,
            messages=_conversation(prompt),
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == prompt
    assert len(content) > 1  # really streamed, in the mock's 5-character chunks
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    usage = [c.usage for c in chunks if c.usage is not None]
    plain = mocked.chat.completions.create(model=alias, messages=_conversation(prompt), max_tokens=200)
    assert usage and plain.usage is not None
    assert usage[-1].prompt_tokens == plain.usage.prompt_tokens
    assert usage[-1].completion_tokens == plain.usage.completion_tokens


@pytest.mark.parametrize("alias", ["via-anthropic", "via-cohere"])
@pytest.mark.feature("additional-api-formats", step=7)
def test_the_mock_upstream_answers_forced_tool_calls_in_both_formats(
    mocked: openai.OpenAI, alias: str
) -> None:
    tool: Any = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    answer = mocked.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "weather?"}], tools=[tool], tool_choice="required"
    )
    assert answer.choices[0].finish_reason == "tool_calls"
    calls = answer.choices[0].message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)  # type: ignore[union-attr]


@pytest.mark.feature("additional-api-formats", step=7)
def test_the_mock_upstream_embeds_for_a_cohere_provider(mocked: openai.OpenAI) -> None:
    texts = [_prompt(), _prompt()]
    # The SDK asks for base64 by default; the gateway encodes Cohere's float vectors.
    through_cohere = mocked.embeddings.create(model="cohere-embed", input=texts)
    direct = mocked.embeddings.create(model="direct", input=texts, encoding_format="float")
    assert through_cohere.model == "embed-mock"
    vectors = [d.embedding for d in through_cohere.data]
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    expected = [d.embedding for d in direct.data]
    assert vectors == [pytest.approx(v, abs=1e-6) for v in expected]  # float32 on the wire
    shorter = mocked.embeddings.create(model="cohere-embed", input="x", dimensions=4, encoding_format="float")
    assert len(shorter.data[0].embedding) == 4
    assert through_cohere.usage.prompt_tokens == direct.usage.prompt_tokens > 0
