"""``POST /v1/completions``: the translation to and from the canonical chat call, the real ``openai`` SDK's
``completions.create`` (plain and streamed), and the pipeline stages (keys, usage) on this route."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from gateway_testing import KEY, MASTER_KEY, TEST_CONFIG, run_server, serve

from gateway.app import create_app
from gateway.config import parse_config
from gateway.errors import GatewayError
from gateway.formats.completions import chat_to_completion, chunk_to_completion, request_to_chat

# --- translation ----------------------------------------------------------------------------------------


def test_request_carries_parameters_and_makes_one_user_message() -> None:
    body = {
        "model": "m",
        "prompt": "Say hi",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "n": 2,
        "seed": 3,
        "user": "u",
        "stream": True,
        "stream_options": {"include_usage": True},
        "echo": False,
        "best_of": 1,
        "suffix": None,
    }
    assert request_to_chat(body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "n": 2,
        "seed": 3,
        "user": "u",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_one_prompt_list_is_that_prompt() -> None:
    assert request_to_chat({"model": "m", "prompt": ["only"]})["messages"][0]["content"] == "only"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", ["a", "b"]),
        ("prompt", [1, 2, 3]),
        ("prompt", None),
        ("echo", True),
        ("best_of", 3),
        ("suffix", "end"),
        ("logprobs", 2),
        ("functions", []),
    ],
)
def test_untranslatable_fields_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(GatewayError) as caught:
        request_to_chat({"model": "m", "prompt": "p", field: value})
    assert caught.value.status == 400
    assert caught.value.body()["error"]["param"] == field


def test_answer_becomes_a_text_completion() -> None:
    chat = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 5,
        "model": "up",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"},
            {"index": 1, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    assert chat_to_completion(chat, "m") == {
        "id": "cmpl-abc",
        "object": "text_completion",
        "created": 5,
        "model": "up",
        "choices": [
            {"text": "hi", "index": 0, "logprobs": None, "finish_reason": "length"},
            {"text": "", "index": 1, "logprobs": None, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def test_stream_chunks_become_text_completion_chunks() -> None:
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    opening = {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    assert chunk_to_completion(opening, "m") is None
    text = chunk_to_completion({**base, "choices": [{"index": 0, "delta": {"content": "he"}}]}, "m")
    assert text is not None and text["object"] == "text_completion"
    assert text["choices"] == [{"text": "he", "index": 0, "logprobs": None, "finish_reason": None}]
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    last = chunk_to_completion({**base, "choices": [], "usage": usage}, "m")
    assert last is not None and last["choices"] == [] and last["usage"] == usage


# --- the real SDK against the gateway -------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server(create_app(parse_config(TEST_CONFIG))) as url:
        yield url


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def test_sdk_completion(sdk: openai.OpenAI, base_url: str) -> None:
    raw = sdk.completions.with_raw_response.create(model="echo", prompt="hello sdk", max_tokens=20)
    reply = raw.parse()
    assert reply.object == "text_completion"
    assert reply.choices[0].text == "hello sdk"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == 9
    # The usage stage recorded the call under the key that made it.
    record = httpx.get(
        f"{base_url}/admin/usage/requests/{raw.headers['x-request-id']}",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
    ).json()
    (row,) = record["records"]
    assert row["key_name"] == "alice" and row["route"] == "mock/mock-echo-v1"


def test_sdk_streamed_completion(sdk: openai.OpenAI) -> None:
    stream = sdk.completions.create(
        model="echo", prompt="stream me please", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "stream me please"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_sdk_refusal_names_the_parameter(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="echo", prompt="x", echo=True)
    assert caught.value.body is not None and caught.value.body["param"] == "echo"  # type: ignore[index]


def test_a_key_is_required(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/completions", json={"model": "echo", "prompt": "x"})
    assert response.status_code == 401


def test_streamed_sse_ends_with_done(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/completions",
        json={"model": "echo", "prompt": "hi", "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
    )
    events = [line for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in response.text  # not asked for with stream_options


def test_openapi_describes_completions(base_url: str) -> None:
    document = httpx.get(f"{base_url}/openapi.json").json()
    schema = document["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert set(schema["schema"]["required"]) == {"model", "prompt"}


@pytest.mark.anyio
async def test_the_keys_rate_limit_applies() -> None:
    config = TEST_CONFIG.replace(f"key: {KEY}, team: research", f"key: {KEY}, team: research, rpm: 1")
    async with serve(parse_config(config, "test.yaml")) as client:
        headers = {"authorization": f"Bearer {KEY}"}
        body = {"model": "echo", "prompt": "once"}
        assert (await client.post("/v1/completions", json=body, headers=headers)).status_code == 200
        refused = await client.post("/v1/completions", json=body, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
