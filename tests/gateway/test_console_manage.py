"""The console's team view on the spend page, key limit editing, and the trace id in the request log."""

from __future__ import annotations

import re

import httpx
import pytest
from gateway_testing import auth, chat
from test_console import MASTER, console, csrf_of, log_in

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
