"""The OpenAI-compatible API through the real app (httpx ASGI transport, mock providers)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, LIMITED_KEY, MASTER_KEY, auth, chat, http_scope, serve, sse_chunks, tokens

from gateway.config import GatewayConfig

pytestmark = pytest.mark.anyio


async def test_chat_completion(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("hi there"), headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi there", "refusal": None}
    assert tokens(body["usage"]) == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert response.headers["x-gateway-route"] == "mock/mock-echo-v1"
    assert response.headers["x-gateway-attempts"] == "1"
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    assert len(response.headers["x-request-id"]) == 32


async def test_streaming_without_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat("x", model="fixed", stream=True), headers=auth()
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(response.text)
    assert chunks[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "fixed answer"
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:4]] == ["fixe", "d an", "swer"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks[:-1])


async def test_streaming_with_include_usage(client: httpx.AsyncClient) -> None:
    body = chat("x", model="fixed", stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    chunks = sse_chunks(response.text)
    assert chunks[-2]["choices"] == []
    assert tokens(chunks[-2]["usage"]) == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer sk-wrong-key-000"}, 401),
        ({"authorization": "Basic abc"}, 401),
        ({"x-api-key": KEY}, 200),
        ({"authorization": f"bearer {KEY}"}, 200),
        ({"authorization": f"Bearer {MASTER_KEY}"}, 200),
    ],
)
async def test_keys(client: httpx.AsyncClient, headers: dict[str, str], status: int) -> None:
    response = await client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["type"] == "authentication_error"
        assert "sk-wrong-key-000" not in response.text


async def test_model_not_allowed_is_403_and_unknown_model_404(client: httpx.AsyncClient) -> None:
    forbidden = await client.post("/v1/chat/completions", json=chat(model="fixed"), headers=auth(LIMITED_KEY))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "model_not_allowed"
    unknown = await client.post("/v1/chat/completions", json=chat(model="nope"), headers=auth())
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "message": "The model 'nope' does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"messages": []}', "'model' is required"),
        (b'{"model": "echo", "messages": []}', "'messages' is required"),
        (b'{"model": "echo", "messages": [{"content": "x"}]}', "messages[0]"),
        (b'{"model": "echo", "messages": [{"role": "user"}], "stream": "yes"}', "'stream' must be"),
        (b'{"model": "echo", "messages": [{"role": "user"}], "stream_options": {}}', "only allowed when"),
    ],
)
async def test_invalid_bodies_are_400(client: httpx.AsyncClient, content: bytes, fragment: str) -> None:
    response = await client.post("/v1/chat/completions", content=content, headers=auth())
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("x" * 5000), headers=auth())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def parts():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post("/v1/chat/completions", content=parts(), headers=auth())
    assert response.status_code == 413


async def test_injected_429_passes_through_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(model="busy"), headers=auth())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-gateway-route"] == "busy/busy"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_upstream_failure_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(model="broken"), headers=auth())
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "upstream_error"


async def test_request_id_is_echoed_when_given(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat(), headers={**auth(), "x-request-id": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    bad = await client.get("/health", headers={"x-request-id": "has spaces"})
    assert bad.headers["x-request-id"] != "has spaces"


async def test_every_response_has_request_id_and_overhead(client: httpx.AsyncClient) -> None:
    for response in [
        await client.get("/health"),
        await client.get("/nowhere"),
        await client.post("/v1/chat/completions", json=chat()),
    ]:
        assert "x-request-id" in response.headers
        assert "x-gateway-overhead-ms" in response.headers


async def test_unknown_route_uses_the_error_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nowhere")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_tools_force_a_tool_call(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = chat("weather?", tools=tools, tool_choice="required")
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": "{}"}


async def test_max_tokens_truncates_with_finish_reason_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("a" * 40, max_tokens=2), headers=auth())
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "a" * 8
    assert choice["finish_reason"] == "length"


async def test_app_without_lifespan_starts_on_first_request(config: GatewayConfig) -> None:
    from gateway.app import create_app

    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 200
    await app.state.gateway.close()


async def test_serve_helper_runs_lifespan(config: GatewayConfig) -> None:
    async with serve(config) as client:
        assert (await client.get("/ready")).json()["status"] == "ready"


async def test_embeddings(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/embeddings", json={"model": "echo", "input": "text"}, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 16
    assert response.headers["x-gateway-route"] == "mock/mock-echo-v1"
    bad = await client.post("/v1/embeddings", json={"model": "echo", "input": [1.5]}, headers=auth())
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


async def test_models_are_filtered_by_key(client: httpx.AsyncClient) -> None:
    everything = await client.get("/v1/models", headers=auth())
    assert [m["id"] for m in everything.json()["data"]] == ["echo", "fixed", "busy", "broken"]
    limited = await client.get("/v1/models", headers=auth(LIMITED_KEY))
    assert [m["id"] for m in limited.json()["data"]] == ["echo"]
    assert (await client.get("/v1/models/fixed", headers=auth(LIMITED_KEY))).status_code == 403
    assert (await client.get("/v1/models/nope", headers=auth())).status_code == 404
    assert (await client.get("/v1/models/echo", headers=auth())).json()["id"] == "echo"
    assert (await client.get("/v1/models")).status_code == 401
    # Neither keys nor upstream details appear in the listing.
    assert "sk-" not in everything.text and "mock-echo-v1" not in everything.text


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_ready_is_503_while_closing(config: GatewayConfig) -> None:
    from gateway.app import create_app

    app = create_app(config)
    await app.state.gateway.close()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        assert (await client.get("/ready")).status_code == 503


async def test_admin_routes_need_the_master_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/features")).status_code == 401
    assert (await client.get("/admin/features", headers=auth())).status_code == 401
    assert (await client.get("/admin/features", headers=auth(MASTER_KEY))).status_code == 200


async def test_access_log_is_structured_and_has_no_secrets(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.access")
    await client.post(
        "/v1/chat/completions", json=chat("a secret prompt"), headers={**auth(), "x-request-id": "log-1"}
    )
    await client.post("/v1/chat/completions", json=chat(), headers=auth("sk-wrong-key-000"))
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    ok = next(r for r in records if r["request_id"] == "log-1")
    assert ok["status"] == 200 and ok["key"] == "alice" and ok["team"] == "research" and ok["model"] == "echo"
    assert ok["route"] == "mock/mock-echo-v1" and ok["path"] == "/v1/chat/completions"
    assert ok["overhead_ms"] >= 0 and ok["duration_ms"] >= ok["overhead_ms"] - 1
    assert any(r["status"] == 401 for r in records)
    text = caplog.text
    assert KEY not in text and "sk-wrong-key-000" not in text and "a secret prompt" not in text


async def test_unexpected_errors_become_a_500_envelope_without_details(
    config: GatewayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    class Boom:
        async def handle(self, call: Any, next: Any) -> Any:
            raise RuntimeError("internal detail sk-test-alice-0001")

    from gateway.app import create_app
    from gateway.pipeline import build_chain

    app = create_app(config)
    app.state.gateway.handle = build_chain([Boom()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        streamed = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    await app.state.gateway.close()
    assert response.status_code == 500 and streamed.status_code == 500
    assert response.json()["error"] == {
        "message": "Internal gateway error.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert "x-request-id" in response.headers
    assert "internal detail" not in caplog.text and "Traceback" not in caplog.text
    assert "RuntimeError" in caplog.text


async def test_a_client_that_disconnects_during_the_body_gets_a_quiet_400(
    config: GatewayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.app import create_app

    app = create_app(config)
    messages = iter(
        [{"type": "http.request", "body": b'{"mod', "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope("/v1/chat/completions", [(b"authorization", f"Bearer {KEY}".encode())])
    await app(scope, receive, send)
    await app.state.gateway.close()
    assert sent[0]["status"] == 400
    assert "gateway.error" not in [r.name for r in caplog.records]
