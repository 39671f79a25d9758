"""The versioned admin API, ``/admin/v1``: thin routes over gateway/admin/ (see docs/gateway/admin-api.md).

Every route names the scope it needs through :func:`require_scope`; the dependency authenticates the
caller (master key or admin key; 401, or 429 after repeated failures) and checks the scope (403). Bodies
are strict pydantic models: a bad field is a 400 in the gateway's error envelope with ``param`` naming it.
"""

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import __version__
from gateway.admin import access
from gateway.admin.access import AdminPrincipal
from gateway.admin.budgets import Budgets
from gateway.admin.cache import CacheAdmin
from gateway.admin.config import Scope
from gateway.admin.directory import identify_key
from gateway.admin.ratelimits import RateLimits
from gateway.admin.routes import RouteAdmin
from gateway.admin.schemas import CachePurge, KeyCreate, KeyRotate, KeyUpdate, TeamCreate, TeamUpdate
from gateway.errors import GatewayError, invalid_request
from gateway.features.budgets import BudgetStage
from gateway.features.ratelimit import RateLimitStage
from gateway.features.routing import RoutingStage, routes_endpoint
from gateway.reload import reload_endpoint
from gateway.routes import usage
from gateway.routes.admin import features_endpoint

if TYPE_CHECKING:
    from gateway.app import Gateway

PREFIX = "/admin/v1"
Principal = Callable[[Request], Awaitable[AdminPrincipal]]
# Module-level: with postponed annotations FastAPI resolves these names in the module's globals.
Limit = Annotated[int | None, Query(ge=1, le=100, description="page size, 1 to 100 (default 50)")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
IfMatch = Annotated[str | None, Header(alias="if-match", description="the ETag the change applies to")]
IdempotencyKey = Annotated[
    str | None, Header(alias="idempotency-key", description="repeat a create safely: same key, same answer")
]


def validation_error(errors: Sequence[Any]) -> GatewayError:
    """A 400 naming the first invalid field (``budget.limit_usd``, ``models[1]``, ``limit``)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return invalid_request("The request body is not valid JSON.")
    loc = [part for part in first.get("loc", ()) if part not in ("body", "query", "header", "path")]
    param = ""
    for part in loc:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return invalid_request(f"{param or 'body'}: {message}.", param=param or None)


class EnvelopeRoute(APIRoute):
    """An APIRoute whose validation errors are the gateway's 400 envelope instead of FastAPI's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, with RequestValidationError turned into :func:`validation_error`."""
        handler = super().get_route_handler()

        async def envelope(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise validation_error(exc.errors()) from None

        return envelope


async def authenticate_admin(gateway: "Gateway", headers: Mapping[str, str], client: str) -> AdminPrincipal:
    """The admin caller presenting ``headers`` from address ``client``, by ``gateway``'s running keys (401,
    403 or 429 as :func:`gateway.admin.access.authenticate` decides); the console's login uses it too."""

    async def is_virtual_key(digest: bytes) -> bool:
        return await identify_key(gateway.keys, gateway.admin.directory, digest) is not None

    return await access.authenticate(
        headers,
        client,
        config=gateway.config.admin,
        keys=gateway.keys,
        failures=gateway.admin.failed_logins,
        is_virtual_key=is_virtual_key,
    )


def principal_dependency(gateway: "Gateway") -> Principal:
    """A dependency returning the authenticated admin caller (any scope)."""

    async def principal(request: Request) -> AdminPrincipal:
        client = request.client.host if request.client else "unknown"
        caller = await authenticate_admin(gateway, request.headers, client)
        request.scope["state"]["key"] = caller.name  # the access log names the admin
        return caller

    return principal


def require_scope(principal: Principal, scope: Scope) -> Any:
    """``Annotated[AdminPrincipal, require_scope(...)]``: the authenticated admin caller, 403 unless it
    holds ``scope``."""

    async def scoped(request: Request) -> AdminPrincipal:
        caller = await principal(request)
        if not caller.may(scope):
            raise access.forbidden(scope)
        return caller

    return Depends(scoped)


def _tagged(body: dict[str, Any], status: int = 200) -> JSONResponse:
    """``body`` with its ETag as a header too, when it has one."""
    etag = body.get("etag")
    return JSONResponse(body, status_code=status, headers={"etag": etag} if etag else None)


def _request_id(request: Request) -> str | None:
    return request.scope["state"].get("request_id")


def router(gateway: "Gateway") -> APIRouter:
    """The ``/admin/v1`` router (its OpenAPI document at ``/admin/v1/openapi.json``)."""
    v1 = APIRouter(prefix=PREFIX, route_class=EnvelopeRoute, tags=["admin"])
    principal = principal_dependency(gateway)
    keys = gateway.admin.keys

    # Annotations are evaluated here (no postponed annotations in this module), so these local aliases work.
    KeysRead = Annotated[AdminPrincipal, require_scope(principal, "keys:read")]
    KeysWrite = Annotated[AdminPrincipal, require_scope(principal, "keys:write")]
    TeamsRead = Annotated[AdminPrincipal, require_scope(principal, "teams:read")]
    TeamsWrite = Annotated[AdminPrincipal, require_scope(principal, "teams:write")]
    AuditRead = Annotated[AdminPrincipal, require_scope(principal, "audit:read")]
    BudgetsRead = Annotated[AdminPrincipal, require_scope(principal, "budgets:read")]
    BudgetsWrite = Annotated[AdminPrincipal, require_scope(principal, "budgets:write")]
    RoutesWrite = Annotated[AdminPrincipal, require_scope(principal, "routes:write")]
    CacheWrite = Annotated[AdminPrincipal, require_scope(principal, "cache:write")]
    Anyone = Annotated[AdminPrincipal, Depends(principal)]

    @v1.get("/keys", summary="List keys (config-file keys first, then runtime keys)")
    async def list_keys(_: KeysRead, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
        return await keys.page(cursor, limit)

    @v1.post("/keys", status_code=201, summary="Create a key; the secret is in this answer only")
    async def create_key(
        caller: KeysWrite, spec: KeyCreate, request: Request, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        created = await keys.create(
            spec, caller, idempotency_key=idempotency_key, request_id=_request_id(request)
        )
        return _tagged(created, 201)

    @v1.get("/keys/{key_id}", summary="Read a key (never its secret)")
    async def get_key(_: KeysRead, key_id: str) -> JSONResponse:
        return _tagged(await keys.get(key_id))

    @v1.patch("/keys/{key_id}", summary="Change a key's models, limits, budget, team, metadata or expiry")
    async def update_key(
        caller: KeysWrite, key_id: str, change: KeyUpdate, request: Request, if_match: IfMatch = None
    ) -> JSONResponse:
        rid = _request_id(request)
        return _tagged(await keys.update(key_id, change, caller, if_match=if_match, request_id=rid))

    @v1.post("/keys/{key_id}/rotate", summary="New secret; the old one works for the grace period")
    async def rotate_key(
        caller: KeysWrite,
        key_id: str,
        request: Request,
        spec: KeyRotate | None = None,
        if_match: IfMatch = None,
    ) -> JSONResponse:
        rid = _request_id(request)
        return _tagged(
            await keys.rotate(key_id, spec or KeyRotate(), caller, if_match=if_match, request_id=rid)
        )

    @v1.post("/keys/{key_id}/revoke", summary="Revoke a key (its usage history stays)")
    async def revoke_key(
        caller: KeysWrite, key_id: str, request: Request, if_match: IfMatch = None
    ) -> JSONResponse:
        rid = _request_id(request)
        return _tagged(await keys.revoke(key_id, caller, if_match=if_match, request_id=rid))

    v1.add_api_route(
        "/keys/{key_id}", revoke_key, methods=["DELETE"], summary="Revoke a key (same as POST .../revoke)"
    )

    teams = gateway.admin.teams

    @v1.get("/teams", summary="List teams (config-file teams first, then runtime teams)")
    async def list_teams(_: TeamsRead, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
        return await teams.page(cursor, limit)

    @v1.post("/teams", status_code=201, summary="Create a team: budget, models and rpm/tpm for all its keys")
    async def create_team(caller: TeamsWrite, spec: TeamCreate, request: Request) -> JSONResponse:
        return _tagged(await teams.create(spec, caller, _request_id(request)), 201)

    @v1.get("/teams/{team}", summary="Read a team")
    async def get_team(_: TeamsRead, team: str) -> JSONResponse:
        return _tagged(await teams.get(team))

    @v1.patch("/teams/{team}", summary="Change a runtime team's budget, models, limits or metadata")
    async def update_team(
        caller: TeamsWrite, team: str, change: TeamUpdate, request: Request, if_match: IfMatch = None
    ) -> JSONResponse:
        rid = _request_id(request)
        return _tagged(await teams.update(team, change, caller, if_match=if_match, request_id=rid))

    @v1.delete("/teams/{team}", summary="Delete a runtime team that no live key names")
    async def delete_team(
        caller: TeamsWrite, team: str, request: Request, if_match: IfMatch = None
    ) -> dict[str, Any]:
        members = sum(1 for view in await keys.of_team(team) if not view.get("revoked", False))
        rid = _request_id(request)
        return await teams.delete(team, caller, members, if_match=if_match, request_id=rid)

    def budget_stage() -> BudgetStage:
        return next(s for s in gateway.stages if isinstance(s, BudgetStage))

    budgets = Budgets(keys, budget_stage)

    @v1.get("/keys/{key_id}/budget", summary="A key's budget: spent, reserved and remaining this window")
    async def key_budget(_: BudgetsRead, key_id: str) -> dict[str, Any]:
        return await budgets.key_status(key_id)

    rate_limits = RateLimits(keys, lambda: next(s for s in gateway.stages if isinstance(s, RateLimitStage)))

    @v1.get("/keys/{key_id}/rate-limit", summary="A key's rate limits: used and remaining now, when whole")
    async def key_rate_limit(_: KeysRead, key_id: str) -> dict[str, Any]:
        return await rate_limits.key_status(key_id)

    @v1.post("/keys/{key_id}/budget/reset", summary="Zero a key's spend this window (reservations stay)")
    async def reset_key_budget(caller: BudgetsWrite, key_id: str, request: Request) -> dict[str, Any]:
        return await budgets.reset_key(key_id, caller, _request_id(request))

    @v1.get("/teams/{team}/budget", summary="A team's budget: spent, reserved and remaining this window")
    async def team_budget(_: BudgetsRead, team: str) -> dict[str, Any]:
        return await budgets.team_status(team)

    @v1.post("/teams/{team}/budget/reset", summary="Zero a team's spend this window (reservations stay)")
    async def reset_team_budget(caller: BudgetsWrite, team: str, request: Request) -> dict[str, Any]:
        return await budgets.reset_team(team, caller, _request_id(request))

    # The same endpoints as /admin/usage, /admin/usage/requests/{id} and /admin/budgets, under scopes.
    usage.add_routes(
        v1,
        gateway,
        {
            "usage": [require_scope(principal, "usage:read")],
            "budgets": [require_scope(principal, "budgets:read")],
        },
    )
    routes_read = [require_scope(principal, "routes:read")]
    v1.add_api_route("/routes", routes_endpoint(gateway), methods=["GET"], dependencies=routes_read,
                     summary="Every model's routes with their health and cooldowns")  # fmt: skip
    route_admin = RouteAdmin(keys, lambda: next(s for s in gateway.stages if isinstance(s, RoutingStage)))

    @v1.post("/routes/{route:path}/reset", summary="Clear a route's cooldown on every replica")
    async def reset_route(caller: RoutesWrite, route: str, request: Request) -> dict[str, Any]:
        return await route_admin.reset(route, caller, _request_id(request))

    cache_admin = CacheAdmin(keys, gateway.store)

    @v1.post("/cache/purge", summary="Purge cached answers of a model, a key, both, or all")
    async def purge_cache(caller: CacheWrite, spec: CachePurge, request: Request) -> dict[str, Any]:
        return await cache_admin.purge(spec, caller, _request_id(request))

    reload_scope = [require_scope(principal, "config:reload")]
    v1.add_api_route("/config/reload", reload_endpoint(gateway), methods=["POST"], dependencies=reload_scope,
                     summary="Re-read the config file and apply it")  # fmt: skip

    anyone = [Depends(principal)]
    v1.add_api_route("/features", features_endpoint(gateway), methods=["GET"], dependencies=anyone,
                     summary="The gateway version and each feature: implemented, enabled")  # fmt: skip

    @v1.get("/audit", summary="The audit log, oldest first")
    async def audit(_: AuditRead, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
        return await keys.audit(cursor, limit)

    document: dict[str, Any] = {}

    @v1.get("/openapi.json", include_in_schema=False)
    async def openapi(_: Anyone) -> dict[str, Any]:
        if not document:
            document.update(admin_openapi(v1))
        return document

    return v1


def admin_openapi(v1: APIRouter) -> dict[str, Any]:
    """The OpenAPI document of the admin API alone (the client API's is ``/openapi.json``)."""
    document = get_openapi(
        title="LLM gateway admin API",
        version=__version__,
        description="Manage virtual keys, budgets and usage of a running gateway. "
        "Authenticate with the master key or an admin key: 'Authorization: Bearer <key>'.",
        routes=v1.routes,
    )
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"}
    }
    document["security"] = [{"bearer": []}]
    return document
