"""Anthropic in, Anthropic upstream: Claude-only fields reach the upstream unchanged and its answer comes back
unchanged, checked with the real ``anthropic`` SDK against the gateway and a fake Anthropic upstream, both on
loopback. Also the Anthropic-path rough edges: ``request-id``, Anthropic-shaped ``/v1/models``, the error
envelope on 404/405, and prompt-cache tokens priced at the cache rates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from fake_anthropic import THINKING, UPSTREAM_KEY, FakeAnthropic, events
from gateway_testing import KEY, run_server

from gateway.app import create_app
from gateway.config import parse_config
from gateway.formats.anthropic_native import lost_fields

UPSTREAM_MODEL = "claude-sonnet-4-20250514"

CLAUDE_ONLY: dict[str, Any] = {
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [THINKING, {"type": "text", "text": "Hello."}]},
        {"role": "user", "content": "Again?"},
    ],
    "tools": [
        {"name": "lookup", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "metadata": {"user_id": "u-1"},
    # This SDK version has no top_k argument any more; clients still send it, as an extra body field.
    "extra_body": {"top_k": 5},
}
"""Everything the canonical request cannot hold, as the SDK sends it."""

BETA = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"


def config(url: str) -> str:
    return f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: claude, type: anthropic, base_url: "{url}", api_key: {UPSTREAM_KEY}}}
  - {{name: mock, type: mock}}
models:
  - {{name: claude, routes: [{{provider: claude, model: {UPSTREAM_MODEL}}}]}}
  - {{name: translated, routes: [{{provider: mock, model: mock-echo}}]}}
  - {{name: failover, routes: [{{provider: claude, model: overloaded}}], fallbacks: [translated]}}
features:
  routing: {{max_attempts: 1}}
  cache: {{enabled: true, mode: all}}
usage: {{database: ":memory:"}}
"""


@pytest.fixture(scope="module")
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture(scope="module")
def gateway_url(fake: FakeAnthropic) -> Iterator[str]:
    with run_server(fake.app()) as upstream, run_server(create_app(parse_config(config(upstream)))) as url:
        yield url


@pytest.fixture
def sdk(gateway_url: str) -> Iterator[anthropic.Anthropic]:
    headers = {"anthropic-beta": BETA}
    with anthropic.Anthropic(base_url=gateway_url, api_key=KEY, max_retries=0, default_headers=headers) as c:
        yield c


def test_claude_only_fields_reach_the_upstream_unchanged(
    sdk: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    raw = sdk.messages.with_raw_response.create(model="claude", max_tokens=2048, **CLAUDE_ONLY)
    reply = raw.parse()
    sent = fake.last_body
    fields = {k: v for k, v in CLAUDE_ONLY.items() if k != "extra_body"}
    assert sent == {"model": UPSTREAM_MODEL, "max_tokens": 2048, **fields, "top_k": 5}
    assert fake.last_headers["anthropic-beta"] == BETA
    assert fake.last_headers["anthropic-version"] == sdk.default_headers["anthropic-version"]  # the client's
    assert fake.last_headers["x-api-key"] == UPSTREAM_KEY  # the gateway's credential, not the client's
    # The upstream's answer as it sent it: its id, its model name, the signed thinking block, cache usage.
    assert reply.id == "msg_fake_01" and reply.model == UPSTREAM_MODEL
    assert reply.content[0].type == "thinking" and reply.content[0].signature == THINKING["signature"]
    assert reply.content[1].type == "text" and reply.content[1].text == "Hello from Claude."
    assert reply.usage.cache_read_input_tokens == 1000 and reply.usage.cache_creation_input_tokens == 2000
    assert "x-gateway-dropped-params" not in raw.headers
    assert raw.headers["x-gateway-cache"] == "BYPASS"  # the cache key could not hold the thinking fields
    # 10 plain input at $3, 1000 cache reads at $0.30, 2000 cache writes at $3.75, 20 output at $15 (per 1M).
    assert raw.headers["x-gateway-cost-usd"] == "0.00813"
    assert reply._request_id == raw.headers["x-request-id"]


def test_stream_events_come_back_unchanged(
    sdk: anthropic.Anthropic, fake: FakeAnthropic, gateway_url: str
) -> None:
    with sdk.messages.stream(model="claude", max_tokens=2048, **CLAUDE_ONLY) as stream:
        final = stream.get_final_message()
    assert fake.last_body["stream"] is True and fake.last_body["thinking"] == CLAUDE_ONLY["thinking"]
    assert final.content[0].type == "thinking" and final.content[0].signature == "sig-1"
    assert final.content[1].type == "text" and final.content[1].text == "Hello stream."
    assert final.usage.cache_read_input_tokens == 1000
    # Byte for byte: each event's name and data line as the upstream wrote them, ping included.
    body = {
        "model": "claude",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    raw = httpx.post(f"{gateway_url}/v1/messages", headers={"x-api-key": KEY}, json=body)
    expected = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events(UPSTREAM_MODEL))
    assert raw.text == expected
    assert raw.headers["request-id"] == raw.headers["x-request-id"]


def test_a_non_anthropic_route_names_what_it_dropped(sdk: anthropic.Anthropic) -> None:
    raw = sdk.messages.with_raw_response.create(model="translated", max_tokens=64, **CLAUDE_ONLY)
    assert raw.parse().content[0].type == "text"
    assert raw.headers["x-gateway-dropped-params"] == "cache_control,thinking,top_k"


def test_failover_to_a_non_anthropic_route_translates_and_reports(sdk: anthropic.Anthropic) -> None:
    raw = sdk.messages.with_raw_response.create(model="failover", max_tokens=64, **CLAUDE_ONLY)
    assert raw.headers["x-gateway-route"] == "mock/mock-echo"
    assert raw.headers["x-gateway-dropped-params"] == "cache_control,thinking,top_k"
    assert raw.parse().content[0].type == "text"


def test_lost_fields_lists_block_level_and_metadata_losses() -> None:
    body = {
        "model": "m",
        "max_tokens": 1,
        "metadata": {"user_id": "u", "tenant": "t"},
        "messages": [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
                ]}],
            },
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xx"}]},
        ],
    }  # fmt: skip
    assert lost_fields(body) == ["cache_control", "metadata", "thinking"]
    assert lost_fields({"model": "m", "max_tokens": 1, "messages": [], "metadata": {"user_id": "u"}}) == []


def test_models_in_anthropic_shape_for_anthropic_clients(sdk: anthropic.Anthropic, gateway_url: str) -> None:
    page = sdk.models.list()
    ids = [model.id for model in page.data]
    assert ids == ["claude", "translated", "failover"]
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    assert page.has_more is False and page.first_id == "claude" and page.last_id == "failover"
    assert sdk.models.retrieve("claude").created_at.year >= 2026
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.models.retrieve("nope")
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    # Without anthropic-version the same path answers OpenAI's shape.
    openai_shape = httpx.get(f"{gateway_url}/v1/models", headers={"authorization": f"Bearer {KEY}"})
    assert openai_shape.json()["object"] == "list"


def test_anthropic_paths_answer_anthropic_errors_with_a_request_id(gateway_url: str) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    for method, path, status, kind in [
        ("GET", "/v1/messages", 405, "invalid_request_error"),
        ("POST", "/v1/messages/batches", 404, "not_found_error"),
        ("POST", "/v1/messages", 400, "invalid_request_error"),
    ]:
        reply = httpx.request(method, gateway_url + path, headers=headers, json={})
        assert reply.status_code == status, (path, reply.text)
        assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == kind
        assert reply.headers["request-id"] == reply.headers["x-request-id"]
