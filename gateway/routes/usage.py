"""Admin endpoints that read the usage ledger and the budgets back (master key, via ``routes/admin.py``).

- ``GET /admin/usage?group_by=key|team|model|route|day|region|endpoint|status|cache_status&key=&from=&to=``:
  requests, tokens, cost, cache hits and errors in total and per group. ``group_by`` takes several
  dimensions, comma-separated (``group_by=key,model``): one group per combination. ``key`` narrows
  everything to one key's requests. ``from`` and ``to`` are ISO dates or date-times; a bare date is a whole
  day in the budgets' time zone (``to`` included), a date-time without offset is read in that zone, and ``to``
  as a date-time is exclusive. With ``Accept: text/csv`` the groups (or the totals) come as CSV. The
  ledger is flushed first, so every answered request is counted.
- ``GET /admin/usage/requests/{request_id}?key=``: the ledger records under one request id (a stream's real
  cost). Request ids are chosen by clients, so two keys may share one: every record names its key, and
  ``key`` narrows the lookup to one key's.

Whole days (``from``/``to`` bare dates or absent) grouped by ``key``, ``team``, ``model``, ``route`` or
``day`` are read from the daily rollup (``usage_daily``, ``"source": "usage_daily"``), which keeps the days
whose raw records retention deleted; anything finer is read from the raw records (``"source": "usage"``).

``/admin/usage`` also reports the ledger's health (``ledger``: write errors, spilled and dropped records...);
when the ledger cannot be read at all these endpoints answer 503 ``usage_ledger_unavailable``, and 501
``usage_not_queryable`` when its sink keeps nothing to query (``usage.sink: jsonl``). With a shared sink
(``usage.sink: postgres``) every replica answers for the traffic of all of them.
- ``GET /admin/budgets``: per key and team budget: limit, spent, reserved, remaining, window start and end.
- ``GET /metrics``: Prometheus metrics of this replica (:mod:`gateway.metrics`, every worker of it), the
  master key or ``features.metrics.token`` as bearer token.

Costs are decimal strings in USD (``"0.00042"``), summed exactly from nano-dollars.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, invalid_request
from gateway.features.budgets import BudgetStage
from gateway.features.usage import UsageStage
from gateway.ledger import GroupBy, Ledger, LedgerNotQueryable, LedgerUnavailable
from gateway.metrics_sources import sample
from gateway.pricing import format_usd
from gateway.usage_record import GROUP_COLUMNS
from gateway.usage_sql import ROLLUP_DIMENSIONS

if TYPE_CHECKING:
    from gateway.app import Gateway

GROUPS = tuple(GROUP_COLUMNS)
CSV_COLUMNS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cache_hits",
    "errors",
    "estimated",
    "cached_tokens",
    "avoided_cost_usd",
)
QUERY_PARAMETERS = ("group_by", "key", "from", "to")


def parse_bound(value: str, name: str, zone: ZoneInfo, *, end: bool) -> float:
    """A ``from``/``to`` query value as Unix seconds; a bare date ``to`` means the end of that day."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time(), tzinfo=zone).timestamp()
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.timestamp()
    # OverflowError: a date at the edge of the calendar (to=9999-12-31 is the day after it).
    except (ValueError, OverflowError):
        raise invalid_request(
            f"'{name}' must be an ISO date (2026-03-08) or date-time (2026-03-08T12:00:00+01:00), "
            f"got {value!r}.",
            param=name,
        ) from None


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("group", "cost_nanos", "avoided_cost_nanos")}
    out["cost_usd"] = format_usd(row["cost_nanos"])
    out["avoided_cost_usd"] = format_usd(row["avoided_cost_nanos"])
    return out


def parse_group_by(value: str | None) -> list[GroupBy]:
    """``group_by``: dimensions separated by commas, each known and given once."""
    if not value:
        return []
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if name not in GROUPS:
            raise invalid_request(
                f"'group_by' must be one or more of {', '.join(GROUPS)} separated by commas, got {name!r}.",
                param="group_by",
            )
    if len(set(names)) != len(names):
        raise invalid_request("'group_by' names a dimension twice.", param="group_by")
    return cast(list[GroupBy], names)


def _csv(body: dict[str, Any]) -> str:
    """The groups of a usage report (or its totals, without ``group_by``) as CSV with a header row."""
    group_by = parse_group_by(body["group_by"])
    rows = body["groups"] if group_by else [body["totals"]]
    columns = [*group_by, *CSV_COLUMNS]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def ledger_unavailable(exc: LedgerUnavailable) -> GatewayError:
    """503: the ledger cannot be read (its file is gone and cannot be recreated, or unreadable); 501 when
    its sink keeps nothing to query."""
    if isinstance(exc, LedgerNotQueryable):
        return GatewayError(
            501, f"Usage cannot be queried: {exc}.", "invalid_request_error", "usage_not_queryable"
        )
    return GatewayError(
        503, f"Usage is unavailable: {exc}.", "service_unavailable", "usage_ledger_unavailable",
        headers={"retry-after": "5"},
    )  # fmt: skip


async def _summary(
    ledger: Ledger,
    group_by: list[GroupBy],
    since: float | None,
    until: float | None,
    key: str | None,
    days: tuple[str | None, str | None] | None,
) -> Any:
    try:
        if days is not None:
            first, last = days
            return await ledger.daily_summary(group_by, first_day=first, last_day=last, key_name=key)
        return await ledger.summary(group_by, since=since, until=until, key_name=key)
    except LedgerUnavailable as exc:
        raise ledger_unavailable(exc) from None


async def usage_report(
    stage: UsageStage, group_by: list[GroupBy], key: str | None, start: str | None, end: str | None
) -> dict[str, Any]:
    """The usage report ``/admin/usage`` answers (and GraphQL's ``usage``): totals, and one group per
    combination of ``group_by``, of ``key``'s requests (every key's with None) between ``start`` and ``end``
    (ISO dates or date-times, see :func:`parse_bound`)."""
    since = parse_bound(start, "from", stage.timezone, end=False) if start is not None else None
    until = parse_bound(end, "to", stage.timezone, end=True) if end is not None else None
    ledger = stage.ledger
    # Whole days, by dimensions the daily rollup keeps: read it instead of scanning the raw rows (and it
    # still has the days retention deleted from them).
    whole_days = all(len(bound or "") in (0, 10) for bound in (start, end))
    days = None
    if whole_days and set(group_by) <= ROLLUP_DIMENSIONS:
        days = (start or None, end or None)
    totals = (await _summary(ledger, [], since, until, key, days))[0]
    body: dict[str, Any] = {
        "timezone": str(stage.timezone),
        "from": start,
        "to": end,
        "key": key,
        "group_by": ",".join(group_by) or None,
        "source": "usage_daily" if days is not None else "usage",
        "totals": _row(totals),
        "ledger": ledger.status(),
    }
    if group_by:
        rows = await _summary(ledger, group_by, since, until, key, days)
        body["groups"] = [{**row["group"], **_row(row)} for row in rows]
    return body


def add_routes(
    admin: APIRouter, gateway: Gateway, dependencies: dict[str, Sequence[Any]] | None = None
) -> None:
    """Register ``/usage``, ``/usage/requests/{id}`` and ``/budgets`` on ``admin`` (``/admin`` and
    ``/admin/v1``); ``dependencies`` maps ``usage`` and ``budgets`` to each group's extra dependencies (the
    admin API's scopes)."""
    usage, request_usage, budgets = endpoints(gateway)
    extra = dependencies or {}
    admin.add_api_route("/usage", usage, methods=["GET"], dependencies=extra.get("usage"))
    admin.add_api_route(
        "/usage/requests/{request_id}", request_usage, methods=["GET"], dependencies=extra.get("usage")
    )
    admin.add_api_route("/budgets", budgets, methods=["GET"], dependencies=extra.get("budgets"))


def endpoints(gateway: Gateway) -> tuple[Callable[..., Awaitable[Any]], ...]:
    """The usage, request-usage and budgets endpoints over ``gateway``'s ledger and budget stage."""

    def usage_stage() -> UsageStage:
        return next(s for s in gateway.stages if isinstance(s, UsageStage))

    def budget_stage() -> BudgetStage | None:
        return next((s for s in gateway.stages if isinstance(s, BudgetStage)), None)

    async def ensure_started() -> None:
        if not gateway.started:
            await gateway.start()

    async def usage(request: Request) -> Any:
        await ensure_started()
        stage = usage_stage()
        params = request.query_params
        unknown = sorted(set(params) - set(QUERY_PARAMETERS))
        if unknown:
            raise invalid_request(
                f"Unknown query parameter '{unknown[0]}' (allowed: {', '.join(QUERY_PARAMETERS)}).",
                param=unknown[0],
            )
        group_by = parse_group_by(params.get("group_by"))
        key = params.get("key")
        if key is not None and not key:
            raise invalid_request("'key' must name a key.", param="key")
        body = await usage_report(stage, group_by, key, params.get("from"), params.get("to"))
        if "text/csv" in request.headers.get("accept", ""):
            return Response(_csv(body), media_type="text/csv; charset=utf-8")
        return body

    async def request_usage(request_id: str, key: str | None = None) -> dict[str, Any]:
        await ensure_started()
        stage = usage_stage()
        try:
            records = await stage.ledger.records(request_id=request_id, key_name=key, limit=10)
        except LedgerUnavailable as exc:
            raise ledger_unavailable(exc) from None
        if not records:
            whose = f" of key '{key}'" if key is not None else ""
            raise GatewayError(
                404, f"No usage is recorded for request '{request_id}'{whose}.", "invalid_request_error",
                "not_found",
            )  # fmt: skip
        bodies: dict[str, Any] = {}
        if stage.log_bodies is not None:
            try:
                logged = await stage.ledger.bodies(request_id=request_id, key_name=key)
            except LedgerUnavailable as exc:
                raise ledger_unavailable(exc) from None
            for body in reversed(logged):  # newest last, so it wins per key
                bodies[body.key_name] = {"request": body.request, "response": body.response}
        out = []
        for record in records:
            row = asdict(record)
            if stage.log_bodies is not None:
                row["body"] = bodies.get(record.key_name)
            row["cost_usd"] = format_usd(row.pop("cost_nanos"))
            row["avoided_cost_usd"] = format_usd(row.pop("avoided_cost_nanos"))
            row["time"] = datetime.fromtimestamp(row.pop("ts"), stage.timezone).isoformat()
            out.append(row)
        return {"request_id": request_id, "key": key, "records": out}

    async def budgets() -> dict[str, Any]:
        await ensure_started()
        stage = budget_stage()
        zone = stage.zone if stage is not None else usage_stage().timezone
        return {"timezone": str(zone), "budgets": await stage.report() if stage is not None else []}

    return usage, request_usage, budgets


def metrics_router(gateway: Gateway) -> APIRouter:
    """``GET /metrics``: the Prometheus exposition for a scraper with the master key or
    ``features.metrics.token`` as bearer token; OpenMetrics when its ``Accept`` asks for it.

    No route at all with ``features.metrics.enabled`` off.
    """
    router = APIRouter()
    metrics = gateway.shared.metrics
    if metrics is None:
        return router

    async def scrape(request: Request) -> Response:
        headers = request.headers
        if not gateway.keys.is_master(headers) and not gateway.config.features.metrics.token_matches(headers):
            raise GatewayError(
                401, "/metrics needs the metrics token or the master key.", "authentication_error",
                "invalid_api_key",
            )  # fmt: skip
        if not gateway.started:
            await gateway.start()
        await sample(gateway, metrics)
        body, content_type = metrics.render(headers.get("accept"))
        return Response(body, media_type=content_type)

    router.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
    return router
