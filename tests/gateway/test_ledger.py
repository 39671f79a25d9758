"""The SQLite usage ledger: batching, durability across a restart, failed writes retried, exact sums."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from budget_fakes import usage_record

import gateway.ledger_sqlite
from gateway.ledger import Ledger, LedgerError, LedgerUnavailable, UsageRecord
from gateway.usage_record import COLUMNS


def make_record(i: int, **overrides: Any) -> UsageRecord:
    """Record number ``i``: its own request id, time and cost, so sums and orders are checkable."""
    values: dict[str, Any] = {
        "ts": 1_700_000_000.0 + i,
        "day": "2023-11-14",
        "request_id": f"req-{i}",
        "team": "research",
        "cost_nanos": 1_000 + i,
        "latency_ms": 12.5,
    }
    return usage_record(**{**values, **overrides})


def test_nothing_is_lost_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.sqlite3")

    async def first_run() -> None:
        # A long interval and a big batch: nothing is written before close() flushes.
        ledger = Ledger(path, batch_size=10_000, flush_interval=3600)
        await ledger.start()
        for i in range(500):
            ledger.record(make_record(i))
        assert ledger.pending == 500
        await ledger.close()

    async def second_run() -> list[dict[str, Any]]:
        ledger = Ledger(path)
        await ledger.start()
        try:
            return await ledger.summary()
        finally:
            await ledger.close()

    asyncio.run(first_run())
    (total,) = asyncio.run(second_run())
    assert total["requests"] == 500
    assert total["cost_nanos"] == sum(1_000 + i for i in range(500))
    assert total["prompt_tokens"] == 5000

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ids = [row[0] for row in conn.execute("SELECT request_id FROM usage ORDER BY id")]
    assert ids == [f"req-{i}" for i in range(500)]


def test_batches_are_written_in_the_background() -> None:
    async def scenario() -> None:
        ledger = Ledger(":memory:", batch_size=3, flush_interval=3600)
        await ledger.start()
        try:
            for i in range(3):
                ledger.record(make_record(i))
            # A full batch wakes the writer without waiting for the interval.
            for _ in range(200):
                if ledger.pending == 0:
                    break
                await asyncio.sleep(0.01)
            assert ledger.pending == 0
            records = await ledger.records()
            assert [r.request_id for r in records] == ["req-2", "req-1", "req-0"]
            assert records[0] == make_record(2)
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_a_failed_write_is_retried_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        ledger = Ledger(":memory:", flush_interval=3600)
        await ledger.start()
        try:
            failures = iter([sqlite3.OperationalError("disk I/O error")])
            real_write = gateway.ledger_sqlite.write

            def flaky_write(conn: sqlite3.Connection, batch: Any) -> None:
                error = next(failures, None)
                if error is not None:
                    raise error
                real_write(conn, batch)

            monkeypatch.setattr(gateway.ledger_sqlite, "write", flaky_write)
            ledger.record(make_record(1))
            # In memory there is no spill file: the batch stays queued, and the error is counted.
            assert not await ledger.flush()
            assert ledger.pending == 1 and ledger.health.write_errors == 1
            ledger.record(make_record(2))
            await ledger.flush()
            assert ledger.pending == 0
            assert {r.request_id for r in await ledger.records()} == {"req-1", "req-2"}
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_summary_groups_and_time_range() -> None:
    async def scenario() -> None:
        ledger = Ledger(":memory:")
        await ledger.start()
        try:
            ledger.record(make_record(0, key_name="alice", model="gpt-4o", day="2023-11-14"))
            ledger.record(make_record(1, key_name="bob", team=None, model="gpt-4o-mini", day="2023-11-14"))
            ledger.record(make_record(2, key_name="bob", team=None, model="gpt-4o", day="2023-11-15"))
            ledger.record(
                make_record(
                    3, key_name="bob", team=None, cache_hit=True, cost_nanos=0, usage_source="estimated"
                )
            )
            ledger.record(make_record(4, status=429, cost_nanos=0, usage_source="none"))
            by_key = {row["group"]["key"]: row for row in await ledger.summary(["key"])}
            assert by_key["alice"]["requests"] == 2
            assert by_key["alice"]["errors"] == 1
            assert by_key["bob"]["requests"] == 3
            assert by_key["bob"]["cache_hits"] == 1
            assert by_key["bob"]["estimated"] == 1
            assert by_key["bob"]["cost_nanos"] == 1_001 + 1_002
            by_model = {row["group"]["model"]: row["requests"] for row in await ledger.summary(["model"])}
            assert by_model == {"gpt-4o": 4, "gpt-4o-mini": 1}
            by_day = [row["group"]["day"] for row in await ledger.summary(["day"])]
            assert by_day == ["2023-11-14", "2023-11-15"]
            by_team = {row["group"]["team"]: row["requests"] for row in await ledger.summary(["team"])}
            assert by_team == {None: 3, "research": 2}
            window = await ledger.summary(since=1_700_000_001.0, until=1_700_000_003.0)
            assert window[0]["requests"] == 2
            assert await ledger.spend_nanos(key_name="bob", since=1_700_000_002.0) == 1_002
            assert await ledger.spend_nanos(team="research") == 1_000
            assert await ledger.spend_nanos(key_name="nobody") == 0
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_close_is_safe_twice_and_reads_after_close_fail_clearly() -> None:
    async def scenario() -> None:
        ledger = Ledger(":memory:")
        await ledger.start()
        await ledger.close()
        await ledger.close()
        with pytest.raises(LedgerUnavailable, match="not open"):
            await ledger.summary()

    asyncio.run(scenario())


def test_a_ledger_from_an_older_gateway_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    # The schema before attempts and ttft_ms, and before user_version.
    columns = COLUMNS[: COLUMNS.index("attempts")]
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE usage (id INTEGER PRIMARY KEY, {', '.join(columns)})")
        conn.execute(
            f"INSERT INTO usage ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [getattr(make_record(0), c) for c in columns],
        )

    async def scenario() -> list[UsageRecord]:
        ledger = Ledger(str(path))
        await ledger.start()
        try:
            ledger.record(make_record(1, attempts=2, ttft_ms=12.5))
            return await ledger.records()
        finally:
            await ledger.close()

    new, old = asyncio.run(scenario())
    assert (new.attempts, new.ttft_ms) == (2, 12.5)
    assert (old.attempts, old.ttft_ms) == (0, None)
    assert old.request_id == "req-0"


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    path.write_text("these are my notes, not a database " * 100)

    async def scenario() -> None:
        ledger = Ledger(str(path))
        with pytest.raises(
            LedgerError, match=r"cannot open the usage ledger '.*notes\.sqlite3': file is not a database"
        ):
            await ledger.start()

    asyncio.run(scenario())
    assert path.read_text().startswith("these are my notes")
