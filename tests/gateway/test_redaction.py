"""Secrets: redaction by configured VALUE (and near-misses of it) wherever it appears, and virtual keys held
only as digests after the config is loaded."""

from __future__ import annotations

import gc
import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.redact import Redactor

pytestmark = pytest.mark.anyio

MASTER = "sk-redact-master-0001"
KEY = "sk-redact-alice-0002"
UPSTREAM_KEY = "sk-proj-Zq8vR2kT9wLm4xPq7s"  # random-looking, like a real key
HONEYCOMB = "hcaik_01hx9y8zt4v6w2q0r3s5u7m9n"
COOKIE = "session=c0ok1e-v4lue-9f8e7d6c5b4a"
CUSTOM = "Token t0k3n-f0r-cust0m-auth-77"
UPTRACE = "https://Uq7xTk2pLs9wVb4n@api.uptrace.dev/42"

CONFIG = f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {KEY}}}
providers:
  - name: up
    type: openai
    base_url: http://upstream.test/v1
    api_key: {UPSTREAM_KEY}
    options:
      headers:
        x-honeycomb-team: {HONEYCOMB}
        cookie: "{COOKIE}"
        x-custom-auth: "{CUSTOM}"
models:
  - {{name: leaky, routes: [{{provider: up, model: leaky}}]}}
features:
  routing: {{max_attempts: 1}}
  tracing: {{exporter: none, headers: {{uptrace-dsn: "{UPTRACE}"}}}}
usage: {{database: ":memory:"}}
"""

SECRETS = (MASTER, KEY, UPSTREAM_KEY, HONEYCOMB, COOKIE, CUSTOM, UPTRACE)


def config() -> GatewayConfig:
    return parse_config(CONFIG, "redact.yaml")


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def fragments(secret: str) -> Iterator[str]:
    """Near-misses an upstream may quote: the secret minus a few characters at either end."""
    yield secret
    yield secret[:-2]
    yield secret[2:]
    yield secret[3:-3]


def leaked(text: str) -> list[str]:
    return [f for s in SECRETS for f in fragments(s) if f in text]


def quoting_upstream(quote: str, *, stream: bool = False) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if stream:
            body = f'data: {{"error": {{"message": "stream failed: {quote}"}}}}\n\n'
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(400, json={"error": {"message": f"Incorrect API key provided: {quote}."}})

    return httpx.MockTransport(handle)


async def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_admin_config_hides_every_configured_secret_value_whatever_its_name() -> None:
    app = create_app(config())
    async with app.router.lifespan_context(app), await _client(app) as client:
        reply = await client.get("/admin/config", headers=auth(MASTER))
    assert reply.status_code == 200
    assert leaked(reply.text) == []
    headers = reply.json()["config"]["providers"][0]["options"]["headers"]
    assert set(headers) == {"x-honeycomb-team", "cookie", "x-custom-auth"}  # names stay, values go


@pytest.mark.parametrize(
    "quote",
    [
        UPSTREAM_KEY[:-2],
        UPSTREAM_KEY[2:],
        UPSTREAM_KEY[:10] + "****" + UPSTREAM_KEY[-4:],
        f"cookie {COOKIE[:-2]}",
        HONEYCOMB[1:-1],
        UPTRACE.split("@")[0].split("//")[1][:-2],
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_error_quoting_a_near_miss_of_a_secret_is_redacted(
    quote: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(config(), transport=quoting_upstream(quote, stream=stream))
    body = {"model": "leaky", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    async with app.router.lifespan_context(app), await _client(app) as client:
        reply = await client.post("/v1/chat/completions", json=body, headers=auth(KEY))
    assert "[redacted]" in reply.text, reply.text
    for piece in (quote, *[quote[i : i + 8] for i in range(0, len(quote) - 8, 4)]):
        if len(piece) >= 8 and any(piece in s for s in SECRETS):
            assert piece not in reply.text, (piece, reply.text)
            assert piece not in caplog.text


def test_near_misses_are_redacted_but_ordinary_words_stay() -> None:
    redactor = Redactor([UPSTREAM_KEY, COOKIE, UPTRACE])
    for near in (UPSTREAM_KEY[:-2], UPSTREAM_KEY[3:], UPSTREAM_KEY[5:14]):
        out = redactor.text(f"key <{near}>!")
        assert out.startswith("key <") and out.endswith("[redacted]>!"), out
        assert not any(
            near[i : i + 8] in out for i in range(len(near) - 7) if near[i : i + 8] in UPSTREAM_KEY
        )
    # Seven characters in common is not a near-miss, and URL syntax shared with a DSN is no secret.
    text = f"see https://api.uptrace.dev/docs, code {UPSTREAM_KEY[8:15]}"
    assert redactor.text(text) == text


def test_virtual_keys_are_redacted_by_digest_when_quoted_exactly() -> None:
    redactor = Redactor.from_config(config())
    assert redactor.text(f"got {KEY} and Bearer {MASTER}.") == "got [redacted] and Bearer [redacted]."


def _reachable_strings(root: object) -> Iterator[str]:
    """Every str reachable from ``root``, not descending into modules, classes or module globals."""
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    seen: set[int] = set()
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            yield item
            continue
        if isinstance(item, types.ModuleType | type) or id(item) in module_dicts:
            continue
        if isinstance(item, bytes | int | float):
            continue
        todo.extend(gc.get_referents(item))


async def test_virtual_keys_and_the_master_key_are_held_only_as_digests() -> None:
    app = create_app(config())
    async with app.router.lifespan_context(app), await _client(app) as client:
        assert (await client.get("/v1/models", headers=auth(KEY))).status_code == 200
        assert (await client.get("/admin/features", headers=auth(MASTER))).status_code == 200
        held = [s for s in _reachable_strings(app) if KEY in s or MASTER in s]
    assert held == []
    # Upstream credentials are sent upstream, so they are held: the walk does find those.
    assert any(UPSTREAM_KEY in s for s in _reachable_strings(app))


def test_a_digest_in_the_config_authenticates_the_key_but_is_not_itself_a_key() -> None:
    import hashlib

    digest = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    loaded = parse_config(CONFIG.replace(f"key: {KEY}", f"key: '{digest}'"))
    from gateway.auth import KeyRing

    ring = KeyRing(loaded.auth)
    alice = ring.identify(KEY)
    assert alice is not None and alice.name == "alice"
    assert ring.identify(digest) is None  # knowing the digest is not knowing the key
