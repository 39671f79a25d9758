"""The real ``openai`` SDK against a gateway served by uvicorn on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from gateway_testing import KEY, LIMITED_KEY, TEST_CONFIG, run_server

from gateway.app import create_app
from gateway.config import parse_config


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server(create_app(parse_config(TEST_CONFIG))) as url:
        yield f"{url}/v1"


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    # max_retries=0: the SDK would otherwise retry 429/5xx and hide the first answer.
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
        yield client


def test_chat(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello sdk"}])
    assert reply.choices[0].message.content == "hello sdk"
    assert reply.usage is not None and reply.usage.total_tokens == 9


def test_chat_raw_response_headers(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": "sdk-1"}
    )
    assert raw.headers["x-request-id"] == "sdk-1"
    assert raw.headers["x-gateway-route"] == "mock/mock-echo-v1"
    assert raw.parse().choices[0].message.content == "x"


def test_streaming_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stream me please"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_tool_calls(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        tool_choice="required",
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"  # type: ignore[union-attr]


def test_embeddings(sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(model="echo", input=["one", "two"])
    assert [len(item.embedding) for item in result.data] == [16, 16]


def test_models_lists_what_the_key_may_use(base_url: str, sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == ["echo", "fixed", "busy", "broken"]
    with openai.OpenAI(base_url=base_url, api_key=LIMITED_KEY, max_retries=0) as limited:
        assert [m.id for m in limited.models.list()] == ["echo"]
        assert limited.models.retrieve("echo").id == "echo"


def test_bad_key_raises_authentication_error(base_url: str) -> None:
    with (
        openai.OpenAI(base_url=base_url, api_key="sk-not-a-key", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])


def test_unknown_model_raises_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


def test_forbidden_model_raises_permission_denied(base_url: str) -> None:
    with (
        openai.OpenAI(base_url=base_url, api_key=LIMITED_KEY, max_retries=0) as client,
        pytest.raises(openai.PermissionDeniedError),
    ):
        client.chat.completions.create(model="fixed", messages=[{"role": "user", "content": "x"}])


def test_rate_limit_raises_rate_limit_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="busy", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "1"


def test_upstream_failure_raises_internal_server_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])


def test_bad_request_raises_bad_request_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="echo", messages=[])
