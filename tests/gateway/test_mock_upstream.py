"""The standalone mock upstream (``gateway mock-upstream``) as an ASGI app."""

from __future__ import annotations

import httpx
import pytest
from gateway_testing import sse_chunks

from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

pytestmark = pytest.mark.anyio


def client(upstream: MockUpstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://up")


async def test_chat_embeddings_and_models() -> None:
    upstream = MockUpstream(MockOptions(reply="fixed"))
    async with client(upstream) as c:
        chat = await c.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "q"}]}
        )
        assert chat.json()["choices"][0]["message"]["content"] == "fixed"
        assert chat.json()["model"] == "m"
        embedded = await c.post("/v1/embeddings", json={"model": "e", "input": "x"})
        assert len(embedded.json()["data"][0]["embedding"]) == 16
        assert [m["id"] for m in (await c.get("/v1/models")).json()["data"]] == ["mock-echo", "mock-embed"]
        assert (await c.get("/health")).status_code == 200
    assert upstream.stats["requests"] == 4


async def test_stream_usage_only_when_asked() -> None:
    async with client(MockUpstream(MockOptions(chunk_size=2))) as c:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "abcd"}]}
        plain = sse_chunks((await c.post("/v1/chat/completions", json=body)).text)
        assert plain[-1] == "[DONE]" and all(chunk["choices"] for chunk in plain[:-1])
        body["stream_options"] = {"include_usage": True}
        with_usage = sse_chunks((await c.post("/v1/chat/completions", json=body)).text)
        assert with_usage[-2]["usage"]["completion_tokens"] == 1


async def test_errors() -> None:
    async with client(MockUpstream(MockOptions(fail_rate=1.0, fail_status=500))) as c:
        failed = await c.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "upstream_error"
        assert (await c.post("/v1/chat/completions", content=b"nope")).status_code == 400
        assert (await c.get("/v2/anything")).status_code == 404
