"""The Responses API translation tables both ways (gateway/formats/responses.py) and the stream's event
state machine (gateway/formats/responses_stream.py), each checked against the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.errors import GatewayError
from gateway.formats.responses import (
    REFUSED,
    chat_to_response,
    history,
    items_to_messages,
    request_items,
    request_to_chat,
    response_shell,
)
from gateway.formats.responses_stream import ResponseEvents

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def no_extra(value: Any, where: str = "") -> None:
    """Fail when any model in ``value`` kept a field its SDK type does not declare."""
    if isinstance(value, BaseModel):
        assert not value.model_extra, f"{where or type(value).__name__}: unexpected {value.model_extra}"
        for name in type(value).model_fields:
            no_extra(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            no_extra(item, f"{where}[{i}]")


def strict_response(data: dict[str, Any]) -> Response:
    """``data`` validated strictly as the SDK's ``Response``, with no undeclared field anywhere."""
    response = Response.model_validate(data, strict=True)
    no_extra(response)
    return response


def strict_event(data: dict[str, Any]) -> Any:
    event = EVENTS.validate_python(data, strict=True)
    no_extra(event)
    return event


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    return request_to_chat(body, request_items(body))


# --- request: Responses -> chat -------------------------------------------------------------------------


def test_a_string_input_with_instructions_and_parameters() -> None:
    body = {
        "model": "m",
        "input": "Say hi",
        "instructions": "Be brief.",
        "max_output_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u",
        "parallel_tool_calls": False,
        "metadata": {"team": "a"},
        "store": True,
        "stream": True,
        "background": False,
        "truncation": "disabled",
    }
    assert request_to_chat(body, request_items(body)) == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
        "max_completion_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with_tools = {**body, "tools": [{"type": "function", "name": "f"}]}
    assert to_chat(with_tools)["parallel_tool_calls"] is False


def test_item_list_with_parts_images_function_calls_and_outputs() -> None:
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ],
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me look"}]},
        {"type": "function_call", "call_id": "c1", "name": "look", "arguments": '{"x":1}'},
        {"type": "function_call", "call_id": "c2", "name": "look", "arguments": '{"x":2}'},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
    ]
    assert items_to_messages(items) == [
        {"role": "developer", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "let me look",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"x":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "look", "arguments": '{"x":2}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_a_function_call_with_no_text_before_it_opens_an_assistant_message() -> None:
    items = [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert items_to_messages(items) == [{"role": "assistant", "content": None, "tool_calls": [call]}]


def test_flat_function_tools_tool_choice_and_text_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "m",
        "input": "x",
        "tools": [
            {"type": "function", "name": "f", "description": "d", "parameters": schema, "strict": True}
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "Out", "schema": schema, "strict": True}},
    }
    chat = request_to_chat(body, request_items(body))
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": schema, "strict": True},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Out", "schema": schema, "strict": True},
    }
    for choice in ("auto", "none", "required"):
        assert to_chat({**body, "tool_choice": choice})["tool_choice"] == choice
    as_object = {**body, "text": {"format": {"type": "json_object"}}}
    assert to_chat(as_object)["response_format"] == {"type": "json_object"}
    assert "response_format" not in to_chat({**body, "text": {"format": {"type": "text"}}})


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("tools", [{"type": "web_search"}], "tools[0].type"),
        ("tools", [{"type": "function"}], "tools[0].name"),
        ("tools", [{"type": "function", "name": "f", "defer_loading": True}], "tools[0].defer_loading"),
        ("tool_choice", {"type": "web_search"}, "tool_choice"),
        ("reasoning", {"effort": "high"}, "reasoning"),
        ("background", True, "background"),
        ("include", ["reasoning.encrypted_content"], "include"),
        ("truncation", "auto", "truncation"),
        ("conversation", "conv_1", "conversation"),
        ("top_logprobs", 3, "top_logprobs"),
        ("text", {"format": {"type": "grammar"}}, "text.format.type"),
        ("text", {"verbosity": "low"}, "text.verbosity"),
        ("text", {"format": {"type": "json_schema", "name": "x"}}, "text.format"),
        ("frequency_penalty", 1, "frequency_penalty"),
        ("input", 5, "input"),
        ("input", [{"type": "item_reference", "id": "x"}], "input[0].type"),
        ("input", [{"role": "tool", "content": "x"}], "input[0].role"),
        (
            "input",
            [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
            "input[0].content[0].type",
        ),
        (
            "input",
            [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}],
            "input[0].content[0].image_url",
        ),
        ("input", [{"type": "function_call", "call_id": "c", "name": "f"}], "input[0].arguments"),
        ("input", [{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
    ],
)
def test_what_a_chat_upstream_cannot_serve_is_refused_by_name(field: str, value: Any, param: str) -> None:
    body = {"model": "m", "input": "x", field: value}
    with pytest.raises(GatewayError) as caught:
        request_to_chat(body, request_items(body))
    assert caught.value.status == 400
    assert caught.value.body()["error"]["param"] == param


def test_refused_parameters_at_their_neutral_values_are_accepted() -> None:
    neutral = {name: values[0] for name, values in REFUSED.items() if values}
    body = {"model": "m", "input": "x", **neutral}
    assert request_to_chat(body, request_items(body))["messages"] == [{"role": "user", "content": "x"}]


# --- answer: chat -> response ----------------------------------------------------------------------------


CHAT_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 4,
    "total_tokens": 14,
    "prompt_tokens_details": {"cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 1},
}


def _chat(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": CHAT_USAGE,
    }


def _shell(**body: Any) -> dict[str, Any]:
    return response_shell({"model": "m", "input": "x", **body}, "resp_abc", 1700000000)


def test_a_text_answer_becomes_a_completed_response() -> None:
    shell = _shell(instructions="Be brief.", metadata={"k": "v"}, temperature=0.3)
    data = chat_to_response(_chat({"content": "hello"}, "stop"), shell)
    response = strict_response(data)
    assert response.status == "completed" and response.incomplete_details is None
    assert response.output_text == "hello"
    assert data["output"][0]["id"] == "msg_abc" and data["output"][0]["status"] == "completed"
    assert data["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 14,
    }
    assert (response.instructions, response.metadata, response.temperature) == ("Be brief.", {"k": "v"}, 0.3)
    assert response.model == "up-model"


def test_tool_calls_become_function_call_items() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    data = chat_to_response(_chat({"content": None, "tool_calls": calls}, "tool_calls"), _shell(tools=tools))
    strict_response(data)
    assert [(i["type"], i["call_id"], i["name"], i["arguments"]) for i in data["output"]] == [
        ("function_call", "call_1", "f", '{"a":1}'),
        ("function_call", "call_2", "g", "{}"),
    ]
    assert data["tools"] == [{**tools[0], "strict": None}]


def test_a_length_cut_is_incomplete_with_the_reason() -> None:
    data = chat_to_response(_chat({"content": "hel"}, "length"), _shell(max_output_tokens=1))
    response = strict_response(data)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert data["output"][0]["status"] == "incomplete"


def test_history_turns_output_items_back_into_input_items() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    answered = chat_to_response(_chat({"content": "ok", "tool_calls": calls}, "tool_calls"), _shell())
    items = history([{"type": "message", "role": "user", "content": "x"}], answered)
    assert items_to_messages(items) == [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": "ok",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]


# --- stream: chunks -> typed events ----------------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "model": "up", "choices": choices, **extra}


def _run(chunks: list[dict[str, Any]], **body: Any) -> tuple[list[dict[str, Any]], ResponseEvents]:
    machine = ResponseEvents(_shell(**body))
    events = machine.start()
    for chunk in chunks:
        events += machine.chunk(chunk)
    events += machine.end()
    for event in events:
        strict_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events, machine


def test_a_text_stream_is_the_typed_event_sequence() -> None:
    events, machine = _run(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "hel"}),
            _chunk({"content": "lo"}),
            _chunk({}, "stop"),
            _chunk(usage=CHAT_USAGE),
        ]
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[6]["text"] == "hello"
    final = strict_response(events[-1]["response"])
    assert final.output_text == "hello" and final.usage is not None and final.usage.total_tokens == 14
    assert machine.response == events[-1]["response"]


def test_a_tool_call_stream_and_a_cut_answer() -> None:
    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}
    events, _ = _run(
        [
            _chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            _chunk({}, "length"),
            _chunk(usage=CHAT_USAGE),
        ]
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert events[2]["item"]["call_id"] == "call_9" and events[2]["item"]["status"] == "in_progress"
    assert events[5]["arguments"] == '{"a":1}'
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_error_event_takes_the_next_sequence_number() -> None:
    machine = ResponseEvents(_shell())
    opening = machine.start()
    error = machine.error({"message": "upstream down", "code": "upstream_error", "param": None})
    assert error["sequence_number"] == len(opening)
    assert strict_event(error).message == "upstream down"
