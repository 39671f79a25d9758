"""The ledger's read queries as SQL, written once for every SQL sink (SQLite's ``?`` and PostgreSQL's ``$n``).

Only column names from :data:`~gateway.usage_record.GROUP_COLUMNS` and :data:`~gateway.usage_record.COLUMNS`
are ever spliced into the text; every value is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.usage_bodies import BODY_COLUMNS
from gateway.usage_record import COLUMNS, GROUP_COLUMNS, SUMMARY_FIELDS, UsageRecord

Placeholder = Callable[[int], str]


def qmark(_: int) -> str:
    """SQLite's placeholder."""
    return "?"


def dollar(index: int) -> str:
    """PostgreSQL's (asyncpg's) placeholder, numbered from 1."""
    return f"${index}"


@dataclass
class _Where:
    placeholder: Placeholder
    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, template: str, value: Any) -> None:
        self.params.append(value)
        self.clauses.append(template.format(self.placeholder(len(self.params))))

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def spend(placeholder: Placeholder, column: str, value: str, since: float) -> tuple[str, list[Any]]:
    """Total cost of one key (``column`` ``key_name``) or team since ``since``."""
    assert column in ("key_name", "team")
    where = _Where(placeholder)
    where.add(f"{column} = {{}}", value)
    where.add("ts >= {}", since)
    return f"SELECT COALESCE(SUM(cost_nanos), 0) FROM usage{where.sql()}", where.params


def summary(
    placeholder: Placeholder,
    group_by: Sequence[str],
    *,
    since: float | None,
    until: float | None,
    key_name: str | None,
) -> tuple[str, list[Any]]:
    """One row per group (or one in total): the group values, then :data:`SUMMARY_FIELDS` in order."""
    where = _Where(placeholder)
    if since is not None:
        where.add("ts >= {}", since)
    if until is not None:
        where.add("ts < {}", until)
    if key_name is not None:
        where.add("key_name = {}", key_name)
    groups = [GROUP_COLUMNS[name] for name in group_by]
    sql = (
        f"SELECT {', '.join(groups) + ', ' if groups else ''}COUNT(*), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_nanos), 0), "
        "COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(avoided_cost_nanos), 0) FROM usage{where.sql()}"
    )
    if groups:
        sql += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
    return sql, where.params


def summary_rows(group_by: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`summary` as dicts: ``group`` (a dict of dimension to value, None without
    ``group_by``) and every field of :data:`SUMMARY_FIELDS` as an int."""
    out = []
    for row in rows:
        values = tuple(row)
        head, tail = values[: len(group_by)], values[len(group_by) :]
        entry: dict[str, Any] = {"group": dict(zip(group_by, head, strict=True)) if group_by else None}
        entry.update({name: int(value) for name, value in zip(SUMMARY_FIELDS, tail, strict=True)})
        out.append(entry)
    return out


def records(
    placeholder: Placeholder,
    *,
    request_id: str | None,
    key_name: str | None,
    limit: int,
    newest: str,
    trace_id: str | None = None,
) -> tuple[str, list[Any]]:
    """The newest ``limit`` records (``newest``: the column that orders them), of a request, key and/or
    trace id."""
    where = _Where(placeholder)
    if request_id is not None:
        where.add("request_id = {}", request_id)
    if key_name is not None:
        where.add("key_name = {}", key_name)
    if trace_id is not None:
        where.add("trace_id = {}", trace_id)
    params = [*where.params, limit]
    sql = f"SELECT {', '.join(COLUMNS)} FROM usage{where.sql()} ORDER BY {newest} DESC"
    sql += f" LIMIT {placeholder(len(params))}"
    return sql, params


# --- Time buckets (the console's charts) --------------------------------------------------------------------

LATENCY_EDGES_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
"""Upper bounds (ms) of the latency histogram each time bucket carries. SQLite has no percentile function, so
p50/p99 per bucket are estimated from these cumulative counts, as Prometheus' ``histogram_quantile`` does."""
BUCKET_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_nanos", "cache_hits")


def buckets(
    placeholder: Placeholder,
    floor: str,
    *,
    since: float,
    until: float,
    width: float,
    key_name: str | None,
) -> tuple[str, list[Any]]:
    """One row per non-empty ``width``-second bucket of ``[since, until)``: its index from ``since``, then
    :data:`BUCKET_FIELDS`, then the count of requests at most each of :data:`LATENCY_EDGES_MS`.

    ``floor`` is the database's floor of a non-negative number (``{}`` where the number goes).
    """
    # The bucket expression comes first in the text, so its parameters come first (SQLite's ``?`` are
    # numbered in the order they appear).
    index = floor.format(f"(ts - {placeholder(1)}) / {placeholder(2)}")
    where = _Where(placeholder, params=[since, width])
    where.add("ts >= {}", since)
    where.add("ts < {}", until)
    if key_name is not None:
        where.add("key_name = {}", key_name)
    # The edges are this module's integer constants, never input.
    histogram = ", ".join(
        f"COALESCE(SUM(CASE WHEN latency_ms <= {edge} THEN 1 ELSE 0 END), 0)" for edge in LATENCY_EDGES_MS
    )
    sql = (
        f"SELECT {index}, COUNT(*), COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_nanos), 0), "
        "COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0), "
        f"{histogram} FROM usage{where.sql()} GROUP BY 1 ORDER BY 1"
    )
    return sql, where.params


def bucket_rows(
    rows: Sequence[Sequence[Any]], since: float, width: float, count: int
) -> list[dict[str, Any]]:
    """Rows of :func:`buckets` as ``count`` dicts, one per bucket (empty buckets zero): ``start`` (Unix
    seconds), every field of :data:`BUCKET_FIELDS` and ``latency_le`` (cumulative counts per edge)."""
    empty = len(BUCKET_FIELDS) + len(LATENCY_EDGES_MS)
    found = {int(row[0]): [int(v) for v in tuple(row)[1:]] for row in rows}
    out = []
    for index in range(count):
        values = found.get(index, [0] * empty)
        entry: dict[str, Any] = {"start": since + index * width}
        entry.update(zip(BUCKET_FIELDS, values, strict=False))
        entry["latency_le"] = values[len(BUCKET_FIELDS) :]
        out.append(entry)
    return out


# --- The daily rollup: usage_daily, one row per (day, key, team, model, route) -----------------------------

ROLLUP_KEYS = ("day", "key_name", "team", "model", "route")
ROLLUP_DIMENSIONS = frozenset({"day", "key", "team", "model", "route"})
"""The ``group_by`` dimensions the rollup can answer (the others need the raw rows)."""
# NULL team or route is stored as '' in the rollup: a primary key column cannot match NULL to NULL.
_ROLLUP_EXPRESSIONS = {
    "day": "day",
    "key": "key_name",
    "team": "NULLIF(team, '')",
    "model": "model",
    "route": "NULLIF(route, '')",
}
_SUMS = tuple(name for name in SUMMARY_FIELDS)


def rollup_table(integer: str) -> str:
    """``CREATE TABLE usage_daily`` with ``integer`` the database's 64-bit integer type."""
    sums = ", ".join(f"{name} {integer} NOT NULL" for name in _SUMS)
    return (
        "CREATE TABLE IF NOT EXISTS usage_daily (day TEXT NOT NULL, key_name TEXT NOT NULL, "
        "team TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL, "
        f"{sums}, PRIMARY KEY ({', '.join(ROLLUP_KEYS)}))"
    )


# The rollup of rows already in ``usage`` (a migration fills the new table from them).
ROLLUP_BACKFILL = (
    f"INSERT INTO usage_daily ({', '.join(ROLLUP_KEYS)}, {', '.join(_SUMS)}) "
    "SELECT day, key_name, COALESCE(team, ''), model, COALESCE(route, ''), COUNT(*), "
    "SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_nanos), "
    "SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END), SUM(cached_tokens), "
    "SUM(avoided_cost_nanos) "
    "FROM usage GROUP BY day, key_name, COALESCE(team, ''), model, COALESCE(route, '')"
)
PRUNED_TABLE = "CREATE TABLE IF NOT EXISTS usage_pruned (id INTEGER PRIMARY KEY, before_day TEXT NOT NULL)"


def rollup_upsert(placeholder: Placeholder) -> str:
    """Add one aggregated row to ``usage_daily`` (insert it, or add its sums to the row there)."""
    names = (*ROLLUP_KEYS, *_SUMS)
    values = ", ".join(placeholder(i + 1) for i in range(len(names)))
    updates = ", ".join(f"{name} = usage_daily.{name} + excluded.{name}" for name in _SUMS)
    return (
        f"INSERT INTO usage_daily ({', '.join(names)}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(ROLLUP_KEYS)}) DO UPDATE SET {updates}"
    )


def rollup_rows(batch: Sequence[UsageRecord]) -> list[tuple[Any, ...]]:
    """``batch`` aggregated per rollup key: the parameters of :func:`rollup_upsert`, one tuple per row."""
    sums: dict[tuple[str, str, str, str, str], list[int]] = {}
    for r in batch:
        key = (r.day, r.key_name, r.team or "", r.model, r.route or "")
        row = sums.setdefault(key, [0] * len(_SUMS))
        for index, value in enumerate(
            (1, r.prompt_tokens, r.completion_tokens, r.cost_nanos, int(bool(r.cache_hit)),
             int(r.status >= 400), int(r.usage_source == "estimated"), r.cached_tokens, r.avoided_cost_nanos)
        ):  # fmt: skip
            row[index] += value
    return [(*key, *values) for key, values in sums.items()]


def daily_summary(
    placeholder: Placeholder,
    group_by: Sequence[str],
    *,
    first_day: str | None,
    last_day: str | None,
    key_name: str | None,
) -> tuple[str, list[Any]]:
    """Like :func:`summary`, from the rollup, for the whole days ``[first_day, last_day]`` (ISO dates)."""
    where = _Where(placeholder)
    if first_day is not None:
        where.add("day >= {}", first_day)
    if last_day is not None:
        where.add("day <= {}", last_day)
    if key_name is not None:
        where.add("key_name = {}", key_name)
    groups = [_ROLLUP_EXPRESSIONS[name] for name in group_by]
    sums = ", ".join(f"COALESCE(SUM({name}), 0)" for name in _SUMS)
    sql = f"SELECT {', '.join(groups) + ', ' if groups else ''}{sums} FROM usage_daily{where.sql()}"
    if groups:
        sql += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
    return sql, where.params


def pruned_spend(placeholder: Placeholder, column: str, value: str, before_day: str) -> tuple[str, list[Any]]:
    """The cost in the rollup of the days whose raw rows retention deleted (``day < before_day``)."""
    assert column in ("key_name", "team")
    where = _Where(placeholder)
    where.add(f"{column} = {{}}", value)
    where.add("day < {}", before_day)
    return f"SELECT COALESCE(SUM(cost_nanos), 0) FROM usage_daily{where.sql()}", where.params


def pruned_horizon(before_day: str) -> float:
    """A moment before the start of ``before_day`` in every time zone (UTC midnight less a day): a spend
    window starting earlier than it reaches into the days retention deleted, which the rollup then adds."""
    from datetime import UTC, datetime, timedelta

    return (datetime.fromisoformat(before_day).replace(tzinfo=UTC) - timedelta(days=1)).timestamp()


def prune(placeholder: Placeholder, before_day: str, limit: int) -> tuple[str, list[Any]]:
    """Delete at most ``limit`` raw rows of days before ``before_day`` (one small transaction)."""
    sql = (
        "DELETE FROM usage WHERE id IN "
        f"(SELECT id FROM usage WHERE day < {placeholder(1)} LIMIT {placeholder(2)})"
    )
    return sql, [before_day, limit]


def record_pruned(placeholder: Placeholder, before_day: str) -> tuple[str, list[Any]]:
    """Remember how far retention has deleted (only ever forward)."""
    sql = (
        f"INSERT INTO usage_pruned (id, before_day) VALUES (1, {placeholder(1)}) ON CONFLICT (id) DO UPDATE "
        "SET before_day = CASE WHEN excluded.before_day > usage_pruned.before_day "
        "THEN excluded.before_day ELSE usage_pruned.before_day END"
    )
    return sql, [before_day]


# --- Bodies (usage.log_bodies): their own table, their own retention ----------------------------------------


def bodies_table(primary_key: str, real: str) -> list[str]:
    """``usage_bodies`` and its indexes; ``primary_key`` and ``real`` in the database's dialect."""
    return [
        f"CREATE TABLE IF NOT EXISTS usage_bodies (id {primary_key}, ts {real} NOT NULL, day TEXT NOT NULL, "
        "request_id TEXT NOT NULL, key_name TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS usage_bodies_request_key ON usage_bodies (request_id, key_name)",
        "CREATE INDEX IF NOT EXISTS usage_bodies_day ON usage_bodies (day)",
    ]


def insert_body(placeholder: Placeholder) -> str:
    """Insert one :class:`~gateway.usage_bodies.BodyRecord`."""
    values = ", ".join(placeholder(i + 1) for i in range(len(BODY_COLUMNS)))
    return f"INSERT INTO usage_bodies ({', '.join(BODY_COLUMNS)}) VALUES ({values})"


def bodies(placeholder: Placeholder, request_id: str, key_name: str | None) -> tuple[str, list[Any]]:
    """The bodies logged for one request (of one key), newest first."""
    where = _Where(placeholder)
    where.add("request_id = {}", request_id)
    if key_name is not None:
        where.add("key_name = {}", key_name)
    return (
        f"SELECT {', '.join(BODY_COLUMNS)} FROM usage_bodies{where.sql()} ORDER BY id DESC LIMIT 10",
        where.params,
    )


def prune_bodies(placeholder: Placeholder, before_day: str, limit: int) -> tuple[str, list[Any]]:
    """Delete at most ``limit`` bodies of days before ``before_day``."""
    sql = (
        "DELETE FROM usage_bodies WHERE id IN "
        f"(SELECT id FROM usage_bodies WHERE day < {placeholder(1)} LIMIT {placeholder(2)})"
    )
    return sql, [before_day, limit]
