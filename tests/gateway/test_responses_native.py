"""Native Responses passthrough (``options.responses: native`` on an ``openai`` provider): the client's
request reaches the upstream's ``/responses`` unchanged (reasoning, built-in tools and all), the upstream's
answer and events reach the client unchanged apart from the gateway's response id, and the stages still
apply (usage from the Responses usage, stored responses scoped to the key).

Two upstreams on loopback: a recording fake that answers recorded Responses payloads (reasoning and
web-search items the translation could never produce), and a second gateway whose own ``/v1/responses``
serves the mock, driven through the first with the real ``openai`` SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_testing import KEY, LIMITED_KEY, MASTER_KEY, TEST_CONFIG, run_server, serve
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from test_responses_format import strict_event, strict_response

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.providers.openai_responses import EventParser, response_to_chat

USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 17,
}
OUTPUT = [
    {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "opaque-reasoning"},
    {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "weather"},
    },
    {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "upstream says hi", "annotations": []}],
    },
]
ANSWER = {
    "id": "resp_upstream",
    "object": "response",
    "created_at": 1700000000,
    "status": "completed",
    "model": "gpt-up",
    "output": OUTPUT,
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [{"type": "web_search"}],
    "usage": USAGE,
}


def _event(kind: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "sequence_number": n, **fields}


_PART = {"type": "output_text", "text": "", "annotations": []}
_AT = {"item_id": "msg_up", "output_index": 1, "content_index": 0}
STREAM = [
    _event(kind, n, **fields)
    for n, (kind, fields) in enumerate(
        [
            (
                "response.created",
                {"response": {**ANSWER, "status": "in_progress", "output": [], "usage": None}},
            ),
            ("response.output_item.added", {"output_index": 0, "item": OUTPUT[0]}),
            ("response.output_item.done", {"output_index": 0, "item": OUTPUT[0]}),
            ("response.output_item.added", {"output_index": 1, "item": {**OUTPUT[2], "content": []}}),
            ("response.content_part.added", {**_AT, "part": _PART}),
            ("response.output_text.delta", {**_AT, "delta": "upstream "}),
            ("response.output_text.delta", {**_AT, "delta": "says hi"}),
            ("response.output_text.done", {**_AT, "text": "upstream says hi"}),
            ("response.content_part.done", {**_AT, "part": {**_PART, "text": "upstream says hi"}}),
            ("response.output_item.done", {"output_index": 1, "item": OUTPUT[2]}),
            ("response.completed", {"response": {**ANSWER, "output": [OUTPUT[0], OUTPUT[2]]}}),
        ]
    )
]


class Recorder:
    """A fake Responses upstream: records each request, answers :data:`ANSWER` or :data:`STREAM`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.app = Starlette(routes=[Route("/v1/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body, dict(request.headers)))
        if not body.get("stream"):
            return JSONResponse(ANSWER)
        frames = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in STREAM)
        return Response(frames, media_type="text/event-stream")


def _config(upstream: str, gateway_b: str) -> str:
    return f"""
auth:
  master_key: {MASTER_KEY}
  keys:
    - {{name: alice, key: {KEY}}}
    - {{name: bob, key: {LIMITED_KEY}}}
providers:
  - {{name: fake, type: openai, base_url: "{upstream}/v1", api_key: sk-up, options: {{responses: native}}}}
  - name: chained
    type: openai
    base_url: "{gateway_b}/v1"
    api_key: {KEY}
    options: {{responses: native}}
  - {{name: plain, type: openai, base_url: "{upstream}/v1", api_key: sk-up}}
models:
  - {{name: native, routes: [{{provider: fake, model: gpt-up}}]}}
  - {{name: chained, routes: [{{provider: chained, model: echo}}]}}
  - {{name: mixed, routes: [{{provider: fake, model: gpt-up}}, {{provider: plain, model: gpt-up}}]}}
  - {{name: falls-back, routes: [{{provider: fake, model: gpt-up}}], fallbacks: [mixed]}}
usage: {{database: ":memory:"}}
"""


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def base_url(recorder: Recorder) -> Iterator[str]:
    with (
        run_server(recorder.app) as upstream,
        run_server(create_app(parse_config(TEST_CONFIG))) as gateway_b,
        run_server(create_app(parse_config(_config(upstream, gateway_b)))) as url,
    ):
        yield url


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def _last(recorder: Recorder) -> tuple[str, dict[str, Any], dict[str, str]]:
    return recorder.requests[-1]


# --- the translation of upstream payloads for the stages ------------------------------------------------


def test_an_answer_folds_into_canonical_chat_carrying_the_object() -> None:
    chat = response_to_chat(ANSWER)
    assert chat["choices"][0]["message"]["content"] == "upstream says hi"
    assert chat["choices"][0]["finish_reason"] == "stop"
    assert chat["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    assert chat["responses_answer"] == ANSWER
    cut = response_to_chat(
        {**ANSWER, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    )
    assert cut["choices"][0]["finish_reason"] == "length"


def test_events_fold_into_chunks_with_tool_calls_and_usage() -> None:
    parse = EventParser()
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}
    lines = [
        "event: response.output_item.added",
        "data: " + json.dumps(_event("response.output_item.added", 0, output_index=0, item=call)),
        "data: "
        + json.dumps(_event("response.function_call_arguments.delta", 1, item_id="fc_1", delta="{}")),
        "data: " + json.dumps(_event("response.completed", 2, response={**ANSWER, "output": []})),
    ]
    chunks = [parse(line) for line in lines]
    assert chunks[0] is None
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1"  # type: ignore[index]
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == "{}"  # type: ignore[index]
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert chunks[3]["usage"]["prompt_tokens"] == 12  # type: ignore[index]
    assert all(c["responses_event"]["sequence_number"] == i for i, c in enumerate(chunks[1:]))  # type: ignore[index]


# --- a recording upstream ------------------------------------------------------------------------------


def test_the_request_reaches_upstream_responses_unchanged(
    sdk: openai.OpenAI, recorder: Recorder, base_url: str
) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="native",
        input="search the weather",
        instructions="Use the tool.",
        tools=[{"type": "web_search"}],
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        metadata={"ticket": "7"},
    )
    path, sent, headers = _last(recorder)
    assert path == "/v1/responses" and headers["authorization"] == "Bearer sk-up"
    assert sent == {
        "model": "gpt-up",
        "input": [{"type": "message", "role": "user", "content": "search the weather"}],
        "instructions": "Use the tool.",
        "tools": [{"type": "web_search"}],
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "metadata": {"ticket": "7"},
        "store": False,
    }
    response = raw.parse()
    assert response.id.startswith("resp_") and response.id != ANSWER["id"]
    assert [item.type for item in response.output] == ["reasoning", "web_search_call", "message"]
    assert response.output_text == "upstream says hi"
    assert raw.headers["x-gateway-route"] == "fake/gpt-up"
    record = httpx.get(
        f"{base_url}/admin/usage/requests/{raw.headers['x-request-id']}",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
    ).json()
    (row,) = record["records"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (12, 5, "reported")


def test_previous_response_id_is_resolved_by_the_gateway(
    sdk: openai.OpenAI, recorder: Recorder, base_url: str
) -> None:
    first = sdk.responses.create(model="native", input="first", reasoning={"effort": "low"})
    sdk.responses.create(model="native", input="second", previous_response_id=first.id)
    _, sent, _ = _last(recorder)
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": "first"},
        *OUTPUT,  # the reasoning item goes back as the upstream sent it
        {"type": "message", "role": "user", "content": "second"},
    ]
    with (
        openai.OpenAI(base_url=f"{base_url}/v1", api_key=LIMITED_KEY, max_retries=0) as other,
        pytest.raises(openai.NotFoundError),
    ):
        other.responses.create(model="native", input="x", previous_response_id=first.id)
    assert sdk.responses.retrieve(first.id).output_text == "upstream says hi"


def test_upstream_events_are_relayed_under_the_gateways_id(sdk: openai.OpenAI, recorder: Recorder) -> None:
    with sdk.responses.stream(model="native", input="stream", reasoning={"effort": "low"}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert recorder.requests[-1][1]["stream"] is True
    assert [e.type for e in events] == [e["type"] for e in STREAM]
    assert [e.sequence_number for e in events] == list(range(len(STREAM)))
    assert events[0].response.id == final.id and final.id.startswith("resp_")  # type: ignore[union-attr]
    assert final.id != "resp_upstream" and final.output_text == "upstream says hi"
    assert sdk.responses.retrieve(final.id).output[0].type == "reasoning"


@pytest.mark.parametrize("model", ["mixed", "falls-back"])
def test_an_alias_that_may_reach_a_chat_only_route_is_translated(
    sdk: openai.OpenAI, recorder: Recorder, model: str
) -> None:
    before = len(recorder.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=model, input="x", reasoning={"effort": "low"})
    assert caught.value.body["param"] == "reasoning"  # type: ignore[index]
    assert len(recorder.requests) == before


# --- another gateway's /v1/responses as the upstream ----------------------------------------------------


class City(BaseModel):
    name: str
    population: int


def test_sdk_create_stream_and_parse_through_two_gateways(sdk: openai.OpenAI, base_url: str) -> None:
    raw = sdk.responses.with_raw_response.create(model="chained", input="hello twice", instructions="x")
    strict_response(raw.http_response.json())
    assert raw.parse().output_text == "hello twice"
    streamed = httpx.post(
        f"{base_url}/v1/responses",
        json={"model": "chained", "input": "streamed twice", "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
    )
    events = [json.loads(frame.split("\ndata: ")[1]) for frame in streamed.text.strip().split("\n\n")]
    for event in events:
        strict_event(event)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["id"] == events[0]["response"]["id"]
    assert (
        httpx.get(
            f"{base_url}/v1/responses/{events[0]['response']['id']}",
            headers={"authorization": f"Bearer {KEY}"},
        ).json()
        == events[-1]["response"]
    )
    parsed = sdk.responses.parse(model="chained", input="a city", text_format=City)
    assert isinstance(parsed.output_parsed, City)


def test_a_tool_round_trip_through_two_gateways(sdk: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }
    first = sdk.responses.create(model="chained", input="look", tools=[tool], tool_choice="required")  # type: ignore[list-item]
    call = first.output[0]
    assert call.type == "function_call"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "found it"}
    second = sdk.responses.create(model="chained", input=[output], previous_response_id=first.id)  # type: ignore[list-item]
    assert second.output_text == "found it"


def test_upstream_refusals_pass_through_naming_the_field(sdk: openai.OpenAI) -> None:
    # The second gateway translates to chat and refuses what it cannot honour; the first forwarded it.
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="chained", input="x", reasoning={"effort": "low"})
    assert caught.value.body["param"] == "reasoning"  # type: ignore[index]


@pytest.mark.anyio
async def test_the_cache_replays_the_upstream_answer_and_events(recorder: Recorder) -> None:
    with run_server(recorder.app) as upstream:
        config = parse_config(_config(upstream, upstream) + "features: {cache: {}}\n", "cached.yaml")
        async with serve(config) as client:
            headers = {"authorization": f"Bearer {KEY}"}
            body = {"model": "native", "input": "cache me natively", "reasoning": {"effort": "low"}}
            before = len(recorder.requests)
            first = await client.post("/v1/responses", json=body, headers=headers)
            second = await client.post("/v1/responses", json=body, headers=headers)
            assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("MISS", "HIT")
            assert second.json()["output"] == first.json()["output"] == OUTPUT
            assert second.json()["id"] != first.json()["id"]
            streamed = {**body, "stream": True}
            await client.post("/v1/responses", json=streamed, headers=headers)
            replayed = await client.post("/v1/responses", json=streamed, headers=headers)
            assert replayed.headers["x-gateway-cache"] == "HIT"
            kinds = [
                line.removeprefix("event: ")
                for line in replayed.text.split("\n")
                if line.startswith("event: ")
            ]
            # The cache keeps a stream as the chat answer it amounts to: replayed, it is translated (text,
            # tool calls and usage kept; the upstream's reasoning and web-search items are not).
            assert (
                kinds[:2] == ["response.created", "response.in_progress"]
                and kinds[-1] == "response.completed"
            )
            final = json.loads(replayed.text.strip().split("\n\n")[-1].split("data: ", 1)[1])["response"]
            assert [item["type"] for item in final["output"]] == ["message"]
            assert final["output"][0]["content"][0]["text"] == "upstream says hi"
            assert (
                len(recorder.requests) == before + 2
            )  # one plain, one streamed: the rest came from the cache


def test_the_option_is_checked_at_load() -> None:
    bad = _config("http://127.0.0.1:9", "http://127.0.0.1:9").replace(
        "options: {responses: native}}", "options: {responses: always}}", 1
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, "bad.yaml")
    assert "responses" in str(caught.value) and "providers[0]" in str(caught.value)
