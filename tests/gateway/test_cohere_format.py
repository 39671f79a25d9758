"""The reverse Cohere v2 mappings (gateway/formats/cohere.py), checked by round trip through the provider's
own (gateway/providers/cohere.py): canonical → Cohere → canonical keeps every field both formats hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.formats import cohere
from gateway.providers.cohere import CohereAdapter, chat_to_cohere, cohere_to_chat
from gateway.providers.mock import MockOptions, chat_body, chat_chunks, embeddings_body

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_chat_request_round_trip() -> None:
    canonical = {
        "model": "command-r",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "stop": ["END", "STOP"],
        "tools": TOOLS,
        "tool_choice": "required",
        "stream": True,
    }
    wire = chat_to_cohere(canonical, "command-r", stream=True)
    assert wire["p"] == 0.9 and wire["stop_sequences"] == ["END", "STOP"]  # really in Cohere's names
    assert cohere.request_to_chat(wire) == canonical
    # tool_choice none survives too; auto is Cohere's default, so it is left out both ways.
    for choice, expected in (("none", "none"), ("auto", None)):
        wire = chat_to_cohere({**canonical, "tool_choice": choice}, "command-r", stream=False)
        assert cohere.request_to_chat(wire).get("tool_choice") == expected


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    return chat_body(body, "command-r", MockOptions(), "resp-1")


@pytest.mark.parametrize(
    "request_body",
    [
        {"messages": [{"role": "user", "content": "hello there"}]},
        {"messages": [{"role": "user", "content": "a long answer cut short"}], "max_tokens": 2},
        {"messages": [{"role": "user", "content": "call it"}], "tools": TOOLS, "tool_choice": "required"},
    ],
)
def test_chat_answer_round_trip(request_body: dict[str, Any]) -> None:
    canonical = _answer(request_body)
    back = cohere_to_chat(cohere.chat_to_response(canonical), created=canonical["created"])
    kept = ("message", "finish_reason")
    original = canonical["choices"][0]
    assert {k: back["choices"][0][k] for k in kept} == {
        "message": {k: v for k, v in original["message"].items() if k != "refusal"},
        "finish_reason": original["finish_reason"],
    }
    assert back["usage"] == canonical["usage"] and back["id"] == "resp-1"


def _events_to_chunks(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mock's canonical chunks → Cohere SSE bytes → the provider's parser → canonical chunks again."""
    events = cohere.ChatEvents("resp-1")
    wire = b"".join(cohere.sse(n, d) for c in chunks for n, d in events.feed(c))
    wire += b"".join(cohere.sse(n, d) for n, d in events.finish_events())
    parse = CohereAdapter().parse_stream_line
    parsed = [parse(line) for line in wire.decode().splitlines() if line]
    return [p for p in parsed if isinstance(p, dict)]


def test_stream_round_trip_text() -> None:
    body = {"messages": [{"role": "user", "content": "stream me please"}]}
    chunks = chat_chunks(body, "m", MockOptions(chunk_size=3), "resp-1")
    back = _events_to_chunks(chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in back)
    assert text == "stream me please"
    assert back[0]["id"] == "resp-1" and back[0]["choices"][0]["delta"]["role"] == "assistant"
    assert back[-1]["choices"][0]["finish_reason"] == "stop"
    assert back[-1]["usage"] == chunks[-1]["usage"]


def test_stream_round_trip_tool_call() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "required"}
    expected = _answer(body)["choices"][0]["message"]["tool_calls"][0]
    back = _events_to_chunks(chat_chunks(body, "m", MockOptions(), "resp-1"))
    calls = [call for c in back for call in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"] == expected["id"] and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == json.loads(expected["function"]["arguments"])
    assert back[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_embed_round_trip() -> None:
    adapter = CohereAdapter("search_query")
    sent = adapter.build_request("embeddings", {"input": ["a", "b"], "dimensions": 8}, "embed-v4.0", False)
    canonical = cohere.embed_to_request(sent.json)
    assert canonical == {"model": "embed-v4.0", "input": ["a", "b"], "dimensions": 8}
    vectors = embeddings_body(canonical, "embed-v4.0", MockOptions())
    back = adapter.parse_response("embeddings", cohere.embeddings_to_response(vectors, ["a", "b"], "e1"))
    assert back["data"] == vectors["data"] and back["usage"] == vectors["usage"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "chatbot", "content": "x"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop_sequences": "x"},
            "stop_sequences",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "ANY"}, "tool_choice"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}, "tools"),
    ],
)
def test_bad_chat_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        cohere.request_to_chat(body)
    assert caught.value.status == 400 and caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"texts": ["x"]}, "model"),
        ({"model": "e", "texts": [1]}, "texts"),
        ({"model": "e", "texts": ["x"], "embedding_types": ["int8"]}, "embedding_types"),
        ({"model": "e", "texts": ["x"], "output_dimension": 5000}, "output_dimension"),
    ],
)
def test_bad_embed_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        cohere.embed_to_request(body)
    assert caught.value.status == 400 and caught.value.param == param
