"""Acceptance: additional-api-formats. An Anthropic-SDK-shaped client talks to ``POST /v1/messages``.

Black-box HTTP only: Anthropic's headers (``x-api-key``, ``anthropic-version``), its request shape
(``system``, content blocks, required ``max_tokens``, ``stop_sequences``, tools), its answer shape, its SSE
event sequence and its error envelope, on the gateway's own keys and models.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

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
