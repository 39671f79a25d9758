"""``/v1/responses`` through the real app: the official ``openai`` SDK's ``responses.create``, ``.stream``,
``.parse``, ``.retrieve`` and ``.delete`` and LangChain's ``ChatOpenAI(use_responses_api=True)`` against a
gateway on loopback with the embedded mock; every answer and stream event validated strictly against the
SDK's own types; stored responses scoped to the key, kept in memory or Redis; the pipeline's stages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_testing import KEY, LIMITED_KEY, MASTER_KEY, TEST_CONFIG, run_server, serve
from langchain_openai import ChatOpenAI
from openai.types.responses.response_item_list import ResponseItemList
from pydantic import BaseModel
from redis_server import free_port
from test_responses_format import no_extra, strict_event, strict_response

from gateway.app import create_app
from gateway.config import parse_config

CONFIG = TEST_CONFIG.replace(
    "models:\n",
    "  - {name: flaky, type: mock, options: {break_after_chunks: 3, chunk_size: 2}}\nmodels:\n"
    "  - {name: flaky, routes: [{provider: flaky}]}\n",
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
}


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server(create_app(parse_config(CONFIG))) as url:
        yield url


def _client(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    with _client(base_url) as client:
        yield client


def _create(sdk: openai.OpenAI, **params: Any) -> tuple[Any, dict[str, Any]]:
    """The SDK's parsed response and the raw JSON body, the latter validated strictly."""
    raw = sdk.responses.with_raw_response.create(**params)
    body = raw.http_response.json()
    strict_response(body)
    return raw.parse(), body


def _events(base_url: str, body: dict[str, Any], key: str = KEY) -> list[dict[str, Any]]:
    """The raw SSE events of a streamed request, each validated strictly; its ``event:`` line matches."""
    response = httpx.post(
        f"{base_url}/v1/responses", json={**body, "stream": True}, headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = []
    for frame in response.text.strip().split("\n\n"):
        kind, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        strict_event(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


# --- create ---------------------------------------------------------------------------------------------


def test_text_with_instructions(sdk: openai.OpenAI) -> None:
    response, body = _create(sdk, model="echo", input="hello there", instructions="be nice")
    assert response.output_text == "hello there"
    assert response.status == "completed" and response.instructions == "be nice"
    assert body["id"].startswith("resp_") and body["output"][0]["type"] == "message"
    # The mock counts 3 tokens per message plus one per 4 characters: the instructions were a message.
    assert response.usage is not None
    assert response.usage.input_tokens == (3 + 2) + (3 + 3)
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_items_and_max_output_tokens(sdk: openai.OpenAI) -> None:
    response, body = _create(
        sdk,
        model="echo",
        input=[
            {"role": "developer", "content": "terse"},
            {"role": "user", "content": [{"type": "input_text", "text": "a long answer to cut short"}]},
        ],
        max_output_tokens=2,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 2
    assert body["max_output_tokens"] == 2


def test_a_function_call_then_its_output_with_previous_response_id(sdk: openai.OpenAI) -> None:
    first, _ = _create(sdk, model="echo", input="weather in Paris?", tools=[WEATHER], tool_choice="required")
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    arguments = json.loads(call.arguments)
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)
    follow_up, body = _create(
        sdk,
        model="echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
        tools=[WEATHER],
    )
    assert body["previous_response_id"] == first.id
    # The mock answers the last message: the tool's output, so the call and its output reached the model.
    assert follow_up.output_text == "sunny, 21C"
    assert follow_up.usage is not None and first.usage is not None
    assert follow_up.usage.input_tokens > first.usage.input_tokens


def test_output_items_sent_back_as_input_continue_a_conversation(sdk: openai.OpenAI) -> None:
    # The stateless pattern (store: false, the history kept by the client): the SDK sends the output
    # items back as they came, ids, statuses, annotations and all.
    first, _ = _create(
        sdk, model="echo", input="weather?", tools=[WEATHER], tool_choice="required", store=False
    )
    call = first.output[0]
    history: list[Any] = [{"role": "user", "content": "weather?"}, *first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "cloudy"})
    second, _ = _create(sdk, model="echo", input=history, tools=[WEATHER], store=False)
    assert second.output_text == "cloudy"
    third, _ = _create(sdk, model="echo", input=[*history, *second.output, {"role": "user", "content": "ok"}])
    assert third.output_text == "ok"


def test_previous_response_id_continues_the_conversation(sdk: openai.OpenAI) -> None:
    first, _ = _create(sdk, model="echo", input="my name is Ada")
    second, _ = _create(sdk, model="echo", input="and yours?", previous_response_id=first.id)
    third, _ = _create(sdk, model="echo", input="bye", previous_response_id=second.id)
    assert first.usage is not None and second.usage is not None and third.usage is not None
    # user + assistant from the first turn, then the new user message: every turn's messages are sent.
    assert second.usage.input_tokens == first.usage.input_tokens + (3 + 4) + (3 + 3)
    assert third.usage.input_tokens == second.usage.input_tokens + (3 + 3) + (3 + 1)


def test_parse_with_a_pydantic_model(sdk: openai.OpenAI) -> None:
    raw = sdk.responses.with_raw_response.parse(model="echo", input="who?", text_format=Person)
    body = raw.http_response.json()
    strict_response(body)
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["name"] == "Person"
    assert isinstance(raw.parse().output_parsed, Person)


# --- stream ---------------------------------------------------------------------------------------------


def test_sdk_stream_events_in_order_and_final_response(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="echo", input="stream this text please", instructions="x") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") == 2  # 23 characters in the mock's 16-character chunks
    assert final.output_text == "stream this text please" and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 6


def test_streamed_events_validate_and_the_stream_is_stored(base_url: str, sdk: openai.OpenAI) -> None:
    events = _events(base_url, {"model": "echo", "input": "store me"})
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "store me"
    stored = sdk.responses.with_raw_response.retrieve(final["id"]).http_response.json()
    assert stored == final


def test_a_streamed_function_call(base_url: str) -> None:
    events = _events(
        base_url, {"model": "echo", "input": "call it", "tools": [WEATHER], "tool_choice": "required"}
    )
    kinds = [e["type"] for e in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert json.loads(events[4]["arguments"])["city"] == "string"


def test_an_upstream_failure_mid_stream_is_an_error_event(base_url: str) -> None:
    events = _events(base_url, {"model": "flaky", "input": "this will break off"})
    assert events[-1]["type"] == "error"
    assert "response.completed" not in [e["type"] for e in events]


def test_sdk_stream_with_tools_ends_with_the_call(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="echo", input="x", tools=[WEATHER], tool_choice="required") as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call"


# --- stored responses -----------------------------------------------------------------------------------


def test_retrieve_and_delete(sdk: openai.OpenAI) -> None:
    created, body = _create(sdk, model="echo", input="keep me", metadata={"ticket": "42"})
    fetched = sdk.responses.with_raw_response.retrieve(created.id).http_response.json()
    assert fetched == body and fetched["metadata"] == {"ticket": "42"}
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(created.id)


def test_another_key_never_sees_a_response(sdk: openai.OpenAI, base_url: str) -> None:
    created, _ = _create(sdk, model="echo", input="mine")
    with _client(base_url, LIMITED_KEY) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError) as caught:
            other.responses.create(model="echo", input="x", previous_response_id=created.id)
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert sdk.responses.retrieve(created.id).output_text == "mine"  # not deleted by the other key


def test_a_reused_request_id_never_replaces_a_stored_response(sdk: openai.OpenAI) -> None:
    same = {"x-request-id": "client-chosen-id"}
    first = sdk.responses.create(model="echo", input="one", extra_headers=same)
    second = sdk.responses.create(model="echo", input="two", extra_headers=same)
    assert first.id != second.id
    assert sdk.responses.retrieve(first.id).output_text == "one"


def test_store_false_keeps_nothing(sdk: openai.OpenAI) -> None:
    created, _ = _create(sdk, model="echo", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)


@pytest.mark.anyio
async def test_responses_live_in_redis_when_the_config_uses_it(redis_url: str) -> None:
    config = parse_config(
        CONFIG.replace("usage:", f"state: {{redis_url: '{redis_url}'}}\nusage:"), "redis.yaml"
    )
    headers = {"authorization": f"Bearer {KEY}"}
    async with serve(config) as first:
        created = await first.post(
            "/v1/responses", json={"model": "echo", "input": "shared"}, headers=headers
        )
        response_id = created.json()["id"]
    async with serve(config) as second:  # another replica: only Redis is shared
        fetched = await second.get(f"/v1/responses/{response_id}", headers=headers)
        assert fetched.status_code == 200 and fetched.json() == created.json()
        follow = {"model": "echo", "input": "again", "previous_response_id": response_id}
        assert (await second.post("/v1/responses", json=follow, headers=headers)).status_code == 200


@pytest.mark.anyio
async def test_the_ttl_comes_from_features_responses() -> None:
    config = parse_config(CONFIG + "features: {responses: {store_ttl_s: 60}}\n", "ttl.yaml")
    assert config.features.responses.store_ttl_s == 60
    async with serve(config) as client:
        store = client._transport.app.state.gateway.store  # type: ignore[attr-defined]
        seen: list[float | None] = []
        original = store.set

        async def spy(key: str, value: bytes, ttl: float | None = None) -> None:
            seen.append(ttl)
            await original(key, value, ttl)

        store.set = spy
        answer = await client.post(
            "/v1/responses", json={"model": "echo", "input": "x"}, headers={"authorization": f"Bearer {KEY}"}
        )
        assert answer.status_code == 200 and seen == [60]


# --- refusals, validation, pipeline ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"temperature": 3}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"store": "yes"}, "store"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_field(
    sdk: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="echo", input="x", **params)
    assert caught.value.body["param"] == param  # type: ignore[index]


def test_a_key_is_required_and_models_are_checked(base_url: str) -> None:
    body = {"model": "echo", "input": "x"}
    assert httpx.post(f"{base_url}/v1/responses", json=body).status_code == 401
    assert httpx.get(f"{base_url}/v1/responses/resp_x").status_code == 401
    with _client(base_url, LIMITED_KEY) as limited, pytest.raises(openai.PermissionDeniedError):
        limited.responses.create(model="fixed", input="x")


def test_usage_is_recorded_for_the_key(sdk: openai.OpenAI, base_url: str) -> None:
    raw = sdk.responses.with_raw_response.create(model="echo", input="count me")
    record = httpx.get(
        f"{base_url}/admin/usage/requests/{raw.headers['x-request-id']}",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
    ).json()
    (row,) = record["records"]
    assert row["key_name"] == "alice" and row["route"] == "mock/mock-echo-v1"
    usage = raw.parse().usage
    assert usage is not None and row["endpoint"] == "chat"
    assert (usage.input_tokens, usage.output_tokens) == (row["prompt_tokens"], row["completion_tokens"])


@pytest.mark.anyio
async def test_rate_limit_and_cache_apply() -> None:
    config = CONFIG.replace(f"key: {KEY}, team: research", f"key: {KEY}, team: research, rpm: 2")
    config += "features: {cache: {}}\n"
    async with serve(parse_config(config, "limits.yaml")) as client:
        headers = {"authorization": f"Bearer {KEY}"}
        body = {"model": "echo", "input": "once"}
        first = await client.post("/v1/responses", json=body, headers=headers)
        second = await client.post("/v1/responses", json=body, headers=headers)
        assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("MISS", "HIT")
        assert first.json()["id"] != second.json()["id"]  # a cached answer is still a response of its own
        refused = await client.post("/v1/responses", json=body, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"


# --- LangChain ------------------------------------------------------------------------------------------


@pytest.fixture
def llm(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(
        model="echo", base_url=f"{base_url}/v1", api_key=KEY, use_responses_api=True, max_retries=0
    )  # type: ignore[arg-type]


def test_langchain_invoke_and_stream(llm: ChatOpenAI) -> None:
    answer = llm.invoke("hello langchain")
    assert answer.text == "hello langchain"
    assert answer.response_metadata["id"].startswith("resp_")
    chunks = list(llm.stream("stream via langchain"))
    assert len(chunks) > 2
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.text == "stream via langchain"
    assert full.usage_metadata is not None and full.usage_metadata["output_tokens"] == 5  # type: ignore[attr-defined]


def test_langchain_structured_output_and_tools(llm: ChatOpenAI) -> None:
    person = llm.with_structured_output(Person).invoke("who?")
    assert isinstance(person, Person)
    called = llm.bind_tools([Person], tool_choice="required").invoke("x")
    assert called.tool_calls[0]["name"] == "Person"  # type: ignore[attr-defined]
    assert Person.model_validate(called.tool_calls[0]["args"])  # type: ignore[attr-defined]


# --- input items ----------------------------------------------------------------------------------------


def test_input_items_list_the_conversation(sdk: openai.OpenAI, base_url: str) -> None:
    first, _ = _create(sdk, model="echo", input="weather?", tools=[WEATHER], tool_choice="required")
    call = first.output[0]
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    second, _ = _create(
        sdk,
        model="echo",
        previous_response_id=first.id,
        input=[output, {"role": "user", "content": [{"type": "input_text", "text": "and?"}, image]}],
    )
    raw = httpx.get(
        f"{base_url}/v1/responses/{second.id}/input_items",
        params={"order": "asc", "limit": 100},
        headers={"authorization": f"Bearer {KEY}"},
    ).json()
    listed = ResponseItemList.model_validate(raw, strict=True)
    no_extra(listed)
    assert [item.type for item in listed.data] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert listed.data[1].call_id == call.call_id and listed.data[2].output == "rain"  # type: ignore[union-attr]
    # The SDK's own paging (newest first, two at a time) walks every item once.
    paged = [item.id for item in sdk.responses.input_items.list(second.id, limit=2)]
    assert paged == [item.id for item in reversed(listed.data)]
    with _client(base_url, LIMITED_KEY) as other, pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(second.id)
    refused = httpx.get(
        f"{base_url}/v1/responses/{second.id}/input_items",
        params={"limit": 0},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "limit"


@pytest.mark.anyio
@pytest.mark.parametrize(("on_error", "status"), [("fail_closed", 503), ("fail_open", 404)])
async def test_a_store_that_is_down_follows_state_on_error(on_error: str, status: int) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    state = f"state: {{redis_url: '{down}', on_error: {on_error}, timeout_seconds: 0.5}}\nusage:"
    async with serve(parse_config(CONFIG.replace("usage:", state), "down.yaml")) as client:
        answer = await client.get("/v1/responses/resp_x", headers={"authorization": f"Bearer {KEY}"})
        assert answer.status_code == status
        expected = "state_store_unavailable" if status == 503 else "not_found"
        assert answer.json()["error"]["code"] == expected
