"""Cost tracking and budgets through the real app: cost header, ledger, reserve/settle, 429, soft limit,
restore after restart, streams (reported, estimated, abandoned), cache hits, and the admin endpoints."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from budget_fakes import (
    ALICE,
    BOB,
    CAROL,
    FREE,
    MASTER,
    FakeUpstream,
    auth,
    chat,
    config_text,
)
from gateway_testing import run_server, serve

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.features.budgets import budget_rules, budget_stage
from gateway.features.usage import usage_stage
from gateway.pipeline import Call, KeyIdentity, Result, Stream
from gateway.pricing import ModelPrice, cost_nanos, format_usd
from gateway.stores import MemoryStore
from gateway.token_estimate import estimate_prompt_tokens, max_prompt_tokens

pytestmark = pytest.mark.anyio

PRICED = ModelPrice(input=Decimal(1), output=Decimal(1000))
URL = "/v1/chat/completions"


def cost_of(content: str, completion: int, price: ModelPrice = PRICED) -> int:
    """What the fake upstream's answer costs: the prompt bound as prompt tokens, `completion` tokens."""
    return cost_nanos(price, max_prompt_tokens([{"role": "user", "content": content}]), completion)


async def budgets(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/admin/budgets", headers=auth(MASTER))
    assert response.status_code == 200
    return {row["name"]: row for row in response.json()["budgets"]}


async def usage(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/admin/usage", params=params, headers=auth(MASTER))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def sse(text: str) -> list[Any]:
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


async def test_cost_in_header_body_and_ledger() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        response = await client.post(URL, json=chat("hello", max_tokens=10), headers=auth(ALICE))
        assert response.status_code == 200
        expected = format_usd(cost_of("hello", 10))
        assert response.headers["x-gateway-cost-usd"] == expected
        assert "x-gateway-cost-final" not in response.headers
        assert response.json()["usage"]["cost_usd"] == expected
        record = (
            await client.get(
                f"/admin/usage/requests/{response.headers['x-request-id']}", headers=auth(MASTER)
            )
        ).json()
        (row,) = record["records"]
        assert row["cost_usd"] == expected
        assert row["usage_source"] == "reported"
        assert row["key_name"] == "alice"
        assert row["route"] == "up/up-model"
        assert row["attempts"] == 1 and row["ttft_ms"] is None
        assert row["status"] == 200 and row["cache_hit"] is False
        assert row["completion_tokens"] == 10
        by_key = {g["key"]: g for g in (await usage(client, group_by="key"))["groups"]}
        assert by_key["alice"]["cost_usd"] == expected


async def test_bundled_prices_apply_without_config_pricing() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        response = await client.post(
            URL, json=chat("hi", model="gpt-4o-mini", max_tokens=20), headers=auth(FREE)
        )
        mini = ModelPrice(input=Decimal("0.15"), output=Decimal("0.60"))
        assert response.headers["x-gateway-cost-usd"] == format_usd(cost_of("hi", 20, mini))


async def test_a_request_that_does_not_fit_gets_429_budget_exceeded() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        first = await client.post(URL, json=chat("one", max_tokens=60), headers=auth(ALICE))
        assert first.status_code == 200
        spent = cost_of("one", 60)
        # What remains after this request's reservation (here equal to its cost).
        assert first.headers["x-gateway-budget-remaining-usd"] == format_usd(100_000_000 - spent)
        refused = await client.post(URL, json=chat("two", max_tokens=60), headers=auth(ALICE))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert error["type"] == "budget_exceeded"
        remaining = format_usd(100_000_000 - spent)
        assert f"{remaining} USD of its daily budget of 0.1 USD remains" in error["message"]
        assert "key 'alice'" in error["message"]
        assert refused.headers["x-gateway-budget-remaining-usd"] == remaining
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-gateway-cost-usd"] == "0"
        assert len(upstream.bodies) == 1  # the refused request never reached the upstream
        # A smaller request still fits in what remains.
        assert (
            await client.post(URL, json=chat("three", max_tokens=30), headers=auth(ALICE))
        ).status_code == 200
        alice = (await budgets(client))["alice"]
        assert alice["spent_usd"] == format_usd(spent + cost_of("three", 30))
        assert alice["reserved_usd"] == "0"
        assert alice["period"] == "daily"
        assert alice["period_end"] is not None
        errors = {g["key"]: g["errors"] for g in (await usage(client, group_by="key"))["groups"]}
        assert errors["alice"] == 1


async def test_settling_releases_what_the_answer_did_not_use() -> None:
    upstream = FakeUpstream(completion_tokens=5)
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        # Each reserves about 0.05 USD of alice's 0.1 but costs about 0.005: all five fit, one at a time.
        for i in range(5):
            response = await client.post(URL, json=chat(f"q{i}", max_tokens=50), headers=auth(ALICE))
            assert response.status_code == 200, response.text
        alice = (await budgets(client))["alice"]
        assert alice["spent_usd"] == format_usd(sum(cost_of(f"q{i}", 5) for i in range(5)))
        assert alice["reserved_usd"] == "0"


async def test_team_budget_is_shared_by_its_keys() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        assert (await client.post(URL, json=chat("b", max_tokens=30), headers=auth(BOB))).status_code == 200
        refused = await client.post(URL, json=chat("c", max_tokens=30), headers=auth(CAROL))
        assert refused.status_code == 429
        assert "team 'lab'" in refused.json()["error"]["message"]
        lab = (await budgets(client))["lab"]
        assert lab["scope"] == "team" and lab["period"] == "monthly"
        assert lab["spent_usd"] == format_usd(cost_of("b", 30))


async def test_soft_limit_warns_in_a_header_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        quiet = await client.post(URL, json=chat("a", max_tokens=10), headers=auth(ALICE))
        assert "x-gateway-budget-warning" not in quiet.headers
        with caplog.at_level(logging.WARNING, logger="gateway.budgets"):
            loud = await client.post(URL, json=chat("b", max_tokens=50), headers=auth(ALICE))
            again = await client.post(URL, json=chat("c", max_tokens=1), headers=auth(ALICE))
        assert "key 'alice' has used 6" in loud.headers["x-gateway-budget-warning"]
        assert "of its daily budget" in loud.headers["x-gateway-budget-warning"]
        assert "x-gateway-budget-warning" in again.headers
        logged = [r for r in caplog.records if "soft limit" in r.getMessage()]
        assert len(logged) == 1


async def test_default_max_tokens_is_reserved_and_sent_upstream() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        await client.post(URL, json=chat("capped"), headers=auth(ALICE))
        await client.post(URL, json=chat("free"), headers=auth(FREE))
        await client.post(URL, json=chat("own cap", max_completion_tokens=3), headers=auth(ALICE))
    assert upstream.bodies[0]["max_tokens"] == 50
    assert "max_tokens" not in upstream.bodies[1]  # no budget, no cap added
    assert "max_tokens" not in upstream.bodies[2] and upstream.bodies[2]["max_completion_tokens"] == 3


async def test_an_upstream_failure_costs_nothing_and_releases_the_reservation() -> None:
    upstream = FakeUpstream(fail_status=500)
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        response = await client.post(URL, json=chat("x", max_tokens=60), headers=auth(ALICE))
        assert response.status_code == 502
        assert response.headers["x-gateway-cost-usd"] == "0"
        alice = (await budgets(client))["alice"]
        assert (alice["spent_usd"], alice["reserved_usd"]) == ("0", "0")
        (row,) = (
            await client.get(
                f"/admin/usage/requests/{response.headers['x-request-id']}", headers=auth(MASTER)
            )
        ).json()["records"]
        assert row["status"] == 502 and row["usage_source"] == "none" and row["cost_usd"] == "0"


async def test_stream_header_is_the_maximum_and_the_usage_chunk_has_the_real_cost() -> None:
    upstream = FakeUpstream(completion_tokens=4)
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        body = chat("stream me", max_tokens=20, stream=True, stream_options={"include_usage": True})
        response = await client.post(URL, json=body, headers=auth(ALICE))
        assert response.status_code == 200
        assert response.headers["x-gateway-cost-usd"] == format_usd(cost_of("stream me", 20))
        assert response.headers["x-gateway-cost-final"] == "false"
        chunks = sse(response.text)
        assert chunks[-1] == "[DONE]"
        real = format_usd(cost_of("stream me", 4))
        assert chunks[-2]["usage"]["cost_usd"] == real
        (row,) = (
            await client.get(
                f"/admin/usage/requests/{response.headers['x-request-id']}", headers=auth(MASTER)
            )
        ).json()["records"]
        assert row["cost_usd"] == real and row["stream"] is True and row["usage_source"] == "reported"
        assert row["ttft_ms"] is not None and 0 <= row["ttft_ms"] <= row["latency_ms"]
        alice = (await budgets(client))["alice"]
        assert (alice["spent_usd"], alice["reserved_usd"]) == (real, "0")


async def test_a_stream_without_usage_is_estimated_and_labelled() -> None:
    upstream = FakeUpstream(report_usage=False)
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        response = await client.post(URL, json=chat("guess", max_tokens=10, stream=True), headers=auth(ALICE))
        assert response.status_code == 200
        (row,) = (
            await client.get(
                f"/admin/usage/requests/{response.headers['x-request-id']}", headers=auth(MASTER)
            )
        ).json()["records"]
        assert row["usage_source"] == "estimated"
        prompt = estimate_prompt_tokens([{"role": "user", "content": "guess"}])
        assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, 10)  # 40 characters of 'x'
        assert row["cost_usd"] == format_usd(cost_nanos(PRICED, prompt, 10))
        assert (await budgets(client))["alice"]["spent_usd"] == row["cost_usd"]


async def test_cache_hits_cost_nothing_but_are_recorded() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text(cache=True)), upstream.transport()) as client:
        body = chat("cache me", max_tokens=10)
        first = await client.post(URL, json=body, headers=auth(ALICE))
        second = await client.post(URL, json=body, headers=auth(ALICE))
        assert second.headers["x-gateway-cache"] == "HIT"
        assert second.headers["x-gateway-cost-usd"] == "0"
        assert first.headers["x-gateway-cost-usd"] != "0"
        totals = (await usage(client))["totals"]
        assert totals["requests"] == 2 and totals["cache_hits"] == 1
        assert totals["cost_usd"] == first.headers["x-gateway-cost-usd"]
        alice = (await budgets(client))["alice"]
        assert (alice["spent_usd"], alice["reserved_usd"]) == (first.headers["x-gateway-cost-usd"], "0")


async def test_spend_survives_a_restart(tmp_path: Path) -> None:
    config = parse_config(config_text(database=str(tmp_path / "usage.sqlite3")))
    upstream = FakeUpstream()
    told = Decimal(0)
    async with serve(config, upstream.transport()) as client:
        for content, key, max_tokens in [("before", ALICE, 60), ("team", BOB, 30), ("free", FREE, 5)]:
            reply = await client.post(URL, json=chat(content, max_tokens=max_tokens), headers=auth(key))
            assert reply.status_code == 200
            told += Decimal(reply.headers["x-gateway-cost-usd"])
    # A new process: the memory store is empty, the ledger is not, and it lost no record.
    async with serve(config, upstream.transport()) as client:
        totals = (await usage(client))["totals"]
        assert totals["requests"] == 3
        assert Decimal(totals["cost_usd"]) == told
        refused = await client.post(URL, json=chat("after", max_tokens=60), headers=auth(ALICE))
        assert refused.status_code == 429
        state = await budgets(client)
        assert state["alice"]["spent_usd"] == format_usd(cost_of("before", 60))
        assert state["lab"]["spent_usd"] == format_usd(cost_of("team", 30))
        assert (
            await client.post(URL, json=chat("carol", max_tokens=30), headers=auth(CAROL))
        ).status_code == 429


def test_a_client_that_leaves_mid_stream_releases_its_reservation() -> None:
    app = create_app(parse_config(config_text()))
    with run_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        body = chat("go slowly", model="slow", max_tokens=80, stream=True)
        with client.stream("POST", URL, json=body, headers=auth(ALICE)) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            next(response.iter_bytes())
        # The gateway notices the disconnect, cancels the upstream stream and settles what was generated.
        deadline = time.monotonic() + 10
        while True:
            alice = {
                r["name"]: r for r in client.get("/admin/budgets", headers=auth(MASTER)).json()["budgets"]
            }["alice"]
            if alice["reserved_usd"] == "0" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert alice["reserved_usd"] == "0"
        (row,) = client.get(f"/admin/usage/requests/{request_id}", headers=auth(MASTER)).json()["records"]
        assert row["status"] == 499
        assert row["usage_source"] == "estimated"
        assert row["completion_tokens"] < 80
        assert alice["spent_usd"] == row["cost_usd"]


async def test_admin_endpoints_need_the_master_key_and_check_parameters() -> None:
    async with serve(parse_config(config_text()), FakeUpstream().transport()) as client:
        for path in ("/admin/usage", "/admin/budgets", "/admin/usage/requests/x"):
            assert (await client.get(path, headers=auth(ALICE))).status_code == 401
        bad = await client.get("/admin/usage", params={"group_by": "color"}, headers=auth(MASTER))
        assert bad.status_code == 400 and "group_by" in bad.json()["error"]["message"]
        bad = await client.get("/admin/usage", params={"from": "yesterday"}, headers=auth(MASTER))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
        bad = await client.get("/admin/usage", params={"form": "2026-01-01"}, headers=auth(MASTER))
        assert bad.status_code == 400
        missing = await client.get("/admin/usage/requests/nope", headers=auth(MASTER))
        assert missing.status_code == 404


async def test_admin_usage_groups_and_time_range() -> None:
    async with serve(parse_config(config_text()), FakeUpstream().transport()) as client:
        await client.post(URL, json=chat("a", max_tokens=1), headers=auth(ALICE))
        await client.post(URL, json=chat("b", max_tokens=1), headers=auth(BOB))
        await client.post(URL, json=chat("c", model="gpt-4o-mini", max_tokens=1), headers=auth(FREE))
        by_model = {g["model"]: g["requests"] for g in (await usage(client, group_by="model"))["groups"]}
        assert by_model == {"priced": 2, "gpt-4o-mini": 1}
        by_route = {g["route"]: g["requests"] for g in (await usage(client, group_by="route"))["groups"]}
        assert by_route == {"up/up-model": 2, "up/gpt-4o-mini": 1}
        by_team = {g["team"]: g["requests"] for g in (await usage(client, group_by="team"))["groups"]}
        assert by_team == {None: 2, "lab": 1}
        days = (await usage(client, group_by="day"))["groups"]
        assert len(days) == 1 and days[0]["requests"] == 3
        today = days[0]["day"]
        assert (await usage(client, **{"from": today, "to": today}))["totals"]["requests"] == 3
        assert (await usage(client, **{"from": "2999-01-01"}))["totals"]["requests"] == 0
        assert (await usage(client, to="2000-01-01T00:00:00Z"))["totals"]["cost_usd"] == "0"
        csv_reply = await client.get(
            "/admin/usage", params={"group_by": "model"}, headers={**auth(MASTER), "accept": "text/csv"}
        )
        assert csv_reply.headers["content-type"].startswith("text/csv")
        lines = csv_reply.text.splitlines()
        assert (
            lines[0] == "model,requests,prompt_tokens,completion_tokens,cost_usd,cache_hits,errors,estimated,"
            "cached_tokens,avoided_cost_usd"
        )
        assert sorted(line.split(",")[:2] for line in lines[1:]) == [["gpt-4o-mini", "1"], ["priced", "2"]]


async def test_a_stream_closed_before_its_first_chunk_still_settles() -> None:
    """A client that leaves before the first chunk: the stream is closed without ever being iterated."""
    config = parse_config(config_text())
    usage_stage_ = usage_stage(config)
    stage = budget_stage(config, MemoryStore(), usage_stage_)
    assert stage is not None
    await stage.start()
    model = config.model("priced")
    assert model is not None
    call = Call(
        request_id="r1",
        key=KeyIdentity(name="alice", key_id="k1"),
        endpoint="chat",
        model="priced",
        model_config=model,
        body=chat("never read", max_tokens=20, stream=True),
        headers={},
        stream=True,
    )

    async def upstream(call: Call) -> Result:
        call.route = model.routes[0]
        return Stream.from_chunks([{"choices": [{"index": 0, "delta": {"content": "unread"}}]}])

    result = await stage.handle(call, upstream)
    assert isinstance(result, Stream)
    (slot,) = [rule.slot(stage.clock()) for rule in stage.rules_for(call)]
    assert (await stage.book.read([slot]))[0][1] > 0  # reserved while in flight
    await result.aclose()
    # Released; charged for the prompt the upstream already took (estimated), not for the unread answer.
    prompt = estimate_prompt_tokens([{"role": "user", "content": "never read"}])
    assert await stage.book.read([slot]) == [(cost_nanos(PRICED, prompt, 0), 0)]
    await usage_stage_.close()


def test_budget_config_errors_name_the_key() -> None:
    text = """
auth:
  keys:
    - {name: a, key: sk-aaaaaaaaaa, budget: {limit_usd: -1, period: hourly, soft: 1}}
teams:
  - {name: t, budget: {limit_usd: 10, soft_limit: 2}}
features:
  budgets: {timezone: Mars/Base}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "budgets.yaml")
    problems = "\n".join(info.value.problems)
    assert "budgets.yaml:4: auth.keys[0].budget.limit_usd: Input should be greater than 0" in problems
    assert "auth.keys[0].budget.period: Input should be 'daily', 'weekly', 'monthly' or 'total'" in problems
    assert "auth.keys[0].budget.soft: unknown key 'soft'" in problems
    assert "budgets.yaml:6: teams[0].budget.soft_limit: Input should be less than or equal to 1" in problems
    assert "features.budgets.timezone: unknown time zone 'Mars/Base'" in problems
    with pytest.raises(ConfigError, match=r"teams\[1\]\.name: duplicate team name 't'"):
        parse_config("teams:\n  - {name: t}\n  - {name: t}\n", "budgets.yaml")


async def test_embeddings_are_costed_and_budgeted() -> None:
    async with serve(parse_config(config_text()), FakeUpstream().transport()) as client:
        reply = await client.post(
            "/v1/embeddings", json={"model": "embed", "input": ["one two three", "four"]}, headers=auth(ALICE)
        )
        assert reply.status_code == 200
        tokens = reply.json()["usage"]["prompt_tokens"]
        expected = format_usd(cost_nanos(ModelPrice(input=Decimal(1000), output=Decimal(0)), tokens, 0))
        assert reply.headers["x-gateway-cost-usd"] == expected != "0"
        alice = (await budgets(client))["alice"]
        assert (alice["spent_usd"], alice["reserved_usd"]) == (expected, "0")


def test_a_budget_may_have_its_own_time_zone() -> None:
    config = parse_config(
        """
auth:
  keys:
    - {name: east, key: sk-east-00000001, budget: {limit_usd: 1, period: daily, timezone: Asia/Tokyo}}
    - {name: home, key: sk-home-00000001, budget: {limit_usd: 1, period: daily}}
features:
  budgets: {timezone: America/New_York}
"""
    )
    rules = {rule.name: rule for rule in budget_rules(config)}
    now = datetime(2026, 3, 5, 16, tzinfo=UTC)  # Mar 6 01:00 in Tokyo, Mar 5 11:00 in New York
    assert rules["east"].slot(now).window.key == "daily:2026-03-06"
    assert rules["east"].slot(now).window.start == datetime(2026, 3, 5, 15, tzinfo=UTC)
    assert rules["home"].slot(now).window.key == "daily:2026-03-05"
    assert rules["home"].slot(now).window.start == datetime(2026, 3, 5, 5, tzinfo=UTC)
    bad = "auth: {keys: [{name: x, key: sk-xxxxxxxx, budget: {limit_usd: 1, timezone: Asia/Atlantis}}]}"
    with pytest.raises(ConfigError, match="unknown time zone 'Asia/Atlantis'"):
        parse_config(bad)


async def test_each_of_n_choices_is_reserved() -> None:
    upstream = FakeUpstream()
    async with serve(parse_config(config_text()), upstream.transport()) as client:
        # One choice of 40 tokens fits in alice's 0.1 USD, three of them (0.12 USD) do not.
        body = chat("many", max_tokens=40, n=3)
        refused = await client.post(URL, json=body, headers=auth(ALICE))
        assert refused.status_code == 429
        assert f"may cost up to {format_usd(cost_of('many', 120))} USD" in refused.json()["error"]["message"]
        assert (
            await client.post(URL, json=chat("many", max_tokens=40), headers=auth(ALICE))
        ).status_code == 200


def test_the_ledger_path_is_checked_with_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"usage\.database: the directory '.*missing' does not exist"):
        parse_config(config_text(database=str(tmp_path / "missing" / "usage.sqlite3")))
    with pytest.raises(ConfigError, match="is a directory"):
        parse_config(config_text(database=str(tmp_path)))
    assert parse_config(config_text(database=str(tmp_path / "usage.sqlite3"))).usage.database
