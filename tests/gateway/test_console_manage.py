"""The console's team view on the spend page, key limit editing, and the trace id in the request log."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import openai
import pytest
from gateway_testing import auth, chat
from test_console import MASTER, console, csrf_of, log_in

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config

pytestmark = pytest.mark.anyio

LAB = "sk-console-lab-0004"
ACCOUNTANT = "sk-console-accountant-0005"

CONFIG = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: labkey, key: {LAB}, team: lab}}]
admin:
  keys: [{{name: accountant, key: {ACCOUNTANT}, scopes: [budgets:read]}}]
teams: [{{name: lab, budget: {{limit_usd: 2.0, period: total, soft_limit: 0.5}}}}]
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 100.0, output_per_1m: 100.0}}}}]
usage: {{database: ":memory:"}}
features: {{console: {{enabled: true}}}}
"""


def config(extra: str = "") -> GatewayConfig:
    return parse_config(CONFIG + extra, "console.yaml")


def team_item(page: str, name: str) -> str:
    found = re.search(rf'<li data-team="{name}">(.*?)</li>', page, re.S)
    assert found, page
    return found.group(1)


async def test_the_spend_page_shows_each_team_with_its_budget_bar_and_usage() -> None:
    async with console(config()) as client:
        assert (await client.post("/v1/chat/completions", json=chat("hi"), headers=auth(LAB))).is_success
        created = await client.post("/admin/v1/teams", json={"name": "ops", "rpm": 7}, headers=auth(MASTER))
        assert created.status_code == 201
        budget = (await client.get("/admin/v1/teams/lab/budget", headers=auth(MASTER))).json()
        await log_in(client)
        page = (await client.get("/console/spend")).text
        lab = team_item(page, "lab")
        # The same figures as the admin API's team budget, and the soft limit drawn as a tick.
        assert f"spent ${budget['spent_usd']}" in lab and f"remaining ${budget['remaining_usd']}" in lab
        assert f"reserved ${budget['reserved_usd']}" in lab and "soft limit 50 %" in lab
        assert re.search(r'<rect class="soft" x="49\.50"', lab)
        spent = float(budget["spent_usd"])
        assert spent > 0
        fill = re.search(r'<rect class="fill" x="0" y="0" width="([0-9.]+)"', lab)
        assert fill and float(fill.group(1)) == pytest.approx(min(100.0, spent / 2.0 * 100), abs=0.01)
        assert "1 req" in lab and "config" in lab
        ops = team_item(page, "ops")
        assert "no budget" in ops and "no usage" in ops and "7 rpm" in ops and "api" in ops


async def test_without_the_teams_scope_the_spend_page_says_teams_are_not_listed() -> None:
    async with console(config()) as client:
        await log_in(client, ACCOUNTANT)
        page = await client.get("/console/spend")
        assert page.status_code == 200
        assert "lacks the 'teams:read' scope" in page.text and 'data-team="' not in page.text


async def _runtime_key(client: httpx.AsyncClient, name: str = "editable") -> dict[str, Any]:
    created = await client.post("/admin/v1/keys", json={"name": name, "rpm": 100}, headers=auth(MASTER))
    assert created.status_code == 201
    key: dict[str, Any] = created.json()
    return key


def _form(page: str) -> dict[str, str]:
    """The edit form's fields as the page fills them."""
    fields = dict(re.findall(r'<input id="[^"]+" name="([^"]+)"[^>]*value="([^"]*)"', page))
    fields.update(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    period = re.search(r'<option value="([a-z]+)" selected>', page)
    fields["budget_period"] = period.group(1) if period else "monthly"
    return {name: html.unescape(value) for name, value in fields.items()}


async def test_a_keys_limits_are_edited_through_the_admin_update_and_apply_to_its_next_request() -> None:
    app = create_app(config())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        key = await _runtime_key(client)
        await log_in(client)
        keys_page = (await client.get("/console/keys")).text
        assert f'href="/console/keys/{key["id"]}/edit"' in keys_page
        page = await client.get(f"/console/keys/{key['id']}/edit")
        assert page.status_code == 200
        form = _form(page.text)
        assert form["name"] == "editable" and form["rpm"] == "100" and form["models"] == "*"
        assert form["etag"] == key["etag"] and form["csrf"] == csrf_of(page.text)
        form.update(rpm="1", tpm="", models="echo", budget_usd="3.5", budget_period="weekly",
                    budget_soft_limit="0.7")  # fmt: skip
        saved = await client.post(f"/console/keys/{key['id']}/edit", data=form)
        assert saved.status_code == 200 and "Updated editable." in saved.text
        stored = (await client.get(f"/admin/v1/keys/{key['id']}", headers=auth(MASTER))).json()
        assert (stored["rpm"], stored["tpm"], stored["models"]) == (1, None, ["echo"])
        assert stored["budget"] == {"limit_usd": "3.5", "period": "weekly", "soft_limit": 0.7}
        audit = (await client.get("/admin/v1/audit", headers=auth(MASTER))).json()["data"]
        assert audit[-1]["action"] == "key.update" and audit[-1]["actor"]["name"] == "master"
        # The new limit applies: one request a minute.
        sdk = openai.AsyncOpenAI(
            api_key=key["secret"],
            base_url="http://gateway/v1",
            http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
            max_retries=0,
        )
        await sdk.chat.completions.create(model="echo", messages=[{"role": "user", "content": "one"}])
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model="echo", messages=[{"role": "user", "content": "two"}])
        await sdk.close()
        # Emptying the budget clears it.
        form = _form((await client.get(f"/console/keys/{key['id']}/edit")).text)
        assert form["budget_usd"] == "3.5" and form["budget_period"] == "weekly"
        form.update(budget_usd="", budget_soft_limit="")
        assert (await client.post(f"/console/keys/{key['id']}/edit", data=form)).status_code == 200
        cleared = await client.get(f"/admin/v1/keys/{key['id']}", headers=auth(MASTER))
        assert cleared.json()["budget"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rpm": "many"}, "rpm"),
        ({"tpm": "-5"}, "tpm"),
        ({"budget_usd": "lots"}, "budget.limit_usd"),
        ({"budget_usd": "", "budget_soft_limit": "0.5"}, "budget.limit_usd"),
        ({"budget_usd": "1", "budget_soft_limit": "2"}, "budget.soft_limit"),
        ({"models": "echo, no-such-model"}, "models[1]"),
        ({"name": ""}, "name"),
    ],
)
async def test_a_bad_edit_is_a_400_naming_the_field_and_keeps_what_was_typed(
    change: dict[str, str], field: str
) -> None:
    async with console(config()) as client:
        key = await _runtime_key(client)
        await log_in(client)
        form = _form((await client.get(f"/console/keys/{key['id']}/edit")).text)
        form.update(change)
        response = await client.post(f"/console/keys/{key['id']}/edit", data=form)
        assert response.status_code == 400, response.text
        error = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.text)
        assert error and html.unescape(error.group(1)).startswith(f"{field}:"), error
        assert 'id="edit"' in response.text  # the form again, as typed
        typed = _form(response.text)
        assert all(typed[name] == value for name, value in change.items()), typed
        stored = (await client.get(f"/admin/v1/keys/{key['id']}", headers=auth(MASTER))).json()
        assert stored["rpm"] == 100 and stored["etag"] == key["etag"]  # nothing changed


async def test_an_edit_needs_the_csrf_token_the_write_scope_and_the_current_version() -> None:
    reader = ", {name: reader, key: sk-console-reader-0006, scopes: [keys:read]}]"
    text = CONFIG.replace("scopes: [budgets:read]}]", "scopes: [budgets:read]}" + reader)
    async with console(parse_config(text, "console.yaml")) as client:
        key = await _runtime_key(client)
        await log_in(client)
        form = _form((await client.get(f"/console/keys/{key['id']}/edit")).text)
        edit = f"/console/keys/{key['id']}/edit"
        forged = await client.post(edit, data={**form, "csrf": "forged", "rpm": "1"})
        assert forged.status_code == 403
        # Someone else saved a change since the form was loaded: 412, not a silent overwrite.
        patched = await client.patch(f"/admin/v1/keys/{key['id']}", json={"tpm": 50}, headers=auth(MASTER))
        assert patched.status_code == 200
        stale = await client.post(f"/console/keys/{key['id']}/edit", data={**form, "rpm": "1"})
        assert stale.status_code == 412
        stored = (await client.get(f"/admin/v1/keys/{key['id']}", headers=auth(MASTER))).json()
        assert (stored["rpm"], stored["tpm"]) == (100, 50)
        unknown = await client.post("/console/keys/no-such-key/edit", data=form)
        assert unknown.status_code == 404
        # A config-file key is read-only: its page says so and shows no form.
        config_key = (await client.get("/admin/v1/keys", headers=auth(MASTER))).json()["data"][0]
        page = await client.get(f"/console/keys/{config_key['id']}/edit")
        assert "defined in the config file" in page.text and 'id="edit"' not in page.text
        client.cookies.clear()
        await log_in(client, "sk-console-reader-0006")
        assert (await client.get(f"/console/keys/{key['id']}/edit")).status_code == 403
        reader_csrf = csrf_of((await client.get("/console/keys")).text)
        refused = await client.post(f"/console/keys/{key['id']}/edit", data={**form, "csrf": reader_csrf})
        assert refused.status_code == 403
        assert f'href="/console/keys/{key["id"]}/edit"' not in (await client.get("/console/keys")).text


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize("tracing", [True, False])
async def test_the_request_log_shows_each_requests_trace_id_and_filters_by_it(tracing: bool) -> None:
    features = "features: {console: {enabled: true}" + (", tracing: {exporter: none}}" if tracing else "}")
    text = CONFIG.replace("features: {console: {enabled: true}}", features)
    app = create_app(parse_config(text, "console.yaml"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        sdk = openai.AsyncOpenAI(
            api_key=LAB,
            base_url="http://gateway/v1",
            http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
            max_retries=0,
        )
        for request_id in ("traced-1", "other-2"):
            await sdk.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": request_id, "traceparent": TRACEPARENT}
                if request_id == "traced-1"
                else {"x-request-id": request_id},
            )
        await sdk.close()
        await log_in(client)
        # With tracing on, the trace the client's traceparent continued; without, the request id.
        wanted = TRACE if tracing else "traced-1"
        log = (await client.get(f"/console/requests?trace={wanted}")).text
        rows = re.findall(r'<tr data-request-id="([^"]+)"', log)
        assert rows == ["traced-1"], log
        assert f'<a href="/console/requests?trace={wanted}">{wanted}</a>' in log
        assert f'value="{wanted}"' in log  # the filter keeps its value
        everything = (await client.get("/console/requests")).text
        assert re.findall(r'<tr data-request-id="([^"]+)"', everything) == ["other-2", "traced-1"]
        if tracing:  # the other request got a trace of its own, not the request id
            assert "other-2</a>" not in everything
        nothing = (await client.get("/console/requests?trace=0000")).text
        assert "No requests recorded matching these filters" in nothing
        too_long = await client.get("/console/requests?trace=" + "a" * 201)
        assert too_long.status_code == 400 and "trace: at most 200 characters" in too_long.text


async def test_a_team_seen_only_in_the_ledger_is_listed_after_the_defined_ones() -> None:
    ghost = "sk-console-ghost-0007"
    text = CONFIG.replace("team: lab}]", f"team: lab}}, {{name: ghostkey, key: {ghost}, team: ghost}}]")
    async with console(parse_config(text, "console.yaml")) as client:
        assert (await client.post("/v1/chat/completions", json=chat("hi"), headers=auth(ghost))).is_success
        await log_in(client)
        page = (await client.get("/console/spend")).text
        assert page.index('data-team="lab"') < page.index('data-team="ghost"')
        ghost_item = team_item(page, "ghost")
        assert "ledger only" in ghost_item and "no budget" in ghost_item and "1 req" in ghost_item
