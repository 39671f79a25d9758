"""The usage sink contract, run against every sink: SQLite, a real PostgreSQL server, and JSONL.

Operations a sink does not offer are checked to refuse clearly (JSONL keeps nothing it can query). The
PostgreSQL cases each get a database of their own on the session's server (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from budget_fakes import usage_record
from postgres_server import PASSWORD, PostgresServer
from postgres_server import available as postgres_available

from gateway.ledger import Ledger
from gateway.ledger_jsonl import JsonlSink
from gateway.ledger_postgres import SCHEMA_VERSION as PG_VERSION
from gateway.ledger_postgres import PostgresSink
from gateway.ledger_sqlite import SQLiteSink
from gateway.usage_bodies import BodyRecord
from gateway.usage_record import LedgerError, LedgerNotQueryable, UsageRecord
from gateway.usage_sink import UsageSink, redact_url

pytestmark = pytest.mark.anyio

SINKS = ["sqlite", "postgres", "jsonl"]
QUERYABLE = ["sqlite", "postgres"]


def make(i: int, **overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "ts": 1_700_000_000.0 + i,
        "request_id": f"req-{i}",
        "cost_nanos": 1_000 + i,
        "cached_tokens": i,
        "avoided_cost_nanos": 10 * i,
        "cache_status": "MISS",
        "error_code": None,
        "overhead_ms": 1.5,
        "region": "eu",
    }
    return usage_record(**{**values, **overrides})


@pytest.fixture
def open_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], UsageSink]:
    """Builds a sink of the named kind in this test's own place (file or database)."""

    def build(kind: str) -> UsageSink:
        if kind == "sqlite":
            return SQLiteSink(str(tmp_path / "usage.sqlite3"))
        if kind == "jsonl":
            return JsonlSink(str(tmp_path / "usage.jsonl"))
        return PostgresSink(request.getfixturevalue("postgres_url"))

    return build


@pytest.fixture(params=SINKS)
async def sink(
    request: pytest.FixtureRequest, open_sink: Callable[[str], UsageSink]
) -> AsyncIterator[UsageSink]:
    store = open_sink(request.param)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=QUERYABLE)
async def queryable(
    request: pytest.FixtureRequest, open_sink: Callable[[str], UsageSink]
) -> AsyncIterator[UsageSink]:
    store = open_sink(request.param)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_every_field_round_trips(queryable: UsageSink) -> None:
    written = [
        make(0, stream=True, ttft_ms=12.5, attempts=2, cache_hit=False),
        make(1, cache_hit=True, cache_status="HIT", route=None, region=None, overhead_ms=None),
        make(2, status=429, error_code="rate_limit_exceeded", usage_source="none", team=None),
    ]
    await queryable.write_batch(written)
    read = await queryable.records(request_id=None, key_name=None, limit=10)
    assert read == list(reversed(written))  # newest first, every field as written


async def test_summary_by_several_dimensions_and_one_key(queryable: UsageSink) -> None:
    await queryable.write_batch(
        [
            make(0, key_name="alice", model="m1"),
            make(1, key_name="alice", model="m2", cache_hit=True, cache_status="HIT"),
            make(2, key_name="alice", model="m1", status=500, error_code="upstream_error"),
            make(3, key_name="bob", model="m1", usage_source="estimated"),
        ]
    )
    rows = await queryable.summary(["key", "model"], since=None, until=None, key_name=None)
    assert [(r["group"], r["requests"]) for r in rows] == [
        ({"key": "alice", "model": "m1"}, 2),
        ({"key": "alice", "model": "m2"}, 1),
        ({"key": "bob", "model": "m1"}, 1),
    ]
    (alice_m1, alice_m2, bob) = rows
    assert alice_m1["errors"] == 1 and alice_m1["cost_nanos"] == 1_000 + 1_002
    assert (
        alice_m2["cache_hits"] == 1
        and alice_m2["cached_tokens"] == 1
        and alice_m2["avoided_cost_nanos"] == 10
    )
    assert bob["estimated"] == 1
    (only_bob,) = await queryable.summary([], since=None, until=None, key_name="bob")
    assert only_bob["group"] is None and only_bob["requests"] == 1 and only_bob["cost_nanos"] == 1_003
    (window,) = await queryable.summary([], since=1_700_000_001.0, until=1_700_000_003.0, key_name=None)
    assert window["requests"] == 2
    by_status = await queryable.summary(["status", "cache_status"], since=None, until=None, key_name=None)
    assert [(r["group"]["status"], r["group"]["cache_status"], r["requests"]) for r in by_status] == [
        (200, "HIT", 1),
        (200, "MISS", 2),
        (500, "MISS", 1),
    ]


async def test_spend_per_key_and_team_since_a_time(queryable: UsageSink) -> None:
    await queryable.write_batch(
        [make(0, key_name="alice", team="lab"), make(1, key_name="bob", team="lab"), make(2, key_name="bob")]
    )
    assert await queryable.spend_nanos(key_name="bob", team=None, since=0.0) == 1_001 + 1_002
    assert await queryable.spend_nanos(key_name="bob", team=None, since=1_700_000_002.0) == 1_002
    assert await queryable.spend_nanos(key_name=None, team="lab", since=0.0) == 1_000 + 1_001
    assert await queryable.spend_nanos(key_name="nobody", team=None, since=0.0) == 0


async def test_request_ids_are_scoped_per_key(queryable: UsageSink) -> None:
    await queryable.write_batch(
        [make(0, request_id="same", key_name="alice"), make(1, request_id="same", key_name="mallory")]
    )
    (alice,) = await queryable.records(request_id="same", key_name="alice", limit=10)
    assert alice.key_name == "alice"
    both = await queryable.records(request_id="same", key_name=None, limit=10)
    assert [r.key_name for r in both] == ["mallory", "alice"]
    assert len(await queryable.records(request_id=None, key_name=None, limit=1)) == 1


async def test_an_empty_batch_is_a_no_op(sink: UsageSink) -> None:
    await sink.write_batch([])
    if not isinstance(sink, JsonlSink):
        assert await sink.records(request_id=None, key_name=None, limit=10) == []


async def test_the_jsonl_sink_appends_lines_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    sink = JsonlSink(str(path))
    await sink.start()
    await sink.write_batch([make(0), make(1, model="modèle")])
    os.rename(path, tmp_path / "usage.jsonl.1")  # what logrotate does
    await sink.write_batch([make(2)])
    rotated = [json.loads(line) for line in (tmp_path / "usage.jsonl.1").read_text().splitlines()]
    current = [json.loads(line) for line in path.read_text().splitlines()]
    assert [UsageRecord(**row) for row in rotated] == [make(0), make(1, model="modèle")]
    assert [UsageRecord(**row) for row in current] == [make(2)]
    with pytest.raises(LedgerNotQueryable, match="jsonl"):
        await sink.summary([], since=None, until=None, key_name=None)
    with pytest.raises(LedgerNotQueryable):
        await sink.spend_nanos(key_name="alice", team=None, since=0.0)
    await sink.close()


async def test_the_ledger_writes_through_every_sink(sink: UsageSink) -> None:
    ledger = Ledger(sink, flush_interval=3600)
    await ledger.start()
    try:
        ledger.record(make(0))
        ledger.record(make(1))
        assert await ledger.flush() and ledger.pending == 0
        if isinstance(sink, JsonlSink):
            assert len(sink.path.read_text().splitlines()) == 2
        else:
            assert (await ledger.summary())[0]["requests"] == 2
    finally:
        await ledger.close()


async def test_records_arriving_after_close_are_counted_as_dropped(sink: UsageSink) -> None:
    ledger = Ledger(sink, flush_interval=3600)
    await ledger.start()
    ledger.record(make(0))
    await ledger.close()
    ledger.record(make(1))  # a stream that ended during shutdown
    assert ledger.health.dropped == 1 and ledger.pending == 0


# --- PostgreSQL only: migrations, a shared database, an outage, secrets ---------------------------------


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    sinks = [PostgresSink(postgres_url) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in sinks))
    try:
        conn = await asyncpg.connect(postgres_url)
        try:
            versions = [
                r[0] for r in await conn.fetch("SELECT version FROM usage_schema_versions ORDER BY 1")
            ]
        finally:
            await conn.close()
        assert versions == list(range(1, PG_VERSION + 1))
        await sinks[0].write_batch([make(0)])
        # What one replica wrote, another reads.
        assert [r.request_id for r in await sinks[2].records(request_id=None, key_name=None, limit=5)] == [
            "req-0"
        ]
    finally:
        await asyncio.gather(*(s.close() for s in sinks))


async def test_a_database_from_a_newer_gateway_is_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "CREATE TABLE usage_schema_versions (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        await conn.execute("INSERT INTO usage_schema_versions VALUES ($1, now())", PG_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(LedgerError, match="newer than this gateway"):
        await PostgresSink(postgres_url).start()


async def test_the_password_never_appears_in_errors_or_status(postgres_server: Any) -> None:
    url = postgres_server.url
    wrong = url.replace(PASSWORD, "not-the-password-42")
    sink = PostgresSink(wrong)
    with pytest.raises(LedgerError) as caught:
        await sink.start()
    assert "not-the-password-42" not in str(caught.value)
    assert "***" in str(caught.value)
    assert redact_url(url) == f"postgresql://postgres:***@127.0.0.1:{postgres_server.port}/postgres"
    ledger = Ledger(PostgresSink(url))
    assert PASSWORD not in json.dumps(ledger.status())


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not installed (scripts/test installs it)")
async def test_an_outage_spills_records_and_replays_them(tmp_path: Path) -> None:
    with PostgresServer() as server:
        spill = tmp_path / "spill.jsonl"
        ledger = Ledger(PostgresSink(server.url, timeout=2.0), flush_interval=3600, spill_path=str(spill))
        await ledger.start()
        try:
            ledger.record(make(0))
            assert await ledger.flush()
            await asyncio.to_thread(server.stop)
            ledger.record(make(1))
            ledger.record(make(2))
            assert not await ledger.flush()
            assert ledger.health.write_errors == 1 and ledger.health.spilled == 2 and spill.exists()
            assert "pg-test" not in (ledger.health.last_error or "")
            await asyncio.to_thread(server.start)
            ledger.record(make(3))
            # The pool reconnects on its own; the first write after the restart may still meet a dead
            # connection (counted as one more error), so flush until it takes.
            for _ in range(5):
                if await ledger.flush():
                    break
            assert ledger.health.replayed == 2 and not spill.exists()
            (total,) = await ledger.summary()
            assert total["requests"] == 4
            assert total["cost_nanos"] == sum(1_000 + i for i in range(4))
        finally:
            await ledger.close()


async def test_an_absurd_record_is_stored_within_bounds(queryable: UsageSink) -> None:
    ledger = Ledger(queryable, flush_interval=3600)
    await ledger.start()
    try:
        ledger.record(make(0, prompt_tokens=10**30, cost_nanos=-5, model="m\ud800\x00", cached_tokens=-1))
        assert await ledger.flush()
        (row,) = await ledger.records()
        assert row.cost_nanos == 0 and row.cached_tokens == 0 and "\x00" not in row.model
        assert asdict(row)["prompt_tokens"] > 0
    finally:
        await ledger.close()


# --- The daily rollup and retention (SQLite and PostgreSQL) ------------------------------------------------


def _by_group(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    # NULLs sort first in SQLite and last in PostgreSQL: compare groups by value, not by position.
    return {tuple((row["group"] or {}).values()): row for row in rows}


async def test_the_rollup_agrees_with_the_raw_records(queryable: UsageSink) -> None:
    batch = [
        make(0, key_name="alice", model="m1", day="2023-11-14", team="lab"),
        make(1, key_name="alice", model="m1", day="2023-11-14", team="lab", status=429, route=None),
        make(2, key_name="bob", model="m2", day="2023-11-15", team=None, cache_hit=True),
        make(3, key_name="bob", model="m2", day="2023-11-15", team=None, usage_source="estimated"),
    ]
    await queryable.write_batch(batch[:2])
    await queryable.write_batch(batch[2:])  # a second batch adds to the rows the first one made
    for group_by in (
        [],
        ["key"],
        ["team"],
        ["route"],
        ["day", "model"],
        ["key", "team", "model", "route", "day"],
    ):
        raw = await queryable.summary(group_by, since=None, until=None, key_name=None)
        rolled = await queryable.daily_summary(group_by, first_day=None, last_day=None, key_name=None)
        assert _by_group(rolled) == _by_group(raw), group_by
    (one_day,) = await queryable.daily_summary(
        [], first_day="2023-11-15", last_day="2023-11-15", key_name="bob"
    )
    assert one_day["requests"] == 2 and one_day["cache_hits"] == 1 and one_day["estimated"] == 1


async def test_retention_deletes_old_raw_records_and_keeps_their_totals(
    queryable: UsageSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.ledger.PRUNE_BATCH", 2)  # several small transactions
    ledger = Ledger(queryable, flush_interval=3600, retention_days=35)
    await ledger.start()
    try:
        old = [make(i, day="2023-10-01", ts=1_696_118_400.0 + i) for i in range(5)]
        recent = [make(10 + i, day="2023-12-20", ts=1_703_030_400.0 + i) for i in range(2)]
        for record in old + recent:
            ledger.record(record)
        before = await ledger.daily_summary()
        assert await ledger.prune(today=date(2024, 1, 1)) == 5
        assert await ledger.prune(today=date(2024, 1, 1)) == 0
        (raw,) = await ledger.summary()
        assert raw["requests"] == 2
        assert await ledger.daily_summary() == before  # the rollup still counts every day
        everything = sum(r.cost_nanos for r in old + recent)
        # A `total` budget (since 0) restores the deleted days from the rollup; a recent window needs none.
        assert await ledger.spend_nanos(key_name="alice", since=0.0) == everything
        assert await ledger.spend_nanos(key_name="alice", since=1_703_000_000.0) == 1_010 + 1_011
    finally:
        await ledger.close()


# --- Logged bodies (usage.log_bodies): their own table and retention ---------------------------------------


def body(request_id: str, day: str = "2023-12-20", key_name: str = "alice") -> BodyRecord:
    return BodyRecord(1_703_030_400.0, day, request_id, key_name, '[{"role":"user","content":"hi"}]', "hello")


async def test_bodies_are_kept_apart_and_pruned_on_their_own(
    queryable: UsageSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.ledger.PRUNE_BATCH", 2)
    ledger = Ledger(queryable, flush_interval=3600, retention_days=None, body_retention_days=7)
    await ledger.start()
    try:
        ledger.record(make(0, request_id="same", day="2023-12-01"))
        for i in range(3):
            ledger.record_body(body(f"old-{i}", day="2023-12-01"))
        ledger.record_body(body("same", day="2023-12-20"))
        ledger.record_body(body("same", day="2023-12-20", key_name="mallory"))
        (alice,) = await ledger.bodies(request_id="same", key_name="alice")
        assert (alice.request, alice.response) == ('[{"role":"user","content":"hi"}]', "hello")
        assert len(await ledger.bodies(request_id="same")) == 2
        await ledger.prune(today=date(2023, 12, 21))  # bodies older than 7 days go; records stay
        assert await ledger.bodies(request_id="old-0") == []
        assert len(await ledger.bodies(request_id="same")) == 2
        assert (await ledger.summary())[0]["requests"] == 1
    finally:
        await ledger.close()


async def test_bodies_a_failing_sink_refuses_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = SQLiteSink(":memory:")
    ledger = Ledger(sink, flush_interval=3600)
    await ledger.start()
    try:

        async def refuse(bodies: Any) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(sink, "write_bodies", refuse)
        ledger.record(make(0))
        ledger.record_body(body("r"))
        assert await ledger.flush()  # the record is written; the body is not, and says so
        assert ledger.health.bodies_dropped == 1 and ledger.status()["bodies_dropped"] == 1
    finally:
        await ledger.close()


async def test_time_buckets_count_requests_errors_tokens_cost_and_latency(queryable: UsageSink) -> None:
    base = 1_700_000_000.0
    await queryable.write_batch(
        [
            make(0, ts=base + 1, latency_ms=3.0),
            make(1, ts=base + 59.5, latency_ms=40.0, status=500, key_name="bob"),
            # bucket 1 is empty; bucket 2 holds one slow request
            make(2, ts=base + 120.0, latency_ms=700.0, prompt_tokens=7, completion_tokens=1),
            make(3, ts=base + 180.0, latency_ms=1.0),  # at `until`: outside
            make(4, ts=base - 0.5, latency_ms=1.0),  # before `since`: outside
        ]
    )
    rows = await queryable.buckets(since=base, until=base + 180.0, width=60.0, key_name=None)
    assert [r["start"] for r in rows] == [base, base + 60.0, base + 120.0]
    assert [r["requests"] for r in rows] == [2, 0, 1]
    assert [r["errors"] for r in rows] == [1, 0, 0]
    assert rows[0]["cost_nanos"] == 1_000 + 1_001 and rows[2]["cost_nanos"] == 1_002
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"]) == (7, 1)
    # Cumulative counts per edge (5, 10, 25, 50, 100, 250, 500, 1000, ... ms).
    assert rows[0]["latency_le"][:5] == [1, 1, 1, 2, 2] and rows[1]["latency_le"] == [0] * 13
    assert rows[2]["latency_le"][:8] == [0, 0, 0, 0, 0, 0, 0, 1]
    (bob,) = [r for r in await queryable.buckets(since=base, until=base + 60.0, width=60.0, key_name="bob")]
    assert bob["requests"] == 1 and bob["errors"] == 1


async def test_the_jsonl_sink_has_no_time_buckets(tmp_path: Path) -> None:
    sink = JsonlSink(str(tmp_path / "usage.jsonl"))
    with pytest.raises(LedgerNotQueryable):
        await sink.buckets(since=0.0, until=60.0, width=60.0, key_name=None)


async def test_records_are_found_by_trace_id(queryable: UsageSink) -> None:
    await queryable.write_batch([make(0, trace_id="a" * 32), make(1, trace_id="b" * 32), make(2)])
    (found,) = await queryable.records(request_id=None, key_name=None, limit=10, trace_id="b" * 32)
    assert found.request_id == "req-1" and found.trace_id == "b" * 32


async def test_a_postgres_ledger_from_before_trace_ids_gains_the_column(postgres_url: str) -> None:
    from gateway.ledger_postgres import MIGRATIONS

    conn = await asyncpg.connect(postgres_url)
    try:  # the database as the previous gateway left it: version 4, a row without trace_id
        await conn.execute(
            "CREATE TABLE usage_schema_versions (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ "
            "NOT NULL DEFAULT now())"
        )
        for number, statements in enumerate(MIGRATIONS[:4], start=1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO usage_schema_versions (version) VALUES ($1)", number)
        await conn.execute(
            "INSERT INTO usage (ts, day, request_id, key_name, model, endpoint, stream, prompt_tokens, "
            "completion_tokens, usage_source, cost_nanos, latency_ms, status, cache_hit) VALUES "
            "(1, '2026-01-01', 'old', 'alice', 'm', 'chat', false, 1, 1, 'reported', 5, 1.0, 200, false)"
        )
    finally:
        await conn.close()
    sink = PostgresSink(postgres_url)
    await sink.start()
    try:
        await sink.write_batch([make(1, trace_id="c" * 32)])
        new, old = await sink.records(request_id=None, key_name=None, limit=10)
        assert (new.trace_id, old.request_id, old.trace_id) == ("c" * 32, "old", None)
    finally:
        await sink.close()
    assert PG_VERSION == 5
