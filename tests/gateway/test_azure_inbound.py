"""Azure OpenAI's inbound surface (gateway/routes/azure.py), driven by the real ``openai.AzureOpenAI`` client
against the gateway on loopback with the mock provider: chat, streaming, embeddings (float and the SDK's
default base64), legacy completions, the ``api-key`` header and the required ``api-version``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from gateway_testing import KEY, TEST_CONFIG, run_server

from gateway.app import create_app
from gateway.config import parse_config

API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server(create_app(parse_config(TEST_CONFIG))) as url:
        yield url


@pytest.fixture
def azure(base_url: str) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=base_url, api_key=KEY, api_version=API_VERSION, max_retries=0
    ) as client:
        yield client


def test_chat_through_a_deployment_with_the_api_key_header(azure: openai.AzureOpenAI) -> None:
    raw = azure.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hello azure"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "hello azure"
    assert raw.http_request.url.path == "/openai/deployments/echo/chat/completions"
    assert raw.http_request.url.params["api-version"] == API_VERSION
    assert raw.http_request.headers["api-key"] == KEY and "authorization" not in raw.http_request.headers
    assert raw.headers["x-gateway-route"] == "mock/mock-echo-v1"


def test_stream(azure: openai.AzureOpenAI) -> None:
    stream = azure.chat.completions.create(
        model="fixed", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "fixed answer"


def test_embeddings_float_and_default_base64(azure: openai.AzureOpenAI) -> None:
    floats = azure.embeddings.create(model="echo", input=["a", "b"], encoding_format="float")
    default = azure.embeddings.create(model="echo", input=["a", "b"])  # the SDK asks for base64 and decodes
    assert len(default.data) == 2
    for decoded, plain in zip(default.data, floats.data, strict=True):
        assert decoded.embedding == pytest.approx(plain.embedding, abs=1e-6)  # float32 on the wire
    assert len(default.data[0].embedding) == len(floats.data[0].embedding) == 16
    assert default.model == floats.model != ""


def test_legacy_completions(azure: openai.AzureOpenAI) -> None:
    reply = azure.completions.create(model="echo", prompt="complete me", max_tokens=20)
    assert reply.object == "text_completion" and reply.choices[0].text == "complete me"


def test_the_deployment_is_the_alias_and_keys_and_versions_are_checked(base_url: str) -> None:
    url = f"{base_url}/openai/deployments/fixed/chat/completions"
    body = {"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    reply = httpx.post(url, params={"api-version": API_VERSION}, headers={"api-key": KEY}, json=body)
    assert reply.json()["choices"][0]["message"]["content"] == "fixed answer"  # the path wins over the body
    missing = httpx.post(url, headers={"api-key": KEY}, json=body)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "api-version"
    wrong = httpx.post(
        url, params={"api-version": API_VERSION}, headers={"api-key": "sk-nope-123"}, json=body
    )
    assert wrong.status_code == 401
    unknown = httpx.post(
        f"{base_url}/openai/deployments/nope/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": KEY},
        json=body,
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
