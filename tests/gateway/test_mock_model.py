"""The mock behaves like a model: ``n``, ``stop``, ``logprobs``, ``response_format`` and tool arguments,
streamed and not, and the same request always gets the same answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from gateway_testing import KEY, TEST_CONFIG, chat, run_server
from pydantic import BaseModel, Field

from gateway.app import create_app
from gateway.config import parse_config
from gateway.features.cache_entries import assemble
from gateway.providers.mock import MockOptions, chat_body, chat_chunks


class City(BaseModel):
    name: str
    population: int = Field(ge=1)
    coastal: bool


class Weather(BaseModel):
    city: City
    unit: str = Field(json_schema_extra={"enum": ["celsius", "fahrenheit"]})
    days: list[int] = Field(min_length=1)


def _schema_format(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


def test_n_answers_n_choices_indexed_and_counts_their_tokens() -> None:
    body = chat_body(chat("12345678", n=3), "m", MockOptions(), "id")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {"12345678"}
    assert body["usage"]["completion_tokens"] == 6


def test_stop_cuts_at_the_first_stop_string() -> None:
    body = chat_body(chat("one, two. three", stop=[".", ","]), "m", MockOptions(), "id")
    assert body["choices"][0]["message"]["content"] == "one"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert (
        chat_body(chat("abc", stop="zz"), "m", MockOptions(), "id")["choices"][0]["message"]["content"]
        == "abc"
    )


def test_logprobs_one_entry_per_token_with_top_alternatives() -> None:
    body = chat_body(chat("abcdefghij", logprobs=True, top_logprobs=2), "m", MockOptions(), "id")
    content = body["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["abcd", "efgh", "ij"]
    for entry in content:
        assert entry["bytes"] == list(entry["token"].encode()) and entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == 2 and entry["top_logprobs"][0]["token"] == entry["token"]
        assert entry["top_logprobs"][1]["logprob"] < entry["top_logprobs"][0]["logprob"]
    assert chat_body(chat("x"), "m", MockOptions(), "id")["choices"][0]["logprobs"] is None


def test_json_object_answers_valid_json() -> None:
    body = chat_body(chat("hi", response_format={"type": "json_object"}), "m", MockOptions(), "id")
    assert json.loads(body["choices"][0]["message"]["content"]) == {"reply": "hi"}


def test_json_schema_answer_validates_and_is_deterministic() -> None:
    request = chat("hi", response_format=_schema_format(Weather))
    first = chat_body(request, "m", MockOptions(), "a")
    assert first == {**chat_body(request, "m", MockOptions(), "a"), "created": first["created"]}
    content = json.loads(first["choices"][0]["message"]["content"])
    jsonschema.validate(content, Weather.model_json_schema())


def test_tool_arguments_validate_against_the_parameters() -> None:
    parameters = Weather.model_json_schema()
    tools = [{"type": "function", "function": {"name": "report", "parameters": parameters}}]
    body = chat_body(chat("x", tools=tools, tool_choice="required", n=2), "m", MockOptions(), "id")
    calls = [c["message"]["tool_calls"][0] for c in body["choices"]]
    for call in calls:
        jsonschema.validate(json.loads(call["function"]["arguments"]), parameters)
    assert calls[0]["id"] != calls[1]["id"]


def test_streamed_n2_reassembles_each_choice_with_logprobs() -> None:
    request = chat("abcdefghij", n=2, stop="h", logprobs=True)
    chunks = chat_chunks(request, "m", MockOptions(chunk_size=4), "id")
    texts: dict[int, str] = {}
    tokens: dict[int, list[str]] = {}
    finishes: dict[int, str] = {}
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        i = choice["index"]
        texts[i] = texts.get(i, "") + (choice["delta"].get("content") or "")
        if choice["logprobs"]:
            tokens.setdefault(i, []).extend(e["token"] for e in choice["logprobs"]["content"])
        if choice["finish_reason"]:
            finishes[i] = choice["finish_reason"]
    assert texts == {0: "abcdefg", 1: "abcdefg"} and finishes == {0: "stop", 1: "stop"}
    assert tokens == {0: ["abcd", "efg"], 1: ["abcd", "efg"]}
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_streamed_tool_call_arguments_validate() -> None:
    parameters = City.model_json_schema()
    tools = [{"type": "function", "function": {"name": "city", "parameters": parameters}}]
    chunks = chat_chunks(chat("x", tools=tools, tool_choice="required"), "m", MockOptions(), "id")
    arguments = "".join(
        call["function"].get("arguments", "")
        for c in chunks
        for choice in c["choices"]
        for call in choice["delta"].get("tool_calls", [])
    )
    City.model_validate_json(arguments)


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 2, "logprobs": True, "top_logprobs": 1, "stop": "ij"},
        {"response_format": _schema_format(Weather)},
        {
            "tools": [
                {"type": "function", "function": {"name": "city", "parameters": City.model_json_schema()}}
            ],
            "tool_choice": "required",
            "n": 2,
        },
    ],
    ids=["n-logprobs-stop", "json-schema", "tools"],
)
def test_a_stream_amounts_to_the_same_answer(extra: dict[str, Any]) -> None:
    request = chat("abcdefghijklmnopqrstuvwxyz", **extra)
    body = chat_body(request, "m", MockOptions(), "id")
    assembled = assemble(chat_chunks(request, "m", MockOptions(), "id"))
    assert assembled is not None and assembled["usage"] == body["usage"]
    for streamed, whole in zip(assembled["choices"], body["choices"], strict=True):
        if whole["logprobs"] is not None:
            assert streamed["logprobs"]["content"] == whole["logprobs"]["content"]
        assert {**streamed, "logprobs": None} == {**whole, "logprobs": None}


# --- through the gateway, with the real openai SDK -----------------------------------------------------


@pytest.fixture(scope="module")
def sdk() -> Iterator[openai.OpenAI]:
    with (
        run_server(create_app(parse_config(TEST_CONFIG))) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client,
    ):
        yield client


def test_sdk_parse_structured_output(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.parse(
        model="echo", messages=[{"role": "user", "content": "weather?"}], response_format=Weather
    )
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Weather) and parsed.city.population >= 1 and parsed.unit == "celsius"


def test_sdk_parse_tool_call_arguments(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.parse(
        model="echo",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[openai.pydantic_function_tool(Weather)],
        tool_choice="required",
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and isinstance(calls[0].function.parsed_arguments, Weather)


def test_sdk_stream_n2(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "two answers"}], n=2, stream=True
    )
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "two answers", 1: "two answers"}
