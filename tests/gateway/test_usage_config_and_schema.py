"""``usage:`` config (sink choice, errors naming the key, no password echoed) and the SQLite schema's
``PRAGMA user_version`` migrations (from an empty file, from the unversioned schema, from version 1)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from budget_fakes import usage_record

from gateway.config import ConfigError, parse_config
from gateway.ledger import Ledger
from gateway.ledger_jsonl import JsonlSink
from gateway.ledger_postgres import PostgresSink
from gateway.ledger_sqlite import _V1, SCHEMA_VERSION, SQLiteSink, migrate
from gateway.usage_bodies import LogBodiesConfig, Redaction, body_record
from gateway.usage_record import COLUMNS, LedgerError
from gateway.usage_sink import open_sink


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.yaml")
    return info.value.problems


def test_the_sink_is_chosen_by_usage_sink(tmp_path: Path) -> None:
    assert isinstance(open_sink(parse_config("usage:\n  database: ':memory:'\n").usage), SQLiteSink)
    jsonl = parse_config(f"usage:\n  sink: jsonl\n  jsonl_path: {tmp_path / 'u.jsonl'}\n").usage
    assert isinstance(open_sink(jsonl), JsonlSink)
    postgres = parse_config(
        "usage:\n  sink: postgres\n  postgres_url: postgresql://u:pw@127.0.0.1/db\n"
    ).usage
    sink = open_sink(postgres)
    assert isinstance(sink, PostgresSink) and sink.location == "postgresql://u:***@127.0.0.1/db"


def test_a_missing_or_wrong_sink_setting_names_the_key() -> None:
    (missing,) = problems("usage:\n  sink: postgres\n")
    assert "usage.postgres_url" in missing and "required when usage.sink is postgres" in missing
    (missing_path,) = problems("usage:\n  sink: jsonl\n")
    assert "usage.jsonl_path" in missing_path
    (unknown,) = problems("usage:\n  sink: mongodb\n")
    assert "usage.sink" in unknown
    (scheme,) = problems("usage:\n  sink: postgres\n  postgres_url: mysql://root:hunter2secret@db/x\n")
    assert "usage.postgres_url" in scheme and "hunter2secret" not in scheme
    (nowhere,) = problems("usage:\n  sink: jsonl\n  jsonl_path: /no/such/dir/usage.jsonl\n")
    assert "usage.jsonl_path" in nowhere and "does not exist" in nowhere


def _version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute("PRAGMA table_info(usage)")}


def _roundtrip(path: Path) -> list[str]:
    async def scenario() -> list[str]:
        ledger = Ledger(str(path), flush_interval=3600)
        await ledger.start()
        try:
            ledger.record(usage_record(request_id="new", cached_tokens=3, region="eu", error_code="x"))
            return [r.request_id for r in await ledger.records()]
        finally:
            await ledger.close()

    return asyncio.run(scenario())


def test_an_empty_file_is_migrated_to_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    path.touch()
    assert _roundtrip(path) == ["new"]
    assert _version(path) == SCHEMA_VERSION
    assert _columns(path) == {"id", *COLUMNS}


def test_a_version_1_file_keeps_its_rows_and_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    old = [c for c in COLUMNS if c not in _columns_added_after_1()]
    with sqlite3.connect(path) as conn:
        for statement in _V1:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        record = usage_record(request_id="old")
        conn.execute(
            f"INSERT INTO usage ({', '.join(old)}) VALUES ({', '.join('?' for _ in old)})",
            [getattr(record, c) for c in old],
        )
    assert _roundtrip(path) == ["new", "old"]
    assert _version(path) == SCHEMA_VERSION


def _columns_added_after_1() -> set[str]:
    return {"cached_tokens", "avoided_cost_nanos", "cache_status", "error_code", "overhead_ms", "region",
            "reservation_id", "trace_id"}  # fmt: skip


def test_a_file_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    async def scenario() -> None:
        with pytest.raises(LedgerError, match="newer than this gateway"):
            await Ledger(str(path)).start()

    asyncio.run(scenario())


def test_a_failed_migration_leaves_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as conn:
        for statement in _V1:
            conn.execute(statement)
        conn.execute("ALTER TABLE usage ADD COLUMN region TEXT")  # collides with migration 2
        conn.execute("PRAGMA user_version = 1")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="duplicate column"):
            migrate(conn)
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == 1
        assert "cached_tokens" not in {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
    finally:
        conn.close()


def test_body_redaction_hides_addresses_and_credentials() -> None:
    config = LogBodiesConfig(redact=[r"\b\d{4}-\d{4}-\d{4}-\d{4}\b"], max_chars=200)
    text = (
        "mail ada@example.org, key sk-proj-abcdefghijklmnop, Authorization: Bearer abc.def.ghi123, "
        "card 4111-1111-1111-1111, keep this"
    )
    record = body_record(config, Redaction(config.redact), ts=0.0, day="d", request_id="r", key_name="k",
                         request=text, response="x" * 500)  # fmt: skip
    for secret in ("ada@example.org", "sk-proj-abcdefghijklmnop", "abc.def.ghi123", "4111-1111-1111-1111"):
        assert secret not in record.request
    assert record.request.count("[redacted]") == 4 and record.request.endswith("keep this")
    assert record.response == "x" * 200


def test_log_bodies_settings_are_checked() -> None:
    (bad,) = problems("usage:\n  log_bodies:\n    redact: ['(unclosed']\n")
    assert "usage.log_bodies.redact" in bad and "not a regular expression" in bad
    (jsonl,) = problems("usage:\n  sink: jsonl\n  jsonl_path: u.jsonl\n  log_bodies: {}\n")
    assert "usage.log_bodies" in jsonl and "sqlite or postgres" in jsonl
    assert parse_config("usage:\n  log_bodies: {retention_days: 3}\n").usage.log_bodies is not None


def test_the_postgres_password_is_a_secret_the_gateway_redacts() -> None:
    from gateway.redact import Redactor

    config = parse_config(
        "usage:\n  sink: postgres\n  postgres_url: postgresql://gw:Zq8-hunter-77@db/usage\n"
    )
    redactor = Redactor.from_config(config)
    assert redactor.text("upstream said: password Zq8-hunter-77 rejected") == (
        "upstream said: password [redacted] rejected"
    )


def test_budgets_over_a_jsonl_sink_say_once_that_they_cannot_restore(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.app import create_app

    keys = "".join(
        f"    - {{name: k{i}, key: sk-budget-key-{i}, budget: {{limit_usd: 5, period: daily}}}}\n"
        for i in range(3)
    )
    config = parse_config(
        f"auth:\n  keys:\n{keys}usage:\n  sink: jsonl\n  jsonl_path: {tmp_path / 'usage.jsonl'}\n"
    )

    async def scenario() -> None:
        gateway = create_app(config).state.gateway
        await gateway.start()
        await gateway.close()

    with caplog.at_level("WARNING", "gateway"):
        asyncio.run(scenario())
    said = [r for r in caplog.records if "budgets start from the state store alone" in r.getMessage()]
    assert len(said) == 1 and "usage.sink is jsonl" in said[0].getMessage()
    assert not [r for r in caplog.records if "spend not restored" in r.getMessage()]
