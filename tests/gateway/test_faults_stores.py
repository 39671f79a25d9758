"""Fault injection, store side: the ledger file read-only, deleted or unreadable, Redis killed mid-run.

Each case asserts what the client sees and that the key's budget and the ledger agree afterwards (or, where
the fault destroyed ledger rows, exactly what is left).
"""

from __future__ import annotations

import logging
import sqlite3
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from gateway_testing import serve
from redis_server import RedisServer
from upstream_faults import (
    ScriptedUpstream,
    alice,
    answer,
    chat,
    config_text,
    consistent,
    master,
    unique_name,
)

import gateway.ledger_sqlite
from gateway.config import parse_config

pytestmark = pytest.mark.anyio

USAGE = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}
COST = Decimal("0.002")  # 2,000 tokens at $1 per 1M


class Switch:
    """Stands in for ``gateway.ledger_sqlite.connect``: opens the file read-only, or not at all, when told."""

    def __init__(self) -> None:
        self.mode = "rw"

    def __call__(self, path: str) -> sqlite3.Connection:
        if self.mode == "gone":
            raise sqlite3.OperationalError("unable to open database file")
        uri = f"file:{path}?mode=ro" if self.mode == "ro" else f"file:{path}"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


def upstream() -> ScriptedUpstream:
    return ScriptedUpstream(lambda _: httpx.Response(200, json=answer(USAGE)))


async def _spend(client: httpx.AsyncClient, times: int = 1) -> None:
    for _ in range(times):
        response = await client.post("/v1/chat/completions", json=chat(), headers=alice())
        assert response.status_code == 200, response.text
        assert Decimal(response.headers["x-gateway-cost-usd"]) == COST


async def test_a_read_only_ledger_spills_then_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, database = unique_name(), str(tmp_path / "usage.sqlite3")
    config = parse_config(config_text(name, database=database))
    async with serve(config, upstream().transport()) as client:
        await _spend(client)
    switch = Switch()
    monkeypatch.setattr(gateway.ledger_sqlite, "connect", switch)
    switch.mode = "ro"  # the file is read-only when the gateway starts again
    async with serve(config, upstream().transport()) as client:
        await _spend(client, 2)
        usage = await client.get("/admin/usage", headers=master())
        assert usage.status_code == 200, usage.text
        body = usage.json()
        assert body["ledger"]["write_errors"] >= 1 and body["ledger"]["spilled"] == 2
        assert "readonly" in body["ledger"]["last_error"]
        assert body["totals"]["requests"] == 1  # what the file holds, read although writes fail
        budgets = (await client.get("/admin/budgets", headers=master())).json()["budgets"]
        assert Decimal(budgets[0]["spent_usd"]) == 3 * COST
        switch.mode = "rw"  # writable again: the next write replays the spill file
        spent, totals = await consistent(client, name)
        assert spent == 3 * COST and totals["requests"] == 3


async def test_spend_survives_a_restart_even_when_it_was_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory store starts empty: the budget is rebuilt from the ledger and its spill file."""
    name, database = unique_name(), str(tmp_path / "usage.sqlite3")
    config = parse_config(config_text(name, database=database))
    async with serve(config, upstream().transport()) as client:
        await _spend(client)
    switch = Switch()
    monkeypatch.setattr(gateway.ledger_sqlite, "connect", switch)
    switch.mode = "ro"
    async with serve(config, upstream().transport()) as client:
        await _spend(client, 2)
    switch.mode = "rw"
    async with serve(config, upstream().transport()) as client:
        spent, totals = await consistent(client, name)
        assert spent == 3 * COST and totals["requests"] == 3
        assert not Path(database + "-spill.jsonl").exists()


async def test_a_deleted_ledger_is_noticed_and_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, database = unique_name(), tmp_path / "usage.sqlite3"
    config = parse_config(config_text(name, database=str(database)))
    async with serve(config, upstream().transport()) as client:
        await _spend(client)
        assert (await client.get("/admin/usage", headers=master())).status_code == 200
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        await _spend(client)
        with caplog.at_level(logging.ERROR, "gateway.usage"):
            usage = await client.get("/admin/usage", headers=master())
        assert usage.status_code == 200
        assert usage.json()["totals"]["requests"] == 1  # the rows of the deleted file are gone
        assert usage.json()["ledger"]["reopened"] == 1
        assert any("was deleted" in r.getMessage() for r in caplog.records)
        assert database.exists()
        budgets = (await client.get("/admin/budgets", headers=master())).json()["budgets"]
        assert Decimal(budgets[0]["spent_usd"]) == 2 * COST  # the budget lost nothing
    async with serve(config, upstream().transport()) as client:
        # After a restart the memory store is rebuilt from what the ledger still has.
        spent, totals = await consistent(client, name)
        assert spent == COST and totals["requests"] == 1


async def test_an_unreadable_ledger_is_a_503_and_requests_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, database = unique_name(), tmp_path / "usage.sqlite3"
    switch = Switch()
    monkeypatch.setattr(gateway.ledger_sqlite, "connect", switch)
    config = parse_config(config_text(name, database=str(database)))
    async with serve(config, upstream().transport()) as client:
        await _spend(client)
        assert (await client.get("/admin/usage", headers=master())).status_code == 200  # written
        database.unlink()
        switch.mode = "gone"
        await _spend(client)
        for path in ("/admin/usage", "/admin/usage/requests/abc"):
            response = await client.get(path, headers=master())
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "usage_ledger_unavailable"
            assert "cannot be read" in error["message"] and "Traceback" not in response.text
        switch.mode = "rw"
        usage = (await client.get("/admin/usage", headers=master())).json()
        # The first request's row went with the deleted file; the second was spilled, then replayed.
        assert usage["totals"]["requests"] == 1 and Decimal(usage["totals"]["cost_usd"]) == COST
        assert usage["ledger"]["replayed"] == 1
        budgets = (await client.get("/admin/budgets", headers=master())).json()["budgets"]
        assert Decimal(budgets[0]["spent_usd"]) == 2 * COST


async def test_redis_killed_mid_run(tmp_path: Path) -> None:
    name, database = unique_name(), str(tmp_path / "usage.sqlite3")
    with RedisServer() as redis:
        config = parse_config(config_text(name, database=database, redis_url=redis.url))
        async with serve(config, upstream().transport()) as client:
            await _spend(client)
            redis.stop()
            refused = await client.post("/v1/chat/completions", json=chat(), headers=alice())
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "state_store_unavailable"
            usage = await client.get("/admin/usage", headers=master())
            assert usage.status_code == 200
            assert usage.json()["totals"]["requests"] == 2 and usage.json()["totals"]["errors"] == 1
            assert Decimal(usage.json()["totals"]["cost_usd"]) == COST
            redis.start()  # back, but empty (no persistence)
        async with serve(config, upstream().transport()) as client:
            # A restarted gateway finds the counters gone and rebuilds them from the ledger.
            spent, totals = await consistent(client, name)
            assert spent == COST and totals["requests"] == 2
            await _spend(client)
            assert (await consistent(client, name))[0] == 2 * COST


async def test_request_ids_are_scoped_per_key_in_the_ledger(tmp_path: Path) -> None:
    name = unique_name()
    config = parse_config(config_text(name, database=str(tmp_path / "usage.sqlite3")))
    async with serve(config, upstream().transport()) as client:
        headers = {**alice(), "x-request-id": "chosen-by-client"}
        assert (await client.post("/v1/chat/completions", json=chat(), headers=headers)).status_code == 200
        mine = await client.get(
            "/admin/usage/requests/chosen-by-client", params={"key": name}, headers=master()
        )
        assert mine.status_code == 200
        assert [r["key_name"] for r in mine.json()["records"]] == [name]
        other = await client.get(
            "/admin/usage/requests/chosen-by-client", params={"key": "mallory"}, headers=master()
        )
        assert other.status_code == 404 and "of key 'mallory'" in other.json()["error"]["message"]
