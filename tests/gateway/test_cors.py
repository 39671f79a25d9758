"""CORS (``server.cors``): config validation, preflight and actual requests, reload, and ``created``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from gateway_testing import KEY, TEST_CONFIG, auth, chat, serve

from gateway.app import create_app
from gateway.config import ConfigError, load_config, parse_config

ALLOWED = "https://app.example"
REFUSED = "https://evil.example"

pytestmark = pytest.mark.anyio

CORS = f"""
  cors:
    allow_origins: ["{ALLOWED}"]
    max_age: 120
"""


def with_cors(cors: str = CORS) -> str:
    return TEST_CONFIG.replace("  max_body_bytes: 4096\n", "  max_body_bytes: 4096\n" + cors.lstrip("\n"), 1)


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.yaml")
    return str(info.value)


def test_cors_is_off_by_default() -> None:
    assert parse_config(TEST_CONFIG).server.cors is None


def test_a_bad_origin_is_named_by_its_key() -> None:
    message = problems(with_cors('  cors: {allow_origins: ["https://ok.example", "https://app.example/"]}\n'))
    assert "server.cors.allow_origins[1]" in message
    assert "not an origin" in message


def test_wildcard_origin_with_credentials_is_refused() -> None:
    message = problems(with_cors('  cors: {allow_origins: ["*"], allow_credentials: true}\n'))
    assert "server.cors.allow_origins" in message
    assert "allow_credentials" in message


def test_unknown_cors_key_and_missing_origins_are_named() -> None:
    message = problems(with_cors("  cors: {allow_origin: ['*']}\n"))
    assert "server.cors.allow_origin: unknown key" in message
    assert "server.cors.allow_origins: required key is missing" in message


def test_wildcard_without_credentials_is_accepted() -> None:
    cors = parse_config(with_cors('  cors: {allow_origins: ["*"]}\n')).server.cors
    assert cors is not None and cors.allow_origins == ["*"]


def preflight(origin: str, headers: str = "authorization,content-type") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": headers,
    }


async def test_without_cors_options_is_still_405_and_no_cors_headers() -> None:
    async with serve(parse_config(TEST_CONFIG)) as client:
        answer = await client.options("/v1/chat/completions", headers=preflight(ALLOWED))
        assert answer.status_code == 405
        actual = await client.post("/v1/chat/completions", json=chat(), headers={**auth(), "origin": ALLOWED})
        assert actual.status_code == 200
        assert "access-control-allow-origin" not in actual.headers


async def test_preflight_is_answered_without_a_key_for_an_allowed_origin() -> None:
    headers = "authorization,content-type,x-api-key,anthropic-version,anthropic-beta"
    async with serve(parse_config(with_cors())) as client:
        answer = await client.options("/v1/messages", headers=preflight(ALLOWED, headers))
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in answer.headers["access-control-allow-methods"]
        allowed = answer.headers["access-control-allow-headers"].lower()
        for name in headers.split(","):
            assert name in allowed
        assert answer.headers["access-control-max-age"] == "120"


async def test_preflight_from_a_refused_origin_is_refused() -> None:
    async with serve(parse_config(with_cors())) as client:
        answer = await client.options("/v1/chat/completions", headers=preflight(REFUSED))
        assert answer.status_code == 400
        assert "access-control-allow-origin" not in answer.headers


async def test_actual_request_exposes_the_gateway_headers_to_an_allowed_origin_only() -> None:
    async with serve(parse_config(with_cors())) as client:
        ok = await client.post("/v1/chat/completions", json=chat(), headers={**auth(), "origin": ALLOWED})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ALLOWED
        exposed = ok.headers["access-control-expose-headers"].lower()
        for name in ("x-request-id", "retry-after", "x-ratelimit-remaining-requests", "x-gateway-route"):
            assert name in exposed
        # An error the browser must be able to read carries the headers too.
        denied = await client.get("/v1/models", headers={"origin": ALLOWED})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ALLOWED

        refused = await client.post(
            "/v1/chat/completions", json=chat(), headers={**auth(), "origin": REFUSED}
        )
        assert "access-control-allow-origin" not in refused.headers


async def test_a_reload_changes_cors_from_the_next_request(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(with_cors())
    app = create_app(load_config(path), config_path=path)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        first = await client.options("/v1/chat/completions", headers=preflight(REFUSED))
        assert first.status_code == 400
        path.write_text(with_cors(f'  cors: {{allow_origins: ["{ALLOWED}", "{REFUSED}"]}}\n'))
        reload = await client.post("/admin/reload", headers={"authorization": "Bearer sk-test-master-0003"})
        assert reload.status_code == 200, reload.text
        second = await client.options("/v1/chat/completions", headers=preflight(REFUSED))
        assert second.status_code == 200
        assert second.headers["access-control-allow-origin"] == REFUSED


async def test_models_carry_the_time_the_config_was_loaded() -> None:
    before = int(time.time())
    async with serve(parse_config(TEST_CONFIG)) as client:
        after = int(time.time())
        listed = (await client.get("/v1/models", headers=auth(KEY))).json()["data"]
        one = (await client.get("/v1/models/echo", headers=auth(KEY))).json()
    assert listed and all(before <= m["created"] <= after for m in listed)
    assert one["created"] == listed[0]["created"]
