"""The admin console (/console) in process: off by default, login, sessions, CSRF, pages and key changes.

The browser test (tests/site/test_console_browser.py) drives the same pages in Chromium.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
from gateway_testing import auth, chat

from gateway.app import create_app
from gateway.config import GatewayConfig, load_config, parse_config

pytestmark = pytest.mark.anyio

MASTER = "sk-console-master-0001"
ALICE = "sk-console-alice-0002"
VIEWER = "sk-console-viewer-0003"

CONFIG = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: alice, key: {ALICE}, budget: {{limit_usd: 1.0, period: total}}}}]
admin:
  keys: [{{name: viewer, key: {VIEWER}, scopes: [usage:read, keys:read]}}]
  failed_auth_limit: 3
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 1.0, output_per_1m: 1.0}}}}]
usage: {{database: ":memory:"}}
"""
ON = "features: {console: {enabled: true}}\n"


def console_config(extra: str = ON) -> GatewayConfig:
    return parse_config(CONFIG + extra, "console.yaml")


@asynccontextmanager
async def console(
    config: GatewayConfig | None = None, base_url: str = "http://gateway"
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config or console_config())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client,
    ):
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def log_in(client: httpx.AsyncClient, key: str = MASTER) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post("/console/login", data={"csrf": csrf_of(form.text), "key": key})


async def test_the_console_is_off_by_default() -> None:
    assert console_config("").features.console.enabled is False
    async with console(console_config("")) as client:
        for path in ("/console", "/console/login", "/console/static/console.css"):
            assert (await client.get(path)).status_code == 404


async def test_unknown_console_settings_are_config_errors_naming_the_key() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"features\.console\.enable"):
        console_config("features: {console: {enable: true}}\n")


async def test_login_sets_a_strict_httponly_session_cookie_holding_a_random_id_not_the_key() -> None:
    async with console() as client:
        page = await client.get("/console/login")
        assert page.status_code == 200
        # Every field has a label; the key is a password field.
        assert '<label for="key">' in page.text and 'id="key" name="key" type="password"' in page.text
        response = await client.post("/console/login", data={"csrf": csrf_of(page.text), "key": MASTER})
        assert response.status_code == 303 and response.headers["location"] == "/console"
        [session] = [c for c in response.headers.get_list("set-cookie") if c.startswith("gateway_console=")]
        assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/console" in session
        assert "Secure" not in session  # plain HTTP: a Secure cookie would never come back
        assert MASTER not in session and MASTER not in response.text
        overview = await client.get("/console")
        assert overview.status_code == 200 and "Traffic" in overview.text
        assert "default-src 'none'" in overview.headers["content-security-policy"]
        assert overview.headers["cache-control"] == "no-store"


async def test_over_https_the_session_cookie_is_secure() -> None:
    async with console(base_url="https://gateway") as client:
        response = await log_in(client)
        [session] = [c for c in response.headers.get_list("set-cookie") if c.startswith("gateway_console=")]
        assert "Secure" in session


async def test_a_login_without_the_forms_csrf_token_is_refused() -> None:
    async with console() as client:
        await client.get("/console/login")
        response = await client.post("/console/login", data={"csrf": "forged", "key": MASTER})
        assert response.status_code == 403
        client.cookies.clear()  # no cookie and an empty token must not match each other
        response = await client.post("/console/login", data={"csrf": "", "key": MASTER})
        assert response.status_code == 403
        assert "gateway_console=" not in " ".join(response.headers.get_list("set-cookie"))
        assert (await client.get("/console")).status_code == 303


async def test_wrong_keys_count_as_failed_admin_logins_and_are_blocked_like_the_admin_api() -> None:
    async with console() as client:
        wrong = await log_in(client, "sk-not-a-key-at-all")
        assert wrong.status_code == 401 and "not an admin key" in wrong.text
        virtual = await log_in(client, ALICE)
        assert virtual.status_code == 403 and "virtual key" in virtual.text
        statuses = [(await log_in(client, "sk-still-wrong-000")).status_code for _ in range(3)]
        assert statuses[-1] == 429
        # Blocked for the window even with the right key, and the admin API shares the count.
        blocked = await log_in(client)
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "60"
        assert (await client.get("/admin/v1/keys", headers=auth(MASTER))).status_code == 429


async def test_pages_need_a_session_and_forms_need_its_csrf_token() -> None:
    async with console() as client:
        for path in ("/console", "/console/keys", "/console/spend", "/console/routes", "/console/requests"):
            anonymous = await client.get(path)
            assert anonymous.status_code == 303 and anonymous.headers["location"] == "/console/login"
            # An admin key as a bearer header is not a console session.
            assert (await client.get(path, headers=auth(MASTER))).status_code == 303
        assert (await client.post("/console/keys", data={"name": "x"})).status_code == 401
        await log_in(client)
        forged = await client.post("/console/keys", data={"csrf": "forged", "name": "mallory"})
        assert forged.status_code == 403
        listing = (await client.get("/admin/v1/keys", headers=auth(MASTER))).json()["data"]
        assert "mallory" not in [k["name"] for k in listing]


async def test_create_shows_the_secret_once_the_key_works_and_revoke_turns_it_off() -> None:
    async with console() as client:
        await log_in(client)
        keys_page = await client.get("/console/keys")
        created = await client.post(
            "/console/keys",
            data={"csrf": csrf_of(keys_page.text), "name": "carol", "models": "echo", "rpm": "30"},
        )
        assert created.status_code == 201
        secret = re.search(r'id="secret"[^>]*value="([^"]+)"[^>]*data-key-id="([^"]+)"', created.text)
        assert secret, created.text
        value, key_id = secret.groups()
        # Created through the admin library: the admin API sees it, audited with the console's admin.
        listed = (await client.get(f"/admin/v1/keys/{key_id}", headers=auth(MASTER))).json()
        assert listed["name"] == "carol" and listed["models"] == ["echo"] and listed["rpm"] == 30
        audit = (await client.get("/admin/v1/audit", headers=auth(MASTER))).json()["data"]
        assert [(a["action"], a["actor"]["name"]) for a in audit] == [("key.create", "master")]
        # The secret is never shown again.
        again = await client.get("/console/keys")
        assert value not in again.text and "carol" in again.text
        # A revoke button for the runtime key, none for the config-file key (the API refuses those).
        assert f'action="/console/keys/{key_id}/revoke"' in again.text
        assert again.text.count("/revoke") == 1 and again.text.count("/rotate") == 1
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth(value))
        ).status_code == 200
        revoked = await client.post(f"/console/keys/{key_id}/revoke", data={"csrf": csrf_of(again.text)})
        assert revoked.status_code == 200 and "Revoked carol" in revoked.text
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth(value))
        ).status_code == 401


async def test_a_bad_create_form_is_a_400_naming_the_field_and_keeps_what_was_typed() -> None:
    async with console() as client:
        await log_in(client)
        csrf = csrf_of((await client.get("/console/keys")).text)
        response = await client.post("/console/keys", data={"csrf": csrf, "name": "dave", "rpm": "lots"})
        assert response.status_code == 400
        assert "rpm:" in response.text and 'value="dave"' in response.text
        unknown = await client.post("/console/keys", data={"csrf": csrf, "name": "erin", "models": "nope"})
        assert unknown.status_code == 400 and "nope" in unknown.text


async def test_pages_show_the_ledger_budgets_and_routes() -> None:
    async with console() as client:
        for i in range(3):
            response = await client.post(
                "/v1/chat/completions",
                json=chat(f"hi {i}"),
                headers={**auth(ALICE), "x-request-id": f"req-{i}"},
            )
            assert response.status_code == 200
        await log_in(client)
        overview = (await client.get("/console")).text
        # Last hour: 3 requests, 0 errors.
        assert re.search(r"Last hour</th><td class=\"num\">3</td><td class=\"num\">0</td>", overview), (
            overview
        )
        log = (await client.get("/console/requests")).text
        assert all(f'data-request-id="req-{i}"' in log for i in range(3))
        assert "mock/" in log and ">200<" in log.replace(" ", "").replace("\n", "")
        filtered = (await client.get("/console/requests?key=nobody")).text
        assert "req-0" not in filtered and "No requests recorded for this key" in filtered
        spend = (await client.get("/console/spend")).text
        budgets = (await client.get("/admin/v1/budgets", headers=auth(MASTER))).json()["budgets"]
        [alice] = [b for b in budgets if b["name"] == "alice"]
        assert f"spent ${alice['spent_usd']}" in spend and f"remaining ${alice['remaining_usd']}" in spend
        routes = (await client.get("/console/routes")).text
        assert "closed" in routes and "echo" in routes


async def test_a_key_without_a_pages_scope_sees_403_and_cannot_write() -> None:
    async with console() as client:
        await log_in(client, VIEWER)
        assert (await client.get("/console/requests")).status_code == 200
        assert (await client.get("/console/spend")).status_code == 403  # budgets:read
        assert (await client.get("/console/routes")).status_code == 403  # routes:read
        keys_page = await client.get("/console/keys")
        assert keys_page.status_code == 200 and 'id="create"' not in keys_page.text
        created = await client.post("/console/keys", data={"csrf": csrf_of(keys_page.text), "name": "x"})
        assert created.status_code == 403 and "keys:write" in created.text


async def test_logout_ends_the_session_on_the_server() -> None:
    async with console() as client:
        await log_in(client)
        cookie = client.cookies["gateway_console"]
        page = await client.get("/console")
        out = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
        # Replaying the old cookie does not get back in.
        client.cookies.set("gateway_console", cookie, path="/console")
        assert (await client.get("/console")).status_code == 303


async def test_static_assets_are_served_by_the_gateway_and_nothing_else_is() -> None:
    async with console() as client:
        css = await client.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (
            "prefers-color-scheme: dark" in css.text and "@import" not in css.text and "url(" not in css.text
        )
        for name in ("../config.py", "login.html", "nope.css"):
            assert (await client.get(f"/console/static/{name}")).status_code == 404


async def test_a_reload_that_turns_the_console_off_makes_it_404(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG + ON)
    app = create_app(load_config(path), config_path=path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        await log_in(client)
        assert (await client.get("/console")).status_code == 200
        path.write_text(CONFIG)
        reloaded = await client.post("/admin/reload", headers=auth(MASTER))
        assert reloaded.status_code == 200, reloaded.text
        assert (await client.get("/console")).status_code == 404
        assert (await client.get("/console/login")).status_code == 404


async def test_the_openai_sdk_uses_a_key_created_in_the_console() -> None:
    app = create_app(console_config())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        await log_in(client)
        csrf = csrf_of((await client.get("/console/keys")).text)
        created = await client.post("/console/keys", data={"csrf": csrf, "name": "sdk"})
        secret = re.search(r'id="secret"[^>]*value="([^"]+)"', created.text)
        assert secret
        sdk = openai.AsyncOpenAI(
            api_key=secret.group(1),
            base_url="http://gateway/v1",
            http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
            max_retries=0,
        )
        answer = await sdk.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
        log = (await client.get("/console/requests?key=sdk")).text
        assert "sdk" in log and "echo" in log and "No requests recorded" not in log


async def test_a_reload_cannot_turn_the_console_on_it_says_a_restart_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(load_config(path), config_path=path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        path.write_text(CONFIG + ON)
        reloaded = await client.post("/admin/reload", headers=auth(MASTER))
        assert reloaded.status_code == 422, reloaded.text
        assert reloaded.json()["error"]["code"] == "restart_required"
        assert reloaded.json()["error"]["problems"] == [
            "features.console.enabled: the console is mounted at start, restart the gateway to turn it on"
        ]
        assert (await client.get("/console/login")).status_code == 404


async def test_names_are_escaped_and_forms_must_be_url_encoded_and_small() -> None:
    async with console() as client:
        await log_in(client)
        csrf = csrf_of((await client.get("/console/keys")).text)
        evil = '<script>alert("x")</script>'
        created = await client.post("/console/keys", data={"csrf": csrf, "name": evil})
        assert created.status_code == 201
        assert evil not in created.text and "&lt;script&gt;" in created.text
        as_json = await client.post("/console/keys", json={"csrf": csrf, "name": "json"})
        assert as_json.status_code == 415
        huge = await client.post("/console/keys", data={"csrf": csrf, "name": "x" * 70_000})
        assert huge.status_code == 413
        names = [k["name"] for k in (await client.get("/admin/v1/keys", headers=auth(MASTER))).json()["data"]]
        assert "json" not in names and "x" * 70_000 not in names


async def test_rotate_shows_the_new_secret_once_and_the_old_one_works_for_the_grace_period() -> None:
    async with console() as client:
        await log_in(client)
        csrf = csrf_of((await client.get("/console/keys")).text)
        created = await client.post("/console/keys", data={"csrf": csrf, "name": "frank"})
        found = re.search(r'id="secret"[^>]*value="([^"]+)"[^>]*data-key-id="([^"]+)"', created.text)
        assert found
        old, key_id = found.groups()
        rotated = await client.post(f"/console/keys/{key_id}/rotate", data={"csrf": csrf})
        assert (
            rotated.status_code == 200 and "rotated" in rotated.text and "keeps working until" in rotated.text
        )
        new = re.search(r'id="secret"[^>]*value="([^"]+)"', rotated.text)
        assert new and new.group(1) != old
        for secret in (old, new.group(1)):  # admin.rotation_grace_s is an hour by default
            used = await client.post("/v1/chat/completions", json=chat(), headers=auth(secret))
            assert used.status_code == 200
        audit = (await client.get("/admin/v1/audit", headers=auth(MASTER))).json()["data"]
        assert [a["action"] for a in audit] == ["key.create", "key.rotate"]
        # A config-file key cannot be rotated here any more than through the API.
        config_key = await client.post("/console/keys/cfg_nope/rotate", data={"csrf": csrf})
        assert config_key.status_code == 404


async def test_the_overview_shows_latency_percentiles_of_the_windows_histogram() -> None:
    from gateway.console.charts import histogram_percentile
    from gateway.console.data import usage_stage
    from gateway.usage_sql import LATENCY_EDGES_MS

    app = create_app(console_config())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        for i in range(3):
            response = await client.post("/v1/chat/completions", json=chat(f"hi {i}"), headers=auth(ALICE))
            assert response.status_code == 200
        await log_in(client)
        overview = (await client.get("/console")).text
        ledger = usage_stage(app.state.gateway).ledger
        latencies = sorted(r.latency_ms for r in await ledger.records())
        assert len(latencies) == 3
        # Last hour: 3 requests, 0 errors, then p50 and p99 as the histogram of the three estimates them.
        counts = [sum(1 for v in latencies if v <= edge) for edge in LATENCY_EDGES_MS]
        p50, p99 = (histogram_percentile(counts, 3, f) for f in (0.5, 0.99))
        assert p50 is not None and p99 is not None and p50 <= p99
        expected = (
            rf"Last hour</th><td class=\"num\">3</td><td class=\"num\">0</td>"
            rf"<td class=\"num\">{p50:.1f}</td><td class=\"num\">{p99:.1f}</td>"
        )
        assert re.search(expected, overview), overview


async def test_the_config_page_redacts_every_secret_and_reload_shows_changes_or_problems(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.yaml"
    # A provider's API key: a secret of another kind than the gateway's own keys.
    upstream_secret = "sk-upstream-provider-secret-0009"
    extra = f"  - {{name: paid, type: openai, base_url: 'http://127.0.0.1:9', api_key: {upstream_secret}}}\n"
    providers = "providers:\n  - {name: mock, type: mock}\n" + extra
    text = CONFIG.replace("providers: [{name: mock, type: mock}]\n", providers)
    path.write_text(text + ON)
    app = create_app(load_config(path), config_path=path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        await log_in(client)
        page = await client.get("/console/config")
        assert page.status_code == 200
        version = app.state.gateway.runtime.version
        shown = html.unescape(page.text)
        assert version in shown and '"echo"' in shown and '"paid"' in shown
        for secret in (MASTER, ALICE, VIEWER, upstream_secret):
            assert secret not in page.text

        # A broken file: the problem is shown and the running config stays.
        path.write_text(text + ON + "models: not-a-list\n")
        broken = await client.post("/console/config/reload", data={"csrf": csrf_of(page.text)})
        assert broken.status_code == 422
        assert "Not reloaded (invalid)" in broken.text
        problems = re.search(r'<ul class="problems"[^>]*>(.*?)</ul>', broken.text, re.S)
        assert problems and "models" in problems.group(1), broken.text
        assert app.state.gateway.runtime.version == version
        assert all(s not in broken.text for s in (MASTER, ALICE, upstream_secret))

        # A good change: the summary names what changed.
        path.write_text(text.replace("name: echo", "name: echo2") + ON)
        reloaded = await client.post("/console/config/reload", data={"csrf": csrf_of(page.text)})
        assert reloaded.status_code == 200, reloaded.text
        assert "Reloaded: version" in reloaded.text and "models +[echo2] -[echo]" in reloaded.text
        assert app.state.gateway.runtime.version != version

        # Without the CSRF token nothing is reloaded.
        refused = await client.post("/console/config/reload", data={"csrf": "wrong"})
        assert refused.status_code == 403


async def test_the_config_page_needs_the_config_reload_scope() -> None:
    async with console() as client:
        await log_in(client, VIEWER)
        page = await client.get("/console/config")
        assert page.status_code == 403 and "config:reload" in page.text
        csrf = csrf_of(page.text)
        refused = await client.post("/console/config/reload", data={"csrf": csrf})
        assert refused.status_code == 403


async def test_the_request_log_filters_by_model_status_and_cache_status() -> None:
    providers = (
        "providers: [{name: mock, type: mock}, {name: broken, type: mock, options: {fail_rate: 1.0}}]\n"
    )
    broken = "  - {name: down, routes: [{provider: broken}]}\n"
    text = CONFIG.replace("providers: [{name: mock, type: mock}]\n", providers)
    text = text.replace("models: [", "models:\n" + broken + "  - ").replace("}}]\nusage", "}}\nusage")
    text += "features: {console: {enabled: true}, cache: {}}\n"
    async with console(parse_config(text, "console.yaml")) as client:
        for model, rid in (("echo", "ok-1"), ("echo", "ok-2"), ("down", "bad-1")):
            headers = {**auth(ALICE), "x-request-id": rid}
            body = {**chat("same question"), "model": model}
            await client.post("/v1/chat/completions", json=body, headers=headers)
        await log_in(client)

        async def shown(query: str) -> set[str]:
            page = await client.get(f"/console/requests?{query}")
            assert page.status_code == 200, page.text
            return set(re.findall(r'data-request-id="([^"]+)"', page.text))

        assert await shown("") == {"ok-1", "ok-2", "bad-1"}
        assert await shown("model=down") == {"bad-1"}
        assert await shown("status=5xx") == {"bad-1"}
        assert await shown("status=503") == {"bad-1"}
        assert await shown("status=200") == {"ok-1", "ok-2"}
        # The second identical question is answered from the cache.
        assert await shown("cache=HIT") == {"ok-2"}
        assert await shown("model=echo&cache=MISS") == {"ok-1"}
        assert await shown("model=echo&status=4xx") == set()
        bad = await client.get("/console/requests?status=oops")
        assert bad.status_code == 400 and "status:" in bad.text
        bad = await client.get("/console/requests?cache=maybe")
        assert bad.status_code == 400 and "cache:" in bad.text


def _next_rows(lines: Iterator[str]) -> str:
    """The html of the next ``rows`` event of an SSE stream (skipping comments and ``retry``)."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "rows":
            html_text: str = json.loads(line.removeprefix("data: "))["html"]
            return html_text
    raise AssertionError("the stream ended")


def test_live_updates_stream_new_requests_and_counters_to_a_logged_in_console() -> None:
    from uvicorn_server import run_server

    app = create_app(console_config())
    # The timeout only stops a broken stream from hanging the test; nothing is asserted about time.
    with run_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        assert httpx.get(f"{base}/console/events?page=requests").status_code == 401
        form = client.get("/console/login")
        client.post("/console/login", data={"csrf": csrf_of(form.text), "key": MASTER})
        assert client.get("/console/events?page=keys").status_code == 400
        assert client.get("/console/events?page=requests&status=oops").status_code == 400
        page = client.get("/console")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/console/static/console.js" defer></script>' in page.text
        assert 'data-live="/console/events?page=overview&amp;window=hour"' in page.text
        assert "EventSource" in client.get("/console/static/console.js").text

        with client.stream("GET", "/console/events?page=requests&model=echo") as log:
            assert log.headers["content-type"].startswith("text/event-stream")
            lines = log.iter_lines()
            assert "No requests recorded" in _next_rows(lines)
            headers = {**auth(ALICE), "x-request-id": "live-1"}
            assert httpx.post(f"{base}/v1/chat/completions", json=chat("hi"), headers=headers).is_success
            assert 'data-request-id="live-1"' in _next_rows(lines)

        with client.stream("GET", "/console/events?page=overview") as overview:
            lines = overview.iter_lines()
            assert re.search(r'Last hour</th><td class="num">1</td>', _next_rows(lines))
            assert httpx.post(f"{base}/v1/chat/completions", json=chat("hi"), headers=auth(ALICE)).is_success
            assert re.search(r'Last hour</th><td class="num">2</td>', _next_rows(lines))
            # A shutdown's drain ends the stream (it would otherwise hold the drain to its deadline).
            app.state.gateway.activity.draining = True
            rest = list(lines)  # returns: the stream ended
            assert not any(line.startswith(("event:", "data:")) for line in rest), rest
            app.state.gateway.activity.draining = False

        # One session holds at most MAX_STREAMS_PER_SESSION streams; closing one frees its place.
        from gateway.routes.console import MAX_STREAMS_PER_SESSION

        with ExitStack() as open_streams:
            readers = []  # held: a line iterator's garbage collection closes its response
            for _ in range(MAX_STREAMS_PER_SESSION):
                stream = open_streams.enter_context(client.stream("GET", "/console/events?page=overview"))
                readers.append(stream.iter_lines())
                _next_rows(readers[-1])  # its generator runs: it is counted
            assert client.get("/console/events?page=overview").status_code == 429
        # The server notices the closed streams on its own schedule: poll (bounded) until a place is free.
        for _ in range(300):
            with client.stream("GET", "/console/events?page=overview") as again:
                if again.status_code == 200:
                    break
                assert again.status_code == 429
            time.sleep(0.1)
        assert again.status_code == 200

        # A session that ended (logout) cannot open a stream.
        csrf = csrf_of(client.get("/console").text)
        client.post("/console/logout", data={"csrf": csrf})
        assert client.get("/console/events?page=overview").status_code == 401
