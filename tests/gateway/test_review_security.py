"""Release review of the gateway: secrets, auth on every route, error envelopes, stream settlement.

Each test here pins a fix made in the review and fails without it.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import httpx
import pytest
from gateway_testing import auth, chat, run_server

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig, parse_config

MASTER = "sk-review-master-0001"
KEY = "sk-review-alice-0002"
UPSTREAM_KEY = "sk-upstream-secret-0003"
REDIS_PASSWORD = "redis-secret-0004"

pytestmark = pytest.mark.anyio

CONFIG = f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {KEY}, max_concurrent: 1, budget: {{limit_usd: 1.0, period: total}}}}
providers:
  - {{name: mock, type: mock, options: {{chunk_size: 2}}}}
  - {{name: echoer, type: openai, base_url: "http://upstream.test/v1", api_key: {UPSTREAM_KEY}}}
models:
  - {{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 1.0, output_per_1m: 1.0}}}}
  - {{name: leaky, routes: [{{provider: echoer, model: leaky}}]}}
features:
  routing: {{max_attempts: 1}}
  graphql: {{enabled: true}}
usage: {{database: ":memory:"}}
"""


def review_config(extra: str = "", *, console: bool = False) -> GatewayConfig:
    text = CONFIG.replace("features:\n", "features:\n  console: {enabled: true}\n") if console else CONFIG
    return parse_config(text + extra, "review.yaml")


def echoing_upstream(status: int, *, stream: bool = False) -> httpx.MockTransport:
    """An upstream that quotes the Authorization header it received in its error message."""

    def handle(request: httpx.Request) -> httpx.Response:
        echoed = request.headers.get("authorization", "")
        if stream:
            body = (
                'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
                '"delta":{"content":"hi"}}]}\n\n'
                f'data: {{"error": {{"message": "stream failed for {echoed}"}}}}\n\n'
            )
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        error = {"error": {"message": f"Incorrect API key provided: {echoed}", "code": "bad"}}
        return httpx.Response(status, json=error)

    return httpx.MockTransport(handle)


async def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_upstream_errors_quoting_the_upstream_key_are_redacted(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(review_config(), transport=echoing_upstream(status))
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.post("/v1/chat/completions", json=chat(model="leaky"), headers=auth(KEY))
    assert response.status_code >= 400
    assert UPSTREAM_KEY not in response.text
    assert "[redacted]" in response.json()["error"]["message"]
    # Nor in any log line (access log, error log, feature logs).
    assert caplog.records
    assert UPSTREAM_KEY not in caplog.text and KEY not in caplog.text and MASTER not in caplog.text


async def test_upstream_stream_error_quoting_the_upstream_key_is_redacted() -> None:
    app = create_app(review_config(), transport=echoing_upstream(200, stream=True))
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat(model="leaky", stream=True), headers=auth(KEY)
        )
    assert response.status_code == 200
    assert '"content":"hi"' in response.text
    assert UPSTREAM_KEY not in response.text
    assert "[redacted]" in response.text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_state_store_fail_closed_is_a_503_envelope_not_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{_closed_port()}/0"
    config = review_config(f"state: {{redis_url: '{url}', on_error: fail_closed, timeout_seconds: 0.2}}\n")
    app = create_app(config)
    async with app.router.lifespan_context(app), await _client(app) as client:
        chat_response = await client.post("/v1/chat/completions", json=chat(), headers=auth(KEY))
        routes = await client.get("/admin/routes", headers=auth(MASTER))
    for response in (chat_response, routes):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "state_store_unavailable"
        assert REDIS_PASSWORD not in response.text
    assert "unreachable" in caplog.text and REDIS_PASSWORD not in caplog.text


async def test_no_admin_route_is_described_to_anyone() -> None:
    app = create_app(review_config())
    async with app.router.lifespan_context(app), await _client(app) as client:
        for path in ("/docs", "/redoc"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
        # /openapi.json describes the client API only (gateway/openapi.py).
        document = (await client.get("/openapi.json")).json()
    assert "/v1/chat/completions" in document["paths"]
    assert not [path for path in document["paths"] if "admin" in path or "metrics" in path]


def _paths(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, included routers too."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        for r in inner.routes if inner is not None else [route]:
            for method in sorted(getattr(r, "methods", None) or ()):
                if method != "HEAD":
                    found.append(
                        (method, r.path.replace("{model:path}", "echo").replace("{request_id}", "x"))
                    )
    return found


PUBLIC = {"/health", "/ready", "/openapi.json"}


def _scoped(path: str) -> bool:
    """Routes of the scoped admin API (and its LiteLLM aliases): they know a virtual key, so refuse it 403."""
    return path.startswith(("/admin/v1/", "/key/", "/team/", "/spend/"))


async def test_every_route_but_the_probes_needs_a_key_and_admin_routes_the_master_key() -> None:
    # Every anonymous call is a failed admin login: the limit is raised so they stay 401s, not 429s.
    app = create_app(review_config("admin: {failed_auth_limit: 100000}\n", console=True))
    paths = _paths(app)
    assert ("GET", "/admin/usage") in paths and ("GET", "/metrics") in paths
    assert ("POST", "/graphql") in paths
    async with app.router.lifespan_context(app), await _client(app) as client:
        for method, path in paths:
            if path in PUBLIC or path.startswith("/console"):  # a session, not a key: the test below
                continue
            anonymous = await client.request(method, path, json={})
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.json()["error"]["type"] == "authentication_error"
            if path == "/graphql":  # any valid key: what each may read is decided field by field
                for key in (KEY, MASTER):
                    known = await client.request(method, path, headers=auth(key), json={})
                    assert known.status_code not in (401, 403) and known.status_code < 500, (path, known.text)
            elif not path.startswith(("/v1/", "/openai/")):  # client routes: any valid key
                virtual = await client.request(method, path, headers=auth(KEY))
                assert virtual.status_code == (403 if _scoped(path) else 401), (method, path, virtual.text)
                master = await client.request(method, path, headers=auth(MASTER))
                # The master key is let in (a made-up request id may be a 404, a reload a 409; never a 5xx).
                assert master.status_code not in (401, 403) and master.status_code < 500, (path, master.text)


CONSOLE_PUBLIC = {("GET", "/console/login"), ("POST", "/console/login"), ("GET", "/console/static/{name}")}
# Not pages: a script's EventSource reads them, so without a session they answer 401 (which stops the
# EventSource), not a redirect to the login page.
CONSOLE_STREAMS = {("GET", "/console/events")}


async def test_every_console_route_but_login_and_assets_needs_a_session_not_a_key() -> None:
    app = create_app(review_config("admin: {failed_auth_limit: 100000}\n", console=True))
    paths = [(m, p) for m, p in _paths(app) if p.startswith("/console")]
    assert ("GET", "/console") in paths and ("POST", "/console/keys") in paths
    assert set(paths) >= CONSOLE_PUBLIC
    async with app.router.lifespan_context(app), await _client(app) as client:
        for method, path in paths:
            if (method, path) in CONSOLE_PUBLIC:
                continue
            for headers in ({}, auth(KEY), auth(MASTER)):  # a bearer key is not a console session
                response = await client.request(method, path, headers=headers, data={"csrf": "x"})
                if method == "GET" and (method, path) not in CONSOLE_STREAMS:
                    assert response.status_code == 303, (method, path, response.text)
                    assert response.headers["location"] == "/console/login"
                else:
                    assert response.status_code == 401, (method, path, response.text)
                assert "gateway_console=" not in response.headers.get("set-cookie", "")
        # The public login page reveals nothing and lets nobody in without the form's token and a key.
        login = await client.post("/console/login", data={"key": MASTER})
        assert login.status_code == 403 and "gateway_console=" not in login.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "100"),
        ("max_tokens", 0),
        ("max_tokens", True),
        ("max_completion_tokens", 1.5),
        ("n", "2"),
        ("temperature", "hot"),
        ("top_p", [1]),
        ("stop", 5),
        ("stop", ["a", 1]),
        ("tools", {"type": "function"}),
    ],
)
async def test_wrong_parameter_types_are_400_naming_the_parameter(field: str, value: object) -> None:
    app = create_app(review_config())
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.post("/v1/chat/completions", json=chat(**{field: value}), headers=auth(KEY))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_embedding_dimensions_of_the_wrong_type_are_400() -> None:
    app = create_app(review_config())
    body = {"model": "echo", "input": "x", "dimensions": "big"}
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.post("/v1/embeddings", json=body, headers=auth(KEY))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"


async def test_message_content_of_the_wrong_type_is_400() -> None:
    app = create_app(review_config())
    body = {"model": "echo", "messages": [{"role": "user", "content": {"text": "x"}}]}
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=auth(KEY))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content"


def test_a_secret_in_a_wrong_typed_base_url_is_not_echoed_by_config_errors() -> None:
    text = CONFIG.replace("http://upstream.test/v1", UPSTREAM_KEY)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "review.yaml")
    assert "providers[1].base_url" in str(caught.value)
    assert UPSTREAM_KEY not in str(caught.value)


def test_a_stream_abandoned_before_its_first_chunk_releases_everything_it_holds() -> None:
    # A slow first token: the client gives up (closes the socket) before the answer starts.
    slow = CONFIG.replace("options: {chunk_size: 2}", "options: {chunk_size: 2, latency_ms: 200}")
    app = create_app(parse_config(slow, "review.yaml"))
    body = json.dumps(chat("a stream nobody reads", stream=True)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with run_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(head + body)
        master = {"authorization": f"Bearer {MASTER}"}
        deadline = time.monotonic() + 10
        while True:
            routes = httpx.get(f"{url}/admin/routes", headers=master).json()["models"]["echo"]["routes"]
            budgets = httpx.get(f"{url}/admin/budgets", headers=master).json()["budgets"]
            settled = routes[0]["in_flight"] == 0 and all(float(b["reserved_usd"]) == 0 for b in budgets)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # Nothing counted in flight, nothing left reserved, and the concurrency lease (max_concurrent: 1)
        # was given back: a new request is admitted.
        assert settled, (routes, budgets)
        response = httpx.post(f"{url}/v1/chat/completions", json=chat(), headers=auth(KEY), timeout=10)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["nan", "infinity", "nested"],
)
async def test_bodies_python_parses_but_json_forbids_or_too_deep_are_400(raw: bytes) -> None:
    config = review_config("server: {max_body_bytes: 1000000}\n")
    app = create_app(config)
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.post("/v1/chat/completions", content=raw, headers=auth(KEY))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("The request body is not valid JSON")


async def test_a_usage_bound_at_the_end_of_the_calendar_is_400_not_500() -> None:
    app = create_app(review_config())
    async with app.router.lifespan_context(app), await _client(app) as client:
        response = await client.get("/admin/usage?to=9999-12-31", headers=auth(MASTER))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "to"


def test_the_redactor_covers_every_configured_secret_and_keeps_old_ones_after_a_reload() -> None:
    from gateway.redact import Redactor

    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"
    config = review_config(f"state: {{redis_url: '{url}'}}\n")
    redactor = Redactor.from_config(config)
    text = f"{MASTER} {KEY} {UPSTREAM_KEY} {REDIS_PASSWORD} ok"
    assert redactor.text(text) == "[redacted] [redacted] [redacted] [redacted] ok"
    rotated = redactor.extended(["sk-rotated-upstream-0005"])
    assert rotated.text(f"{UPSTREAM_KEY} sk-rotated-upstream-0005") == "[redacted] [redacted]"
