"""``encoding_format`` and ``dimensions`` on every provider, through the real ``openai`` SDK in process.

The SDK's default ``embeddings.create`` asks for base64 and decodes float32 little-endian; asked explicitly
for base64 it hands back the string, which these tests decode and compare with the float answer.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from gateway_testing import KEY, TEST_CONFIG, openai_config, serve
from test_azure_provider import FakeAzure, azure_config
from test_cohere_provider import FakeCohere, cohere_config

from gateway.config import GatewayConfig, parse_config
from gateway.embedding_format import encode_vector
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions, embeddings_body

pytestmark = pytest.mark.anyio


def decode(text: str) -> list[float]:
    """What OpenAI's SDKs do with a base64 embedding."""
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def float32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


class FakeOpenAI:
    """An OpenAI-compatible upstream that always answers floats (as some compatible servers do)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append(body)
        dims = body.get("dimensions", 3)
        vector = [0.1 * (i + 1) for i in range(dims)]
        data = [{"object": "embedding", "index": 0, "embedding": vector}]
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        return httpx.Response(200, json={"object": "list", "data": data, "model": "", "usage": usage})


@asynccontextmanager
async def sdk(
    config: GatewayConfig, handler: Callable[[httpx.Request], httpx.Response] | None = None
) -> AsyncIterator[openai.AsyncOpenAI]:
    transport = httpx.MockTransport(handler) if handler else None
    async with serve(config, transport=transport) as client:
        yield openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=KEY, http_client=client, max_retries=0)


async def check_formats(client: openai.AsyncOpenAI, model: str, length: int, **extra: Any) -> list[float]:
    """The float answer, the explicit base64 answer and the SDK's default agree; returns the vector."""
    floats = await client.embeddings.create(model=model, input="hello", encoding_format="float", **extra)
    vector = floats.data[0].embedding
    assert len(vector) == length
    assert floats.model  # the real model name, never ""
    raw = await client.embeddings.with_raw_response.create(
        model=model, input="hello", encoding_format="base64", **extra
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert decode(encoded) == float32(vector)
    assert raw.http_response.json()["model"] == floats.model
    default = await client.embeddings.create(model=model, input="hello", **extra)  # asks base64
    assert default.data[0].embedding == float32(vector)
    return vector


def test_encode_vector_is_openais_wire_form() -> None:
    assert encode_vector([1.0, -2.5]) == base64.b64encode(struct.pack("<2f", 1.0, -2.5)).decode()
    assert decode(encode_vector([0.5, 0.25, 0.125])) == [0.5, 0.25, 0.125]


async def test_mock_base64_and_dimensions() -> None:
    async with sdk(parse_config(TEST_CONFIG)) as client:
        await check_formats(client, "echo", 16)
        await check_formats(client, "echo", 5, dimensions=5)
        floats = await client.embeddings.create(model="echo", input="x", encoding_format="float")
        assert floats.model == "mock-echo-v1"
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="echo", input="x", dimensions=5000)
    assert refused.value.param == "dimensions"


def test_mock_refuses_dimensions_it_cannot_make() -> None:
    with pytest.raises(Exception, match="dimensions"):
        embeddings_body({"input": "x", "dimensions": 4097}, "m", MockOptions())


async def test_cohere_base64_dimensions_and_model() -> None:
    fake = FakeCohere()
    async with sdk(cohere_config(), fake) as client:
        vector = await check_formats(client, "embed", 2)
        assert vector == [0.5, 0.25]
        floats = await client.embeddings.create(model="embed", input="x", encoding_format="float")
        assert floats.model == "embed-v4.0"
        await client.embeddings.create(model="embed", input="x", dimensions=256)
    sent = json.loads(fake.requests[-1].content)
    assert sent["output_dimension"] == 256
    assert "encoding_format" not in sent and "dimensions" not in sent


async def test_azure_base64() -> None:
    fake = FakeAzure()
    async with sdk(azure_config(), fake) as client:
        vector = await check_formats(client, "embed", 2)
    assert vector == [0.1, 0.2]
    assert all("encoding_format" not in json.loads(r.content) for r in fake.requests)


async def test_openai_upstream_base64_dimensions_and_model() -> None:
    fake = FakeOpenAI()
    async with sdk(openai_config("https://up.example/v1"), fake) as client:
        await check_formats(client, "embed", 3)
        await check_formats(client, "embed", 7, dimensions=7)
    # Converted once in the gateway: the upstream is asked for floats, and is told the dimensions.
    assert all("encoding_format" not in body for body in fake.sent)
    assert fake.sent[-1]["dimensions"] == 7


async def test_mock_upstream_base64_and_bad_dimensions() -> None:
    upstream = MockUpstream(MockOptions())
    transport = httpx.ASGITransport(app=upstream)
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as c:
        floats = await c.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 4})
        encoded = await c.post(
            "/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 4, "encoding_format": "base64"}
        )
        refused = await c.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 9999})
    vector = floats.json()["data"][0]["embedding"]
    assert len(vector) == 4
    assert decode(encoded.json()["data"][0]["embedding"]) == float32(vector)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"
