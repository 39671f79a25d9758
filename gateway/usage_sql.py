"""The ledger's read queries as SQL, written once for every SQL sink (SQLite's ``?`` and PostgreSQL's ``$n``).

Only column names from :data:`~gateway.usage_record.GROUP_COLUMNS` and :data:`~gateway.usage_record.COLUMNS`
are ever spliced into the text; every value is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.usage_record import COLUMNS, GROUP_COLUMNS, SUMMARY_FIELDS

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
    placeholder: Placeholder, *, request_id: str | None, key_name: str | None, limit: int, newest: str
) -> tuple[str, list[Any]]:
    """The newest ``limit`` records (``newest``: the column that orders them), of a request and/or key."""
    where = _Where(placeholder)
    if request_id is not None:
        where.add("request_id = {}", request_id)
    if key_name is not None:
        where.add("key_name = {}", key_name)
    params = [*where.params, limit]
    sql = f"SELECT {', '.join(COLUMNS)} FROM usage{where.sql()} ORDER BY {newest} DESC"
    sql += f" LIMIT {placeholder(len(params))}"
    return sql, params
