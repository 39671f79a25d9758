"""Anthropic Messages ⇄ canonical translations (gateway/formats/anthropic*.py) on recorded payloads.

The ``ANTHROPIC_*`` payloads follow Anthropic's documented wire format (ids and text shortened); the
``CHAT_*`` payloads are canonical OpenAI bodies as the mock and OpenAI return them.
"""

# ruff: noqa: E501  (the recorded stream keeps its events one per line, as they come over the wire)

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError, upstream_error
from gateway.formats.anthropic import (
    FINISH_OF_STOP_REASON,
    STOP_REASON_OF_FINISH,
    chat_to_message,
    chat_to_request,
    error_body,
    message_to_chat,
    request_to_chat,
)
from gateway.formats.anthropic_stream import ChunkTranslator, MessageEvents, sse

ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}],
    "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A",
                    "content": [{"type": "text", "text": "18C"}],
                },
                {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        },
    ],
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "user-42"},
    "stream": True,
}

CHAT_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet",
    "messages": [
        {"role": "system", "content": "You are terse.\nAnswer in English."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And tomorrow?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
    ],
    "max_tokens": 1024,
    "temperature": 0.5,
    "top_p": 0.9,
    "stream": True,
    "stop": ["\n\nHuman:"],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather for a city",
            },
        }
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "user": "user-42",
}

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "...", "signature": "x"},
        {"type": "text", "text": "I'll look that up."},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 12},
}

# A recorded Anthropic stream: text block, then a tool_use block, with ping and usage.
ANTHROPIC_STREAM = """event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\\"Paris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}
"""


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


# --- the /v1/messages route: Anthropic request → canonical ------------------------------------------------


def test_request_to_chat_maps_every_field() -> None:
    assert request_to_chat(ANTHROPIC_REQUEST) == CHAT_REQUEST


def test_request_to_chat_minimal_and_named_tool_choice() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f"},
    }
    chat = request_to_chat(body)
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert "stop" not in chat and "parallel_tool_calls" not in chat


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages[0].content[0].source",
        ),
        ({"stop_sequences": "STOP"}, "stop_sequences"),
        ({"system": 3}, "system"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ],
)
def test_request_to_chat_rejects_invalid_fields_naming_them(change: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(GatewayError) as caught:
        request_to_chat(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_chat_to_message_text_and_tool_calls() -> None:
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }
    assert chat_to_message(body, "msg_x", "alias") == {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "gpt-x",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 10},
    }


@pytest.mark.parametrize(("finish", "stop"), sorted(STOP_REASON_OF_FINISH.items()))
def test_finish_reason_to_stop_reason_table(finish: str, stop: str) -> None:
    body = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}], "usage": {}}
    assert chat_to_message(body, "m", "a")["stop_reason"] == stop


def test_stop_reason_tables_round_trip_the_canonical_reasons() -> None:
    for finish in ("stop", "length", "tool_calls", "content_filter"):
        assert FINISH_OF_STOP_REASON[STOP_REASON_OF_FINISH[finish]] == finish


def test_error_envelope_types_by_status() -> None:
    assert error_body(GatewayError(401, "no")) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "no"},
    }
    types = {
        s: error_body(GatewayError(s, "x"))["error"]["type"] for s in (400, 403, 404, 413, 429, 500, 503, 418)
    }
    assert types == {
        400: "invalid_request_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        503: "overloaded_error",
        418: "invalid_request_error",
    }


# --- the route's stream: canonical chunks → Anthropic events ---------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _translate(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    writer = MessageEvents("msg_1", "alias")
    events = [e for c in chunks for e in writer.feed(c)]
    return events + writer.finish()


def test_message_events_text_stream_sequence() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    events = _translate(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "Hel"}),
            _chunk({"content": "lo"}),
            _chunk({}, "length"),
            {"id": "c", "choices": [], "usage": usage},
        ]
    )
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[0][1]["message"]["id"] == "msg_1" and events[0][1]["message"]["content"] == []
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "lo"}
    assert events[5][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def test_message_events_text_then_two_tool_calls() -> None:
    events = _translate(
        [
            _chunk({"role": "assistant", "content": "Hm."}),
            _chunk(
                {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": ""}}]}
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            _chunk(
                {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}
            ),
            _chunk({}, "tool_calls"),
        ]
    )
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}
    partial = [
        d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1
    ]
    assert "".join(partial) == '{"x":1}'
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_message_events_empty_stream_still_well_formed() -> None:
    assert [name for name, _ in _translate([])] == ["message_start", "message_delta", "message_stop"]


def test_sse_frame() -> None:
    assert (
        sse("message_stop", {"type": "message_stop"})
        == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


# --- the provider: canonical request → Anthropic, Anthropic answers → canonical ---------------------------


def test_chat_to_request_maps_every_field() -> None:
    request = chat_to_request(CHAT_REQUEST, "claude-upstream", True, 4096)
    assert request == {
        "model": "claude-upstream",
        "system": "You are terse.\nAnswer in English.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
                    {"type": "text", "text": "And tomorrow?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                ],
            },
        ],
        "max_tokens": 1024,
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_p": 0.9,
        "metadata": {"user_id": "user-42"},
        "tools": [
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather for a city",
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stream": True,
    }


def test_chat_to_request_defaults_and_lossy_mappings() -> None:
    body = {
        "model": "a",
        "messages": [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}],
            },
        ],
        "stop": "END",
        "temperature": 1.7,
        "max_completion_tokens": 50,
        "frequency_penalty": 0.3,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    }
    request = chat_to_request(body, "up", False, 4096)
    assert request["system"] == "one\n\ntwo"
    assert request["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}}
    ]
    assert request["stop_sequences"] == ["END"]
    assert request["temperature"] == 1.0  # clamped to Anthropic's 0-1
    assert request["max_tokens"] == 50
    assert request["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert request["tool_choice"] == {"type": "tool", "name": "f"}
    assert "frequency_penalty" not in request and "stream" not in request
    assert (
        chat_to_request({"messages": [{"role": "user", "content": "x"}]}, "up", False, 77)["max_tokens"] == 77
    )


def test_chat_to_request_rejects_parts_anthropic_cannot_take() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    with pytest.raises(GatewayError) as caught:
        chat_to_request(body, "up", False, 10)
    assert caught.value.status == 400 and caught.value.param == "messages[0].content[0]"


def test_message_to_chat() -> None:
    assert message_to_chat(ANTHROPIC_MESSAGE, 1700000000) == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll look that up.",
                    "tool_calls": [
                        {
                            "id": "toolu_01B",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 12,
            "total_tokens": 132,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }


def test_usage_round_trips_through_both_directions() -> None:
    message = chat_to_message(message_to_chat(ANTHROPIC_MESSAGE, 0), "m", "a")
    assert message["usage"] == {"input_tokens": 20, "output_tokens": 12, "cache_read_input_tokens": 100}
    assert message["content"][1]["input"] == {"city": "Paris"}


def test_chunk_translator_folds_a_recorded_stream() -> None:
    translator = ChunkTranslator(1700000000)
    chunks = [c for c in (translator.feed(e) for e in _events(ANTHROPIC_STREAM)) if c is not None]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == "msg_1" and chunks[0]["model"] == "claude-sonnet-4-5"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello world"
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city": "Paris"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_chunk_translator_raises_on_error_events() -> None:
    translator = ChunkTranslator(0)
    with pytest.raises(GatewayError) as caught:
        translator.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert caught.value.status == 503 and "Overloaded" in caught.value.message
    with pytest.raises(GatewayError) as other:
        translator.feed({"type": "error", "error": {"type": "api_error", "message": "boom"}})
    assert other.value.status == 502


def test_streams_round_trip_through_both_state_machines() -> None:
    """Anthropic events → canonical chunks → Anthropic events keeps text, tool input and stop reason."""
    translator = ChunkTranslator(0)
    chunks = [c for c in (translator.feed(e) for e in _events(ANTHROPIC_STREAM)) if c is not None]
    events = _translate(chunks)
    text = "".join(
        d["delta"]["text"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert text == "Hello world" and json.loads(partial) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"input_tokens": 25, "output_tokens": 15}


def test_upstream_error_in_anthropic_envelope() -> None:
    body = error_body(upstream_error(504, "Upstream timed out.", "upstream_timeout"))
    assert body == {"type": "error", "error": {"type": "api_error", "message": "Upstream timed out."}}


def test_tool_result_images_become_a_marker() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": False,
                        "content": [{"type": "text", "text": "screenshot:"}, image],
                    }
                ],
            }
        ],
    }
    assert request_to_chat(body)["messages"] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "screenshot:\n[image]"}
    ]
    body["messages"][0]["content"][0]["content"] = [{"type": "document"}]
    with pytest.raises(GatewayError) as caught:
        request_to_chat(body)
    assert caught.value.param == "messages[0].content[0].content[0]"
