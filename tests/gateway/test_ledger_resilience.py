"""The ledger cannot die: absurd records, failing writes, a read-only, deleted or replaced file."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from budget_fakes import usage_record

import gateway.ledger_sqlite
from gateway.ledger import Ledger, LedgerUnavailable, UsageRecord
from gateway.ledger_sqlite import SQLiteSink
from gateway.pricing import MAX_NANOS


def make_record(i: int, **overrides: Any) -> UsageRecord:
    """Record number ``i`` with its own request id, time and cost."""
    values: dict[str, Any] = {"ts": 1_700_000_000.0 + i, "request_id": f"req-{i}", "cost_nanos": 1_000 + i}
    return usage_record(**{**values, **overrides})


class Switch:
    """A connect function for the ledger that opens the file read-only, or not at all, when told to."""

    def __init__(self) -> None:
        self.mode = "rw"
        self.opens = 0

    def __call__(self, path: str) -> sqlite3.Connection:
        self.opens += 1
        if self.mode == "gone":
            raise sqlite3.OperationalError("unable to open database file")
        if self.mode == "ro":
            return sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
        return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


def sqlite_sink(ledger: Ledger) -> SQLiteSink:
    assert isinstance(ledger.sink, SQLiteSink)
    return ledger.sink


async def _wait_for(condition: Any) -> None:
    # Polls an in-process condition the background writer makes true; no timing is asserted.
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


@pytest.mark.anyio
async def test_an_absurd_record_does_not_stop_the_ledger() -> None:
    """10^30 tokens used to raise OverflowError in the writer and fail every read after it."""
    ledger = Ledger(":memory:", flush_interval=3600)
    await ledger.start()
    try:
        ledger.record(make_record(0, prompt_tokens=10**30, completion_tokens=-5, cost_nanos=10**30))
        ledger.record(make_record(1, model="m\ud800"))  # a lone surrogate SQLite cannot encode
        ledger.record(make_record(2))
        (total,) = await ledger.summary()
        assert total["requests"] == 3
        assert total["cost_nanos"] == MAX_NANOS + 1_001 + 1_002
        assert ledger.health.write_errors == 0
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_reads_answer_while_writes_fail_and_spilled_records_are_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "usage.sqlite3")
    switch = Switch()
    ledger = Ledger(path, flush_interval=3600, connect=switch)
    await ledger.start()
    try:
        ledger.record(make_record(0))
        assert await ledger.flush()
        switch.mode = "ro"
        await asyncio.to_thread(
            sqlite_sink(ledger)._drop_connection
        )  # as if the file had just been made read-only
        for i in range(1, 4):
            ledger.record(make_record(i))
        with caplog.at_level(logging.ERROR, "gateway.usage"):
            assert not await ledger.flush()
            ledger.record(make_record(4))
            assert not await ledger.flush()
        # Counted, logged once for the streak, spilled (not held in memory), and reads still answer.
        assert ledger.health.write_errors == 2 and ledger.health.spilled == 4 and ledger.pending == 0
        assert "readonly" in (ledger.health.last_error or "")
        assert len([r for r in caplog.records if "write failed" in r.getMessage()]) == 1
        assert (await ledger.summary())[0]["requests"] == 1
        assert ledger.status()["spill_file"] == path + "-spill.jsonl"
        switch.mode = "rw"
        ledger.record(make_record(5))
        assert await ledger.flush()
        (total,) = await ledger.summary()
        assert total["requests"] == 6
        assert total["cost_nanos"] == sum(1_000 + i for i in range(6))
        assert ledger.health.replayed == 4 and not Path(path + "-spill.jsonl").exists()
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_records_spilled_at_shutdown_are_replayed_at_the_next_start(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.sqlite3")
    first = Ledger(path, flush_interval=3600)
    await first.start()
    first.record(make_record(0))
    await first.flush()
    switch = Switch()
    switch.mode = "ro"
    await first.close()

    second = Ledger(path, flush_interval=3600, connect=switch)
    await second.start()  # a read-only file: starts, reads, spills
    for i in range(1, 3):
        second.record(make_record(i))
    assert (await second.summary())[0]["requests"] == 1
    await second.close()
    assert second.health.spilled == 2

    still_read_only = Ledger(path, flush_interval=3600, connect=switch)
    await still_read_only.start()  # the spill file cannot be replayed yet: it starts anyway, keeping it
    assert still_read_only.health.write_errors == 1
    assert (await still_read_only.summary())[0]["requests"] == 1
    await still_read_only.close()
    assert Path(path + "-spill.jsonl").exists()

    third = Ledger(path)
    await third.start()
    try:
        (total,) = await third.summary()
        assert total["requests"] == 3 and third.health.replayed == 2
    finally:
        await third.close()


@pytest.mark.anyio
async def test_a_ledger_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.sqlite3")
    switch = Switch()
    ledger = Ledger(path, flush_interval=3600, connect=switch)
    await ledger.start()
    try:
        switch.mode = "gone"
        await asyncio.to_thread(sqlite_sink(ledger)._drop_connection)
        ledger.record(make_record(0))
        with pytest.raises(LedgerUnavailable, match="cannot be read: unable to open database file"):
            await ledger.summary()
        assert ledger.health.spilled == 1
    finally:
        switch.mode = "rw"
        await ledger.close()


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_deleted_or_replaced_file_is_detected_and_recreated(
    how: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.sqlite3"
    ledger = Ledger(str(path), flush_interval=3600)
    await ledger.start()
    try:
        ledger.record(make_record(0))
        await ledger.flush()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        if how == "replaced":
            with sqlite3.connect(path) as other:
                other.execute("CREATE TABLE notes (text TEXT)")
        ledger.record(make_record(1))
        with caplog.at_level(logging.ERROR, "gateway.usage"):
            assert await ledger.flush()
        assert any(how in r.getMessage() and "reopening" in r.getMessage() for r in caplog.records)
        assert ledger.health.reopened == 1
        # The new record is in the file now at the path, which a restart would read.
        with sqlite3.connect(path) as conn:
            assert [row[0] for row in conn.execute("SELECT request_id FROM usage")] == ["req-1"]
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_a_dead_writer_is_restarted() -> None:
    ledger = Ledger(":memory:", batch_size=2, flush_interval=3600)
    await ledger.start()
    try:
        task = ledger._task
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        ledger.record(make_record(0))
        ledger.record(make_record(1))  # a full batch wakes the (restarted) writer
        await _wait_for(lambda: ledger.pending == 0)
        assert ledger.health.writer_restarts == 1
        assert len(await ledger.records()) == 2
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_the_memory_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # In memory there is no spill file: a failing database keeps records in memory, at most max_pending.
    ledger = Ledger(":memory:", flush_interval=3600, max_pending=10)
    await ledger.start()
    try:

        def broken(conn: sqlite3.Connection, batch: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        real = gateway.ledger_sqlite.write
        monkeypatch.setattr(gateway.ledger_sqlite, "write", broken)
        for i in range(25):
            ledger.record(make_record(i))
        assert not await ledger.flush()
        assert ledger.pending == 10 and ledger.health.dropped == 15
        monkeypatch.setattr(gateway.ledger_sqlite, "write", real)
        assert await ledger.flush()
        assert [r.request_id for r in await ledger.records(limit=3)] == ["req-24", "req-23", "req-22"]
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_request_ids_are_scoped_per_key() -> None:
    ledger = Ledger(":memory:")
    await ledger.start()
    try:
        ledger.record(make_record(0, request_id="same", key_name="alice", cost_nanos=5))
        ledger.record(make_record(1, request_id="same", key_name="mallory", cost_nanos=7))
        (alice,) = await ledger.records(request_id="same", key_name="alice")
        assert alice.cost_nanos == 5
        assert {r.key_name for r in await ledger.records(request_id="same")} == {"alice", "mallory"}
    finally:
        await ledger.close()


def test_spill_file_lines_that_cannot_be_read_are_skipped(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.sqlite3")
    good = Ledger(path)

    async def run() -> int:
        await good.start()
        try:
            return int((await good.summary())[0]["requests"])
        finally:
            await good.close()

    spill = Path(path + "-spill.jsonl")
    import json
    from dataclasses import asdict

    spill.write_text(json.dumps(asdict(make_record(0))) + "\n" + '{"ts": 1, "torn' + "\n")
    assert asyncio.run(run()) == 1
    assert not spill.exists()
    assert os.path.exists(path)
