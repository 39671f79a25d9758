"""What each console page shows, read through the same library functions the admin API calls.

Usage comes from the usage ledger (:class:`gateway.ledger.Ledger`), budgets from the budgets stage's
report, routes from the routing stage's snapshot, keys from :class:`gateway.admin.keys.KeyAdmin`: the
console adds no second implementation of any of them, only shapes their answers for a template.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.console import charts
from gateway.console.bucket_cache import BucketCache, add_buckets, add_by_model
from gateway.features.budgets import BudgetStage
from gateway.features.routing import routes_endpoint
from gateway.features.usage import UsageStage
from gateway.ledger import Ledger
from gateway.pricing import format_usd
from gateway.usage_record import GroupBy, UsageRecord

if TYPE_CHECKING:
    from gateway.app import Gateway


def usage_stage(gateway: Gateway) -> UsageStage:
    """The running usage stage (always in the chain)."""
    return next(s for s in gateway.stages if isinstance(s, UsageStage))


def _ledger(gateway: Gateway) -> Ledger:
    return usage_stage(gateway).ledger


def _totals(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": row["requests"],
        "errors": row["errors"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "tokens": row["prompt_tokens"] + row["completion_tokens"],
        "cost_usd": format_usd(row["cost_nanos"]),
        "cost_nanos": row["cost_nanos"],
        "cache_hits": row["cache_hits"],
    }


def bars(rows: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """``rows`` each with ``share``: its ``field`` as a fraction of the largest (for a bar's width)."""
    largest = max((row[field] for row in rows), default=0)
    return [{**row, "share": (row[field] / largest) if largest else 0.0} for row in rows]


async def overview(
    gateway: Gateway,
    window: charts.Window | None = None,
    now: float | None = None,
    cache: BucketCache | None = None,
) -> dict[str, Any]:
    """Requests, errors, latency, tokens and cost over the last hour, day and 30 days; the day's by model;
    the charts of ``window`` (default the last hour), from the ledger's time buckets.

    Each window's totals are the sums of its chart's buckets (the hour's 60 one-minute buckets, the day's
    48 half-hours, the 30 days'), its p50 and p99 latency estimated from their summed latency histogram
    (every request of the window, not a sample), so the table and the charts agree and ``cache`` (the
    console's :class:`BucketCache`; None reads everything) re-reads only the buckets still open.
    """
    ledger = _ledger(gateway)
    now = time.time() if now is None else now
    window = window or charts.window_of(None)
    cache = cache or BucketCache()
    windows: list[dict[str, Any]] = []
    charted: list[dict[str, Any]] = []
    # The longest window first: its read of the open minutes then serves the shorter ones (see BucketCache).
    for shown in reversed(charts.WINDOWS.values()):
        since, until = shown.span(now)
        buckets = await cache.buckets(ledger, since, until, shown.width, now)
        if shown == window:
            charted = buckets
        total = add_buckets(buckets)
        p50, p99 = (
            charts.histogram_percentile(total["latency_le"], total["requests"], f) for f in (0.5, 0.99)
        )
        windows.insert(0, {"label": shown.label, **_totals(total), "p50_ms": p50, "p99_ms": p99})
    if not charted:  # a window of its own, not one of the table's
        since, until = window.span(now)
        charted = await cache.buckets(ledger, since, until, window.width, now)
    day = charts.WINDOWS["day"]
    since, until = day.span(now)
    models = add_by_model(await cache.by_model(ledger, since, until, day.width, now))
    by_model = [{"model": model, **_totals(models[model])} for model in sorted(models)]
    return {
        "windows": windows,
        "by_model": bars(by_model, "requests"),
        "ledger": ledger.status(),
        "window": window,
        "windows_charted": list(charts.WINDOWS.values()),
        "charts": charts.charts(charted, window, usage_stage(gateway).timezone),
    }


# Teams shown on the spend page: the first page of the admin API's list (config-file teams, then runtime).
TEAM_PAGE = 100


async def teams(
    gateway: Gateway, budgets: list[dict[str, Any]], by_team: list[dict[str, Any]]
) -> dict[str, Any]:
    """The teams of ``GET /admin/v1/teams`` (first page) with their budget this window (a row of
    ``budgets``, the budgets stage's report) and their last 30 days of usage (``by_team``, the ledger's
    summary by team); teams seen in the ledger but no longer defined are listed after them."""
    listing = await gateway.admin.teams.page(None, TEAM_PAGE)
    budget_of = {b["name"]: b for b in budgets if b["scope"] == "team"}
    usage_of = {row["group"]["team"]: row for row in by_team if row["group"]["team"] is not None}
    rows = []
    for team in listing["data"]:
        usage = usage_of.pop(team["name"], None)
        rows.append({**team, "budget_status": budget_of.get(team["name"]), "usage": usage})
    if listing["next_cursor"] is None:  # beyond the first page, the ledger's leftovers may be listed teams
        rows.extend({"name": name, "source": "ledger only", "budget_status": None, "usage": usage}
                    for name, usage in sorted(usage_of.items()))  # fmt: skip
    largest = max((row["usage"]["cost_nanos"] for row in rows if row["usage"]), default=0)
    for row in rows:
        cost = row["usage"]["cost_nanos"] if row["usage"] else 0
        row["cost_share"] = cost / largest if largest else 0.0
    return {"teams": rows, "more_teams": listing["next_cursor"] is not None}


async def spend(gateway: Gateway, now: float | None = None, with_teams: bool = True) -> dict[str, Any]:
    """Every budget (spent, reserved, remaining of its window), the teams with their budget and usage (when
    ``with_teams``: the admin may read teams), and the last 30 days' cost by key and model."""
    stage = next((s for s in gateway.stages if isinstance(s, BudgetStage)), None)
    budgets = []
    for row in await stage.report() if stage is not None else []:
        limit = float(row["limit_usd"])
        spent, reserved = float(row["spent_usd"]), float(row["reserved_usd"])
        budgets.append(
            {
                **row,
                "spent_share": min(1.0, spent / limit) if limit else 0.0,
                "reserved_share": min(1.0, reserved / limit) if limit else 0.0,
            }
        )
    now = time.time() if now is None else now
    ledger = _ledger(gateway)
    # The 30 UTC days up to today from the daily rollup (maintained at write time): a read of one row per
    # day, key, team, model and route, however many requests the month held.
    first = (datetime.fromtimestamp(now, UTC).date() - timedelta(days=29)).isoformat()

    async def month(dimension: GroupBy) -> list[dict[str, Any]]:
        return await ledger.daily_summary([dimension], first_day=first)

    by_key = [{"name": r["group"]["key"], **_totals(r)} for r in await month("key")]
    by_model = [{"name": r["group"]["model"], **_totals(r)} for r in await month("model")]
    by_team = [_totals(r) | {"group": r["group"]} for r in await month("team")]
    team_view = await teams(gateway, budgets, by_team) if with_teams else {"teams": None, "more_teams": False}
    return {
        "budgets": budgets,
        **team_view,
        "team_page": TEAM_PAGE,
        "by_key": bars(by_key, "cost_nanos"),
        "by_model": bars(by_model, "cost_nanos"),
    }


async def routes(gateway: Gateway) -> dict[str, Any]:
    """Every model's routes with health, cooldowns and this replica's load (``GET /admin/v1/routes``)."""
    return await routes_endpoint(gateway)()


# The request log's filters beyond the key are applied to the newest records read, not by the sink (whose
# query filters by key only): at most this many are read, so a filter matching nothing costs one bounded read.
FILTER_SCAN = 1000
CACHE_STATUSES = ("HIT", "MISS", "BYPASS", "none")
MAX_TRACE_ID = 200  # a trace id is 32 hex digits; a request id (standing in without tracing) is short too


@dataclass(frozen=True)
class RequestFilter:
    """The request log's filters; None is "any". ``status`` is a code (``429``) or a class (``5xx``);
    ``trace`` a trace id (the request id of a request made without tracing)."""

    key: str | None = None
    model: str | None = None
    status: str | None = None
    cache: str | None = None
    trace: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> RequestFilter:
        """The filters of a query string; a bad value raises ``ValueError`` naming the field."""
        fields = ("key", "model", "status", "cache", "trace")
        value = {name: (query.get(name) or "").strip() or None for name in fields}
        status = value["status"]
        if status is not None:
            status = status.lower()
            if not re.fullmatch(r"[1-5](xx|\d\d)", status):
                raise ValueError("status: give a status code such as 429, or a class such as 5xx")
        cache = value["cache"]
        if cache is not None and cache not in CACHE_STATUSES:
            raise ValueError(f"cache: one of {', '.join(CACHE_STATUSES)}")
        trace = value["trace"]
        if trace is not None and len(trace) > MAX_TRACE_ID:
            raise ValueError(f"trace: at most {MAX_TRACE_ID} characters")
        return cls(value["key"], value["model"], status, cache, trace)

    @property
    def narrows(self) -> bool:
        """Whether a filter beyond the key and trace is set (then the read is scanned: ``FILTER_SCAN``)."""
        return any((self.model, self.status, self.cache))

    def matches(self, record: UsageRecord) -> bool:
        """Whether ``record`` passes the model, status and cache filters (key and trace: the sink's)."""
        if self.model is not None and record.model != self.model:
            return False
        if self.status is not None:
            code = str(record.status)
            if self.status.endswith("xx") and code[0] != self.status[0]:
                return False
            if not self.status.endswith("xx") and code != self.status:
                return False
        return self.cache is None or (record.cache_status or "none") == self.cache


async def requests(gateway: Gateway, filters: RequestFilter, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` ledger records matching ``filters``, newest first.

    The key and trace id are filtered by the ledger (indexed); with a model, status or cache filter, the
    newest ``FILTER_SCAN`` records (of the key and trace, when given) are read and filtered here: matches
    older than those are not shown.
    """
    stage = usage_stage(gateway)
    scan = FILTER_SCAN if filters.narrows else limit
    found = await stage.ledger.records(key_name=filters.key, trace_id=filters.trace, limit=scan)
    rows = []
    for record in [r for r in found if filters.matches(r)][:limit]:
        row = asdict(record)
        row["time"] = datetime.fromtimestamp(record.ts, stage.timezone).strftime("%Y-%m-%d %H:%M:%S")
        row["cost_usd"] = format_usd(record.cost_nanos)
        row["tokens"] = record.prompt_tokens + record.completion_tokens
        rows.append(row)
    return rows
