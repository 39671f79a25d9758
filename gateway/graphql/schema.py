"""The GraphQL schema: strawberry types over the dictionaries the REST admin API answers, and resolvers
that only translate arguments and call :class:`~gateway.graphql.data.GraphQLData` (which authorizes).

Money is a decimal string in USD (``"0.00042"``), as in the REST API, so no float rounding creeps in.
``schema.graphql`` next to this file is the exported SDL; a test keeps it equal to :func:`sdl`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from pydantic import BaseModel, ValidationError
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionContext, ExecutionResult, Info
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway.admin.keys import MAX_PAGE as MAX_KEYS_PAGE
from gateway.admin.keys import decode_cursor, encode_cursor
from gateway.admin.schemas import CachePurge, KeyCreate, KeyRotate, KeyUpdate
from gateway.errors import GatewayError, invalid_request
from gateway.graphql.data import GraphQLData
from gateway.graphql.errors import graphql_error
from gateway.graphql.limits import DEFAULT_PAGE, MAX_PAGE, extensions
from gateway.graphql.persisted import PersistedQueries, PersistedQueryError, Resolved
from gateway.graphql_config import GraphQLConfig
from gateway.ledger import GroupBy
from gateway.logging import log_error
from gateway.pricing import format_usd
from gateway.routes.admin_v1 import validation_error

SDL_FILE = Path(__file__).with_name("schema.graphql")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _data(info: Info) -> GraphQLData:
    data: GraphQLData = info.context["data"]
    return data


@strawberry.enum(description="A dimension usage can be grouped by.")
class UsageDimension(Enum):
    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    ROUTE = "route"
    DAY = "day"
    REGION = "region"
    ENDPOINT = "endpoint"
    STATUS = "status"
    CACHE_STATUS = "cache_status"


@strawberry.type(description="Requests, tokens and cost of a set of requests.")
class UsageFigures:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_hits: int
    errors: int
    cost_usd: str = strawberry.field(description="decimal string, USD")
    avoided_cost_usd: str = strawberry.field(description="what cache hits saved, decimal string, USD")


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in UsageFigures.__annotations__}


@strawberry.type(description="Usage of one combination of the grouped dimensions (the others are null).")
class UsageGroup(UsageFigures):
    key: str | None = None
    team: str | None = None
    model: str | None = None
    route: str | None = None
    day: str | None = None
    region: str | None = None
    endpoint: str | None = None
    status: str | None = None
    cache_status: str | None = None


@strawberry.type
class UsageEdge:
    cursor: str
    node: UsageGroup


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="A usage report: totals over the range, and a page of its groups.")
class UsageConnection:
    timezone: str
    source: str = strawberry.field(description="usage_daily (the daily rollup) or usage (raw records)")
    key: str | None
    totals: UsageFigures
    total_count: int
    edges: list[UsageEdge]
    page_info: PageInfo


@strawberry.type(description="A budget's state in its current window.")
class BudgetStatus:
    scope: str = strawberry.field(description="key or team")
    name: str
    period: str
    limit_usd: str
    spent_usd: str
    reserved_usd: str
    remaining_usd: str
    soft_limit: float | None
    timezone: str
    period_start: str | None
    period_end: str | None


@strawberry.type(
    description="One rate limit of a key or its team, now. Limits refill continuously (GCRA), so there "
    "is no window edge: resetMs is how long until the allowance is whole again."
)
class RateLimitStatus:
    scope: str = strawberry.field(description="key, or team (one allowance every key of the team shares)")
    name: str = strawberry.field(description="the key's or the team's name")
    kind: str = strawberry.field(description="requests or tokens (per minute), or concurrent (in flight)")
    limit: int
    used: int
    remaining: int
    reset_ms: int | None = strawberry.field(description="null for concurrent")


def _rate_limits(rows: list[dict[str, Any]]) -> list[RateLimitStatus]:
    return [RateLimitStatus(**row) for row in rows]


def _budget(row: dict[str, Any]) -> BudgetStatus:
    return BudgetStatus(**row)


def _page_bounds(first: int, after: str | None) -> tuple[int, int]:
    if not 1 <= first <= MAX_PAGE:
        raise invalid_request(f"'first' must be 1 to {MAX_PAGE}.", param="first")
    start = 0
    if after is not None:
        offset = decode_cursor(after).get("offset")
        if not isinstance(offset, int) or offset < 0:
            raise invalid_request("Invalid cursor: pass an endCursor of a previous page.", param="after")
        start = offset + 1
    return start, first


async def usage_connection(
    info: Info,
    group_by: list[UsageDimension] | None,
    start_at: str | None,
    end_at: str | None,
    key: str | None,
    first: int,
    after: str | None,
) -> UsageConnection:
    """A page of the usage report (Query.usage and Me.usage): the data-access function narrows it."""
    dimensions: list[GroupBy] = [d.value for d in group_by or []]
    if len(set(dimensions)) != len(dimensions):
        raise invalid_request("'groupBy' names a dimension twice.", param="groupBy")
    start, size = _page_bounds(first, after)
    report = await _data(info).usage(dimensions, key, start_at, end_at)
    groups = report.get("groups", [])
    page = groups[start : start + size]
    edges = []
    for offset, row in enumerate(page, start):
        dims: dict[str, Any] = {d: None if row.get(d) is None else str(row[d]) for d in dimensions}
        node = UsageGroup(**_figures(row), **dims)
        edges.append(UsageEdge(cursor=encode_cursor({"offset": offset}), node=node))
    return UsageConnection(
        timezone=report["timezone"],
        source=report["source"],
        key=report["key"],
        totals=UsageFigures(**_figures(report["totals"])),
        total_count=len(groups),
        edges=edges,
        page_info=PageInfo(
            has_next_page=start + size < len(groups), end_cursor=edges[-1].cursor if edges else None
        ),
    )


@strawberry.type(description="The calling virtual key (never its secret).")
class Me:
    name: str
    team: str | None
    models: list[str]
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget: BudgetStatus | None

    @strawberry.field(description="This key's rate limits and its team's, used and remaining now.")
    async def rate_limits(self, info: Info) -> list[RateLimitStatus]:
        return _rate_limits(await _data(info).rate_limits(None))

    @strawberry.field(description="This key's usage: Query.usage narrowed to this key.")
    async def usage(
        self,
        info: Info,
        group_by: list[UsageDimension] | None = None,
        from_: Annotated[str | None, strawberry.argument(name="from")] = None,
        to: str | None = None,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
    ) -> UsageConnection:
        return await usage_connection(info, group_by, from_, to, None, first, after)


@strawberry.type(description="One route of a model: its health (shared by replicas) and this replica's load.")
class Route:
    route: str
    weight: int
    region: str | None
    state: str = strawberry.field(description="closed (healthy), open (cooling down) or half_open (probing)")
    cooling_for_s: float | None
    rate_limited: bool
    recent_requests: int
    recent_failures: int
    in_flight: int
    latency_ms: float | None


@strawberry.type(description="A model alias with its fallbacks and routes.")
class ModelRoutes:
    model: str
    fallbacks: list[str]
    routes: list[Route]


@strawberry.type(description="A roadmap feature this gateway build implements.")
class Feature:
    slug: str = strawberry.field(description="the plan's feature key, e.g. graphql-api")
    title: str
    enabled: bool = strawberry.field(description="whether the running config turns it on")


@strawberry.type(description="A model alias the caller may use.")
class Model:
    name: str


@strawberry.type(description="A key as the admin API shows it; `secret` only in createKey's answer.")
class Key:
    id: strawberry.ID
    name: str
    source: str
    models: list[str] | None = strawberry.field(description="null: every model")
    team: str | None
    rpm: int | None
    tpm: int | None
    revoked: bool
    secret: str | None = None
    allowed_regions: list[str] | None = strawberry.field(
        default=None, description="the only route regions its requests may reach; null: any region"
    )
    # The key's budget settings as JSON (None: no budget of its own), for the budget field's DataLoader.
    budget_spec: strawberry.Private[str | None] = None
    # The key as the admin API shows it, for the rateLimits field's DataLoader.
    view: strawberry.Private[dict[str, Any] | None] = None

    @strawberry.field(description="Its budget this window (budgets:read); null without a budget. Batched: "
                      "one state-store read for every key of a page.")  # fmt: skip
    async def budget(self, info: Info) -> BudgetStatus | None:
        row = await info.context["budgets"].load((self.name, self.budget_spec))
        return None if row is None else _budget(row)

    @strawberry.field(description="Its rate limits and its team's, used and remaining now (keys:read). "
                      "Batched: one state-store read for every key of a page.")  # fmt: skip
    async def rate_limits(self, info: Info) -> list[RateLimitStatus]:
        return _rate_limits(await info.context["rate_limits"].load(self.view))


@strawberry.type(description="A page of keys, config-file keys first.")
class KeyConnection:
    nodes: list[Key]
    page_info: PageInfo


def _key(view: dict[str, Any]) -> Key:
    models = view.get("models")
    return Key(
        id=strawberry.ID(view["id"]),
        name=view["name"],
        source=view["source"],
        models=None if models == "*" else list(models or []),
        team=view.get("team"),
        rpm=view.get("rpm"),
        tpm=view.get("tpm"),
        revoked=bool(view.get("revoked", False)),
        secret=view.get("secret"),
        allowed_regions=view.get("allowed_regions"),
        budget_spec=None if view.get("budget") is None else json.dumps(view["budget"], sort_keys=True),
        view=view,
    )


@strawberry.type(description="The outcome of a config reload; the running config is unchanged unless ok.")
class ReloadOutcome:
    ok: bool
    status: str = strawberry.field(
        description="reloaded, unchanged, invalid, rejected (needs a restart), refused or no_source"
    )
    version: str
    previous_version: str | None
    summary: str = strawberry.field(description="what changed, names only")
    problems: list[str]


@strawberry.input(description="A key's budget: a limit in USD per period (daily, weekly, monthly, total).")
class BudgetInput:
    limit_usd: float
    period: str = "monthly"


@strawberry.input(description="createKey's arguments, as POST /admin/v1/keys takes them.")
class KeyCreateInput:
    name: str
    models: list[str] | None = strawberry.field(default=None, description="null: every model")
    rpm: int | None = None
    tpm: int | None = None
    team: str | None = None
    budget: BudgetInput | None = None


@strawberry.input(
    description="updateKey's changes, as PATCH /admin/v1/keys/{id} takes them: only the fields given change; "
    "an explicit null clears one (models: null is every model)."
)
class KeyUpdateInput:
    name: str | None = strawberry.UNSET
    models: list[str] | None = strawberry.UNSET
    rpm: int | None = strawberry.UNSET
    tpm: int | None = strawberry.UNSET
    team: str | None = strawberry.UNSET
    budget: BudgetInput | None = strawberry.UNSET
    metadata: JSON | None = strawberry.UNSET
    expires_at: str | None = strawberry.field(
        default=strawberry.UNSET, description="ISO 8601 with a time zone"
    )


@strawberry.input(description="purgeCache's target, as POST /admin/v1/cache/purge takes it: a model, a key "
                  "(its id), both (that key's entries of that model), or all.")  # fmt: skip
class CachePurgeInput:
    model: str | None = None
    key_id: strawberry.ID | None = None
    all: bool = False


@strawberry.type(description="What purgeCache purged.")
class CachePurgeOutcome:
    model: str | None
    key_id: str | None
    all: bool
    shared_group: str | None = strawberry.field(
        description="the cache group whose entries were purged when the key shares its cache with one"
    )


def _validated(model: type[M], spec: dict[str, Any]) -> M:
    """``spec`` as the REST body ``model``; a bad field is the REST API's 400 naming it."""
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


@strawberry.type
class Query:
    @strawberry.field(description="The model aliases the calling key may use (GET /v1/models).")
    def models(self, info: Info) -> list[Model]:
        return [Model(name=name) for name in _data(info).models()]

    @strawberry.field(description="The calling virtual key: its models, limits and budget status.")
    async def me(self, info: Info) -> Me:
        row = await _data(info).me()
        budget = row.pop("budget")
        return Me(**row, budget=None if budget is None else _budget(budget))

    @strawberry.field(
        description="Usage between `from` and `to` (ISO dates or date-times), grouped by `groupBy`, a page "
        "of groups at a time. A virtual key reads only its own; `key` narrows an admin's report to one key."
    )
    async def usage(
        self,
        info: Info,
        group_by: list[UsageDimension] | None = None,
        from_: Annotated[str | None, strawberry.argument(name="from")] = None,
        to: str | None = None,
        key: str | None = None,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
    ) -> UsageConnection:
        return await usage_connection(info, group_by, from_, to, key, first, after)

    @strawberry.field(description="Budgets: every one (budgets:read), or a virtual key's own and its team's.")
    async def budgets(self, info: Info) -> list[BudgetStatus]:
        return [_budget(row) for row in await _data(info).budgets()]

    @strawberry.field(description="A key's rate limits and its team's, used and remaining now (GET "
                      "/admin/v1/keys/{id}/rate-limit): a virtual key's own (key: null), or the key named "
                      "(keys:read).")  # fmt: skip
    async def rate_limits(self, info: Info, key: strawberry.ID | None = None) -> list[RateLimitStatus]:
        return _rate_limits(await _data(info).rate_limits(None if key is None else str(key)))

    @strawberry.field(description="Routes with health and cooldowns: every model (routes:read) or a "
                      "virtual key's models.")  # fmt: skip
    async def routes(self, info: Info) -> list[ModelRoutes]:
        return _model_routes(await _data(info).routes())

    @strawberry.field(description="Keys, a page at a time (keys:read; GET /admin/v1/keys); pass "
                      "pageInfo.endCursor as after.")  # fmt: skip
    async def keys(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None) -> KeyConnection:
        if not 1 <= first <= MAX_KEYS_PAGE:
            raise invalid_request(f"'first' must be 1 to {MAX_KEYS_PAGE}.", param="first")
        page = await _data(info).keys_page(after, first)
        cursor = page["next_cursor"]
        return KeyConnection(
            nodes=[_key(view) for view in page["data"]],
            page_info=PageInfo(has_next_page=cursor is not None, end_cursor=cursor),
        )

    @strawberry.field(description="The roadmap features this build implements (GET /admin/v1/features).")
    def features(self, info: Info) -> list[Feature]:
        return [
            Feature(slug=slug, title=row["title"], enabled=row["enabled"])
            for slug, row in _data(info).features().items()
        ]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a runtime key (keys:write); the answer holds its secret, once.")
    async def create_key(self, info: Info, input: KeyCreateInput) -> Key:
        spec: dict[str, Any] = {"name": input.name, "models": "*" if input.models is None else input.models}
        for name in ("rpm", "tpm", "team"):
            if getattr(input, name) is not None:
                spec[name] = getattr(input, name)
        if input.budget is not None:
            spec["budget"] = {"limit_usd": input.budget.limit_usd, "period": input.budget.period}
        try:
            body = KeyCreate.model_validate(spec)
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None
        return _key(await _data(info).create_key(body))

    @strawberry.mutation(
        description="Zero a key's spend this budget window (budgets:write); reservations in flight stay."
    )
    async def reset_key_budget(self, info: Info, id: strawberry.ID) -> BudgetStatus:
        return _budget(await _data(info).reset_key_budget(str(id)))

    @strawberry.mutation(description="Re-read the config file and apply it (config:reload).")
    async def reload_config(self, info: Info) -> ReloadOutcome:
        result = await _data(info).reload_config()
        return ReloadOutcome(
            ok=result.ok,
            status=result.status,
            version=result.version,
            previous_version=result.previous_version,
            summary=result.summary(),
            problems=list(result.problems),
        )

    @strawberry.mutation(description="Revoke a runtime key (keys:write); its usage history stays.")
    async def revoke_key(self, info: Info, id: strawberry.ID) -> Key:
        return _key(await _data(info).revoke_key(str(id)))

    @strawberry.mutation(description="Change a runtime key's models, limits, budget, team, metadata or "
                         "expiry (keys:write), as PATCH /admin/v1/keys/{id}.")  # fmt: skip
    async def update_key(self, info: Info, id: strawberry.ID, input: KeyUpdateInput) -> Key:
        spec: dict[str, Any] = {}
        for name in ("name", "models", "rpm", "tpm", "team", "metadata", "expires_at"):
            value = getattr(input, name)
            if value is not strawberry.UNSET:
                spec[name] = value
        if input.budget is not strawberry.UNSET:
            budget = input.budget
            spec["budget"] = (
                None if budget is None else {"limit_usd": budget.limit_usd, "period": budget.period}
            )
        return _key(await _data(info).update_key(str(id), _validated(KeyUpdate, spec)))

    @strawberry.mutation(
        description="A new secret for a runtime key (keys:write), in this answer only; the old one keeps "
        "working for gracePeriodS (default admin.rotation_grace_s)."
    )
    async def rotate_key(self, info: Info, id: strawberry.ID, grace_period_s: int | None = None) -> Key:
        spec = {} if grace_period_s is None else {"grace_period_s": grace_period_s}
        return _key(await _data(info).rotate_key(str(id), _validated(KeyRotate, spec)))

    @strawberry.mutation(
        description="Zero a team's spend this budget window (budgets:write); reservations in flight stay."
    )
    async def reset_team_budget(self, info: Info, team: str) -> BudgetStatus:
        return _budget(await _data(info).reset_team_budget(team))

    @strawberry.mutation(description="Purge cached answers of a model, a key, both, or all (cache:write).")
    async def purge_cache(self, info: Info, input: CachePurgeInput) -> CachePurgeOutcome:
        spec: dict[str, Any] = {"all": input.all}
        if input.model is not None:
            spec["model"] = input.model
        if input.key_id is not None:
            spec["key_id"] = str(input.key_id)
        result = await _data(info).purge_cache(_validated(CachePurge, spec))
        purged = result["purged"]
        return CachePurgeOutcome(
            model=purged.get("model"),
            key_id=purged.get("key_id"),
            all=bool(purged.get("all", False)),
            shared_group=result["shared_group"],
        )


class GatewaySchema(strawberry.Schema):
    """strawberry's schema, logging errors the gateway's way: a GatewayError or a refused query is the
    client's answer, not a server problem (nothing logged); anything else is logged by type only, since
    messages may carry secrets and tracebacks must not be logged (gateway/logging.py).

    With ``persisted`` it also resolves persisted queries (gateway/graphql/persisted.py) before running
    any operation, over HTTP (``execute``, ``stream``) and WebSocket (``stream``) alike, so an allowlist
    holds for every transport."""

    def __init__(self, *args: Any, persisted: PersistedQueries | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.persisted = persisted

    async def _resolve(
        self, query: str | None, extensions: dict[str, Any] | None
    ) -> Resolved | PreExecutionError:
        if self.persisted is None:
            return Resolved(query)
        try:
            return await self.persisted.resolve(query, extensions)
        except PersistedQueryError as exc:
            error = GraphQLError(exc.message, extensions={"code": exc.code, "status": exc.status})
            return PreExecutionError(data=None, errors=[error])

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """strawberry's ``execute``, for the persisted query the operation names (see the class)."""
        resolved = await self._resolve(query, operation_extensions)
        if isinstance(resolved, PreExecutionError):
            return resolved
        result = await super().execute(
            resolved.query, variable_values, context_value, root_value, operation_name,
            allowed_operation_types, operation_extensions,
        )  # fmt: skip
        # Kept only once it parsed and passed the limits: a refused query is not worth a store entry.
        if self.persisted is not None and resolved.register and not isinstance(result, PreExecutionError):
            await self.persisted.register(resolved.register, resolved.query or "")
        return result

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """strawberry's ``stream`` (subscriptions, over WebSocket too), for the persisted query the operation
        names or, with an allowlist, only for an allowed one."""
        resolved = await self._resolve(query, operation_extensions)
        if isinstance(resolved, PreExecutionError):
            return _refused(resolved)
        return await super().stream(
            resolved.query, variable_values, context_value, root_value, operation_name,
            operation_extensions, allowed_operation_types,
        )  # fmt: skip

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log the unexpected ones among ``errors``."""
        context = execution_context.context if execution_context is not None else None
        data = context.get("data") if isinstance(context, dict) else None
        request_id = getattr(data, "request_id", None) or "-"
        for error in errors:
            original = error.original_error
            if original is not None and not isinstance(original, GatewayError):
                log_error(request_id, original)


async def _refused(error: PreExecutionError) -> StreamResult:
    """A stream of the one refusal: a transport closes the operation on a first PreExecutionError."""
    yield error


@strawberry.type(description="The usage of one request a replica just finished.")
class UsageEvent:
    time: str = strawberry.field(description="when the request arrived, ISO 8601")
    request_id: str
    key: str
    team: str | None
    model: str
    route: str | None
    endpoint: str
    status: int
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cost_usd: str
    cache_hit: bool
    latency_ms: float


async def _checked(events: AsyncIterator[T]) -> AsyncIterator[T]:
    """``events``, with a GatewayError (a refusal, a store down) as a GraphQL error: strawberry renders a
    subscription's errors itself, without the router's ``process_result``."""
    try:
        async for event in events:
            yield event
    except GatewayError as exc:
        raise graphql_error(exc) from None


def _model_routes(snapshot: dict[str, Any]) -> list[ModelRoutes]:
    return [
        ModelRoutes(model=name, fallbacks=m["fallbacks"], routes=[Route(**r) for r in m["routes"]])
        for name, m in snapshot.items()
    ]


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Each request finished from now on, by this replica or by any replica sharing its "
        "state.redis_url: a virtual key's own, or every one (usage:read). Over WebSocket, subprotocol "
        "graphql-transport-ws."
    )
    async def usage(self, info: Info) -> AsyncGenerator[UsageEvent, None]:
        async for record in _checked(_data(info).usage_events()):
            yield UsageEvent(
                time=datetime.fromtimestamp(record.ts, UTC).isoformat(),
                request_id=record.request_id,
                key=record.key_name,
                team=record.team,
                model=record.model,
                route=record.route,
                endpoint=record.endpoint,
                status=record.status,
                stream=record.stream,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cost_usd=format_usd(record.cost_nanos),
                cache_hit=record.cache_hit,
                latency_ms=record.latency_ms,
            )

    @strawberry.subscription(
        description="The routes `routes` answers, now and again whenever a route's state changes (checked "
        "every second): every model with routes:read, a virtual key's models otherwise."
    )
    async def routes(self, info: Info) -> AsyncGenerator[list[ModelRoutes], None]:
        async for snapshot in _checked(_data(info).route_changes()):
            yield _model_routes(snapshot)


def build_schema(config: GraphQLConfig, persisted: PersistedQueries | None = None) -> strawberry.Schema:
    """The schema with ``config``'s limits (depth, cost, aliases, tokens, introspection, batch size), and
    ``persisted`` queries when they are on."""
    return GatewaySchema(
        persisted=persisted,
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions(config),
        config=StrawberryConfig(batching_config={"max_operations": config.max_batch}),
    )


def sdl() -> str:
    """The schema's SDL, as exported to ``schema.graphql`` (limits do not change it)."""
    return build_schema(GraphQLConfig()).as_str() + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
