"""Acceptance: cost tracking and budgets (plan HIGH-cost-tracking-budgets), black box over HTTP.

The `budget-*` keys and the `budget-priced` and `budget-gated` models ($100 / $200 per 1M tokens) exist only
for these tests (tests/acceptance/gateway.yaml). A live gateway keeps spend between runs and `budget-tight`
and `budget-burst` have budgets that never reset, so the tests check invariants that hold whatever was spent
before: a refusal is a well-formed `budget_exceeded`, spend never passes the limit, and what clients were told
they spent is exactly what the ledger reports.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from held_in_flight import overlapping

pytestmark = pytest.mark.feature("cost-tracking-budgets")

URL = "/v1/chat/completions"
USAGE_KEY = "sk-acceptance-budget-usage"
TIGHT_KEY = "sk-acceptance-budget-tight"
BURST_KEY = "sk-acceptance-budget-burst"
SOFT_KEY = "sk-acceptance-budget-soft"
TEAM_A_KEY = "sk-acceptance-budget-team-a"
TEAM_B_KEY = "sk-acceptance-budget-team-b"


def chat(**extra: Any) -> dict[str, Any]:
    """A unique prompt to the priced model, so no cache and no earlier run interferes."""
    return {"model": "budget-priced", "messages": [{"role": "user", "content": uuid.uuid4().hex}], **extra}


def budgets(gateway) -> dict[str, dict[str, Any]]:
    reply = gateway.client.get("/admin/budgets", headers=gateway.admin_headers())
    assert reply.status_code == 200
    return {row["name"]: row for row in reply.json()["budgets"]}


def sse_chunks(text: str) -> list[Any]:
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


@pytest.mark.feature("cost-tracking-budgets", step=(1, 6, 7))
def test_every_answer_carries_its_cost(gateway) -> None:
    reply = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers())
    assert reply.status_code == 200
    cost = Decimal(reply.headers["x-gateway-cost-usd"])
    usage = reply.json()["usage"]
    # $100 per 1M prompt tokens and $200 per 1M completion tokens, exactly.
    expected = (Decimal(100) * usage["prompt_tokens"] + Decimal(200) * usage["completion_tokens"]) / 10**6
    assert cost == expected > 0
    assert Decimal(usage["cost_usd"]) == cost


@pytest.mark.feature("cost-tracking-budgets", step=(1, 5, 6, 7))
def test_usage_totals_equal_the_costs_clients_were_told(gateway) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    told = Decimal(0)
    for max_tokens in (5, 10, 40):
        reply = gateway.client.post(URL, json=chat(max_tokens=max_tokens), headers=gateway.headers(USAGE_KEY))
        assert reply.status_code == 200
        told += Decimal(reply.headers["x-gateway-cost-usd"])
    # A stream's header can only carry its maximum; its real cost comes in the final usage chunk.
    body = chat(max_tokens=10, stream=True, stream_options={"include_usage": True})
    reply = gateway.client.post(URL, json=body, headers=gateway.headers(USAGE_KEY))
    assert reply.status_code == 200
    assert reply.headers["x-gateway-cost-final"] == "false"
    final = sse_chunks(reply.text)[-2]
    streamed = Decimal(final["usage"]["cost_usd"])
    assert 0 < streamed <= Decimal(reply.headers["x-gateway-cost-usd"])
    told += streamed

    report = gateway.client.get(
        "/admin/usage", params={"group_by": "key", "from": since}, headers=gateway.admin_headers()
    )
    assert report.status_code == 200
    (row,) = [g for g in report.json()["groups"] if g["key"] == "budget-usage"]
    assert row["requests"] == 4
    assert Decimal(row["cost_usd"]) == told


@pytest.mark.feature("cost-tracking-budgets", step=(4, 6, 7))
def test_a_request_that_does_not_fit_is_refused_with_budget_exceeded(gateway) -> None:
    statuses = []
    for _ in range(40):
        reply = gateway.client.post(URL, json=chat(max_tokens=100), headers=gateway.headers(TIGHT_KEY))
        statuses.append(reply.status_code)
        if reply.status_code != 200:
            break
    assert statuses[-1] == 429, statuses
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "budget_exceeded"
    assert "budget-tight" in error["message"] and "remains" in error["message"]
    remaining = Decimal(reply.headers["x-gateway-budget-remaining-usd"])
    assert f"{reply.headers['x-gateway-budget-remaining-usd']} USD" in error["message"]
    assert reply.headers["x-gateway-cost-usd"] == "0"
    assert TIGHT_KEY not in reply.text
    state = budgets(gateway)["budget-tight"]
    assert Decimal(state["spent_usd"]) <= Decimal(state["limit_usd"]) == Decimal("0.05")
    assert remaining <= Decimal(state["limit_usd"]) - Decimal(state["spent_usd"])
    assert state["period"] == "total" and state["period_end"] is None


@pytest.mark.feature("cost-tracking-budgets", step=(3, 4, 7))
def test_concurrent_requests_never_spend_more_than_the_budget(gateway) -> None:
    # The echo model answers the prompt back: about $0.03 per request, so ten cannot all fit in $0.20. The
    # budget-gated upstream holds every admitted request until ten wait in it (held_in_flight.py), so each
    # budget check happens while the requests admitted before it are still in flight: a check that forgot
    # the money they reserved would admit all ten.
    body = {
        "model": "budget-gated",
        "messages": [{"role": "user", "content": uuid.uuid4().hex * 12}],
        "max_tokens": 200,
    }
    replies = overlapping(gateway, body, BURST_KEY, count=10)
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses, statuses
    for refused in (r for r in replies if r.status_code == 429):
        assert refused.json()["error"]["code"] == "budget_exceeded"
    state = budgets(gateway)["budget-burst"]
    assert Decimal(state["spent_usd"]) <= Decimal(state["limit_usd"])
    assert Decimal(state["reserved_usd"]) == 0  # every reservation was settled


@pytest.mark.feature("cost-tracking-budgets", step=(2, 7))
def test_a_team_budget_is_charged_by_each_of_its_keys(gateway) -> None:
    before = Decimal(budgets(gateway)["budget-team"]["spent_usd"])
    costs = Decimal(0)
    for key in (TEAM_A_KEY, TEAM_B_KEY):
        reply = gateway.client.post(URL, json=chat(max_tokens=10), headers=gateway.headers(key))
        assert reply.status_code == 200
        costs += Decimal(reply.headers["x-gateway-cost-usd"])
    team = budgets(gateway)["budget-team"]
    assert team["scope"] == "team" and team["period"] == "monthly"
    assert Decimal(team["spent_usd"]) - before == costs
    assert datetime.fromisoformat(team["period_end"]) > datetime.now(UTC)


@pytest.mark.feature("cost-tracking-budgets", step=(2, 7))
def test_the_soft_limit_adds_a_warning_header(gateway) -> None:
    reply = gateway.client.post(URL, json=chat(max_tokens=10), headers=gateway.headers(SOFT_KEY))
    assert reply.status_code == 200
    assert "budget-soft" in reply.headers["x-gateway-budget-warning"]
    quiet = gateway.client.post(URL, json=chat(max_tokens=10), headers=gateway.headers(TEAM_A_KEY))
    assert "x-gateway-budget-warning" not in quiet.headers


@pytest.mark.feature("cost-tracking-budgets", step=(6, 7))
def test_budget_and_usage_reports_need_the_master_key(gateway) -> None:
    for path in ("/admin/budgets", "/admin/usage"):
        assert gateway.client.get(path, headers=gateway.headers()).status_code == 401
    report = gateway.client.get("/admin/usage", params={"group_by": "day"}, headers=gateway.admin_headers())
    assert report.status_code == 200
    totals = report.json()["totals"]
    expected = {"requests", "prompt_tokens", "completion_tokens", "cost_usd", "cache_hits", "errors"}
    assert expected <= set(totals)
