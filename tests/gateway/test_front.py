"""gateway/front.py: the inference routes served past FastAPI's layers, answering as they did through them.

Most tests run twice, ``front`` (the hot routes short-circuit FastAPI's stack) and ``fastapi`` (the same
app with its hot-route table emptied, so every request takes the FastAPI path the front replaced): both
paths stay tested, and each answer is compared with the other's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest
from gateway_testing import KEY, TEST_CONFIG, auth, chat, http_scope, run_server, sse_chunks
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.routing import Router

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.front import GatewayApp
from gateway.logging import ERROR_LOGGER
from gateway.mock_upstream import MockUpstream
from gateway.pipeline import Call

pytestmark = pytest.mark.anyio

ALLOWED = "https://app.example"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


def config(extra: str = "") -> GatewayConfig:
    return parse_config(TEST_CONFIG + extra)


def upstream_config() -> GatewayConfig:
    """Model ``up`` served by an OpenAI provider whose transport the test supplies."""
    return parse_config(
        f"""
server: {{max_body_bytes: 4096}}
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: up, type: openai, base_url: "https://up.test/v1", api_key: sk-upstream-secret}}
models:
  - {{name: up, routes: [{{provider: up, model: up-model}}]}}
usage: {{database: ":memory:"}}
"""
    )


def build(cfg: GatewayConfig, path: str, transport: httpx.AsyncBaseTransport | None = None) -> GatewayApp:
    app = create_app(cfg, transport=transport)
    assert isinstance(app, GatewayApp)
    if path == "fastapi":
        app.hot_routes.clear()  # every request through FastAPI's stack, as before the front
    return app


@asynccontextmanager
async def client_of(app: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


@pytest.fixture(params=["front", "fastapi"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths that reached FastAPI's router."""
    seen: list[str] = []
    original = Router.__call__

    async def counting(self: Router, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counting)
    yield seen


async def test_the_inference_routes_skip_fastapis_stack_and_the_rest_go_through_it(routed: list[str]) -> None:
    app = build(config(), "front")
    messages = {"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with client_of(app) as client:
        for url, body in [
            ("/v1/chat/completions", chat()),
            ("/v1/embeddings", {"model": "echo", "input": "hi"}),
            ("/v1/completions", {"model": "echo", "prompt": "hi"}),
            ("/v1/responses", {"model": "echo", "input": "hi"}),
            ("/v1/messages", messages),
            ("/v1/messages/count_tokens", messages),
        ]:
            response = await client.post(url, json=body, headers=auth())
            assert response.status_code == 200, (url, response.text)
            assert response.headers["x-request-id"] and "x-gateway-overhead-ms" in response.headers
        assert (await client.get("/v1/models", headers=auth())).status_code == 200
        assert routed == []
        # Everything else is FastAPI's: a model by name (a path parameter), a probe, a wrong method.
        assert (await client.get("/v1/models/echo", headers=auth())).status_code == 200
        assert (await client.get("/health")).status_code == 200
        wrong = await client.get("/v1/chat/completions", headers=auth())
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert routed == ["/v1/models/echo", "/health", "/v1/chat/completions"]


async def test_a_hot_route_answers_as_through_fastapi(routed: list[str]) -> None:
    answers: dict[str, httpx.Response] = {}
    for path in ("front", "fastapi"):
        async with client_of(build(config(), path)) as client:
            answers[path] = await client.post(
                "/v1/chat/completions", json=chat("same"), headers={**auth(), "x-request-id": "req-42"}
            )
    front, through = answers["front"], answers["fastapi"]
    assert routed == ["/v1/chat/completions"]  # the second app only
    assert front.status_code == through.status_code == 200
    assert sorted(front.headers.keys()) == sorted(through.headers.keys())
    for name in ("content-type", "x-request-id", "x-gateway-route", "x-gateway-attempts", "x-gateway-cache"):
        assert front.headers.get(name) == through.headers.get(name), name
    assert front.headers["x-request-id"] == "req-42"
    assert float(front.headers["x-gateway-overhead-ms"]) >= 0
    assert front.json()["choices"] == through.json()["choices"]
    assert int(front.headers["content-length"]) == len(front.content)


async def test_a_generated_request_id_and_the_access_log(path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with client_of(build(config(), path)) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert line["request_id"] == request_id and line["status"] == 200 and line["key"] == "alice"
    assert line["path"] == "/v1/chat/completions" and line["model"] == "echo"


async def test_cors_simple_and_preflight_requests(path: str) -> None:
    cors = f'  cors: {{allow_origins: ["{ALLOWED}"]}}\n'
    cfg = parse_config(TEST_CONFIG.replace("  max_body_bytes: 4096\n", "  max_body_bytes: 4096\n" + cors, 1))
    async with client_of(build(cfg, path)) as client:
        simple = await client.post("/v1/chat/completions", json=chat(), headers={**auth(), "origin": ALLOWED})
        refused = await client.post(
            "/v1/chat/completions", json=chat(), headers={**auth(), "origin": "https://evil.example"}
        )
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "origin": ALLOWED,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
    assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in simple.headers["access-control-expose-headers"]
    assert "origin" in simple.headers["vary"].lower()
    assert refused.status_code == 200 and "access-control-allow-origin" not in refused.headers
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]


async def test_tracing_joins_the_callers_trace(path: str) -> None:
    app = build(config("features: {tracing: {exporter: none}}\n"), path)
    tracing = app.state.gateway.runtime.tracing
    exporter = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with client_of(app) as client:
        joined = await client.post(
            "/v1/chat/completions", json=chat(), headers={**auth(), "traceparent": TRACEPARENT}
        )
        fresh = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert joined.status_code == fresh.status_code == 200
    servers = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/chat/completions"]
    assert format(servers[0].context.trace_id, "032x") == CLIENT_TRACE
    # Without an x-request-id, the generated one is the request's trace id.
    assert joined.headers["x-request-id"] == CLIENT_TRACE
    assert fresh.headers["x-request-id"] == format(servers[1].context.trace_id, "032x")


async def test_an_unexpected_error_is_the_500_envelope_without_a_traceback(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = build(config(), path)

    async def broken(call: Call) -> Any:
        raise RuntimeError("boom sk-upstream-secret")

    async with client_of(app) as client:
        app.state.gateway.handle = broken
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "Internal gateway error.", "type": "server_error", "param": None, "code": None}
    }
    assert response.headers["x-request-id"]
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == ERROR_LOGGER)
    assert "RuntimeError" in logged
    text = response.text + caplog.text
    assert "sk-upstream-secret" not in text and "Traceback" not in text


async def test_gateway_errors_keep_their_handlers(path: str) -> None:
    async with client_of(build(config(), path)) as client:
        unknown = await client.post("/v1/chat/completions", json=chat(model="nope"), headers=auth())
        no_key = await client.post("/v1/chat/completions", json=chat())
        anthropic_refusal = await client.post(
            "/v1/messages", json={"model": "nope", "max_tokens": 1, "messages": []}, headers=auth()
        )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert no_key.status_code == 401 and no_key.headers["x-request-id"]
    assert anthropic_refusal.json()["type"] == "error"  # Anthropic's envelope on its route


async def test_a_body_over_the_limit_is_refused_naming_it(path: str) -> None:
    big = json.dumps(chat("x" * 5000)).encode()

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: refused while reading
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with client_of(build(config(), path)) as client:
        declared = await client.post("/v1/chat/completions", content=big, headers=auth())
        streamed = await client.post("/v1/chat/completions", content=chunked(), headers=auth())
    for response in (declared, streamed):
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "request_too_large" and "4096 bytes" in error["message"]


class GatedStream(httpx.AsyncByteStream):
    """An upstream SSE body that sends its first chunk, then waits for ``gate`` before the rest."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-model"}
        first = {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "one"}}]}
        yield b"data: " + json.dumps(first).encode() + b"\n\n"
        await self.gate.wait()
        last = {**chunk, "choices": [{"index": 0, "delta": {"content": "two"}, "finish_reason": "stop"}]}
        yield b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n"


class GatedUpstream(httpx.AsyncBaseTransport):
    """Streams through :class:`GatedStream`; a plain request waits for ``gate``, then the mock answers."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.reached = asyncio.Event()
        self.mock = httpx.ASGITransport(app=MockUpstream())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.reached.set()
        if json.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(200, headers=headers, stream=GatedStream(self.gate))
        await self.gate.wait()
        return await self.mock.handle_async_request(request)


def asgi_request(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    raw = json.dumps(body).encode()
    headers = [
        (b"host", b"gateway"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {KEY}".encode()),
        (b"content-length", str(len(raw)).encode()),
    ]
    scope = http_scope("/v1/chat/completions", headers)
    messages = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects here
        raise AssertionError

    return scope, receive


async def test_a_stream_is_flushed_chunk_by_chunk(path: str) -> None:
    upstream = GatedUpstream()
    app = build(upstream_config(), path, upstream)
    sent: list[dict[str, Any]] = []
    first_event = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and b"data: " in message.get("body", b""):
            first_event.set()

    scope, receive = asgi_request(
        {"model": "up", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    async with app.router.lifespan_context(app):
        task = asyncio.create_task(app(scope, receive, send))
        await first_event.wait()  # sent while the upstream still holds its second chunk
        assert not upstream.gate.is_set() and not task.done()
        start = sent[0]
        assert start["type"] == "http.response.start" and start["status"] == 200
        headers = dict(start["headers"])
        assert headers[b"content-type"].startswith(b"text/event-stream") and headers[b"x-request-id"]
        upstream.gate.set()
        await task
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    chunks = sse_chunks(body)
    assert chunks[-1] == "[DONE]"
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]) == "onetwo"
    )
    assert sent[-1].get("more_body", False) is False


async def test_the_drain_deadline_ends_a_hot_request_with_503(path: str) -> None:
    upstream = GatedUpstream()
    app = build(upstream_config(), path, upstream)
    gateway = app.state.gateway
    async with client_of(app) as client:
        request = asyncio.create_task(
            client.post(
                "/v1/chat/completions",
                json={"model": "up", "messages": [{"role": "user", "content": "x"}]},
                headers=auth(),
            )
        )
        await upstream.reached.wait()  # in flight, held at the upstream
        assert gateway.activity.in_flight == 1
        assert await gateway.activity.drain(0) is False  # the deadline has passed: stop what still runs
        response = await request
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down" and response.headers["x-request-id"]
    assert response.headers["retry-after"] == "1"  # send it again, to another replica or after the restart
    assert gateway.activity.in_flight == 0


def test_openai_and_anthropic_sdks_through_a_served_front() -> None:
    app = build(config(), "front")
    with run_server(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="fixed",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "sdk-1"},
        )
        assert raw.headers["x-request-id"] == "sdk-1" and "x-gateway-overhead-ms" in raw.headers
        assert raw.parse().choices[0].message.content == "fixed answer"
        streamed = client.chat.completions.create(
            model="fixed", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
        assert len([p for p in pieces if p]) > 1 and "".join(pieces) == "fixed answer"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        message = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0).messages.create(
            model="fixed", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == "fixed answer"


@pytest.mark.parametrize("trusted", ["127.0.0.1", None])
def test_forwarded_addresses_reach_fastapis_routes_when_trusted(trusted: str | None) -> None:
    # As `gateway run` serves: uvicorn's proxy-headers middleware off, the app's own on FastAPI's path.
    app = create_app(config("admin: {failed_auth_limit: 1}\n"), forwarded_allow_ips=trusted)
    guess = {"authorization": "Bearer sk-guess-000000"}
    with run_server(app, proxy_headers=False) as url, httpx.Client(base_url=url) as client:
        first = {**guess, "x-forwarded-for": "203.0.113.1"}
        other = {**guess, "x-forwarded-for": "203.0.113.2"}
        assert [client.get("/admin/v1/keys", headers=first).status_code for _ in range(2)] == [401, 429]
        # Another forwarded client is its own address when the proxy is trusted, the same peer otherwise.
        assert client.get("/admin/v1/keys", headers=other).status_code == (401 if trusted else 429)
        answer = client.post(
            "/v1/chat/completions", json=chat(), headers={**auth(), "x-forwarded-for": "203.0.113.1"}
        )
        assert answer.status_code == 200 and answer.headers["x-request-id"]


async def test_a_hot_route_maps_exceptions_with_the_apps_handlers_as_fastapi_does(path: str) -> None:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response

    app = build(config(), path)

    async def teapot(request: Request) -> Response:
        raise HTTPException(418, "short and stout")

    async def by_status(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("by status", status_code=418)

    app.add_hot_route("/test/teapot", teapot)
    if path == "fastapi":
        app.hot_routes.clear()
    app.add_exception_handler(418, by_status)
    async with client_of(app) as client:
        answer = await client.post("/test/teapot")
    # A status handler wins over the HTTPException handler, as in Starlette's exception middleware.
    assert answer.status_code == 418 and answer.text == "by status" and answer.headers["x-request-id"]


async def test_a_finished_request_leaves_no_call_for_the_cyclic_collector(path: str) -> None:
    """With rate limit, budget and cache on (the stages whose admission claims point back at the call), a
    request's objects are freed by reference counting once its response is out, answers and cache hits
    alike: the young-generation collections they used to cost every few dozen requests are gone."""
    limited = TEST_CONFIG.replace("team: research}", "team: research, rpm: 1000, budget: {limit_usd: 100}}")
    assert limited != TEST_CONFIG
    app = build(parse_config(limited + "features: {cache: {enabled: true}, rate_limit: {}}\n"), path)
    async with client_of(app) as client:
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for content in ("first", "first", "second"):  # a miss, its hit, another miss
                response = await client.post("/v1/chat/completions", json=chat(content), headers=auth())
                assert response.status_code == 200
            for content, cache in (("first", "HIT"), ("third", "MISS")):  # streamed: a hit, a miss
                stream = await client.post(
                    "/v1/chat/completions", json=chat(content, stream=True), headers=auth()
                )
                assert stream.status_code == 200 and stream.headers["x-gateway-cache"] == cache
            gc.collect()
            calls = [o for o in gc.garbage if isinstance(o, Call)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert calls == []
