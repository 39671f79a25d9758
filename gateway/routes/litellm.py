"""LiteLLM-compatible management calls, thin aliases over the admin API's library (gateway/admin/).

``/key/generate``, ``/key/info``, ``/key/update``, ``/key/delete``, ``/team/new``, ``/team/info`` and
``/spend/logs`` take and answer LiteLLM's shapes (gateway/admin/litellm.py translates), with the same
credentials, scopes, validation and audit log as ``/admin/v1``.
"""

from dataclasses import asdict
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request

from gateway.admin import litellm
from gateway.admin.access import AdminPrincipal
from gateway.admin.keys import not_found
from gateway.errors import invalid_request
from gateway.features.usage import UsageStage
from gateway.routes.admin_v1 import EnvelopeRoute, principal_dependency, require_scope

if TYPE_CHECKING:
    from gateway.app import Gateway

MAX_LOGS = 1000


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise invalid_request(f"{name}: use a date like 2026-12-31.", param=name) from None


def router(gateway: "Gateway") -> APIRouter:
    """The LiteLLM-compatible routes (not part of ``/admin/v1/openapi.json``)."""
    compat = APIRouter(route_class=EnvelopeRoute, include_in_schema=False)
    principal = principal_dependency(gateway)
    keys, teams = gateway.admin.keys, gateway.admin.teams
    # Annotations are evaluated here (no postponed annotations in this module), so these local aliases work.
    KeysRead = Annotated[AdminPrincipal, require_scope(principal, "keys:read")]
    KeysWrite = Annotated[AdminPrincipal, require_scope(principal, "keys:write")]
    TeamsRead = Annotated[AdminPrincipal, require_scope(principal, "teams:read")]
    TeamsWrite = Annotated[AdminPrincipal, require_scope(principal, "teams:write")]
    UsageRead = Annotated[AdminPrincipal, require_scope(principal, "usage:read")]

    def rid(request: Request) -> str | None:
        return request.scope["state"].get("request_id")

    @compat.post("/key/generate")
    async def generate(caller: KeysWrite, body: litellm.KeyGenerate, request: Request) -> dict[str, Any]:
        created = await keys.create(litellm.key_create(body), caller, request_id=rid(request))
        return litellm.key_info(created, secret=created["secret"])

    @compat.get("/key/info")
    async def info(_: KeysRead, key: Annotated[str, Query(min_length=1)]) -> dict[str, Any]:
        record = await keys.find(key)
        if record is None:
            raise not_found("(given key)")
        return {"key": key, "info": litellm.key_info(await keys.get(record.id))}

    @compat.post("/key/update")
    async def update(caller: KeysWrite, body: litellm.KeyUpdateBody, request: Request) -> dict[str, Any]:
        record = await keys.find(body.key)
        if record is None:
            raise not_found("(given key)")
        view = await keys.update(record.id, litellm.key_update(body, record), caller, request_id=rid(request))
        return litellm.key_info(view)

    @compat.post("/key/delete")
    async def delete(caller: KeysWrite, body: litellm.KeyDelete, request: Request) -> dict[str, Any]:
        records = [await keys.find(key) for key in body.keys]
        for i, record in enumerate(records):
            if record is None:
                raise invalid_request(f"keys[{i}]: no such key.", param=f"keys[{i}]")
        for record in records:
            assert record is not None
            await keys.revoke(record.id, caller, request_id=rid(request))
        return {"deleted_keys": body.keys}

    @compat.post("/team/new")
    async def team_new(caller: TeamsWrite, body: litellm.TeamNew, request: Request) -> dict[str, Any]:
        return litellm.team_info(await teams.create(litellm.team_create(body), caller, rid(request)))

    @compat.get("/team/info")
    async def team_info(_: TeamsRead, team_id: Annotated[str, Query(min_length=1)]) -> dict[str, Any]:
        team = litellm.team_info(await teams.get(team_id))
        members = [litellm.key_info(view) for view in await keys.of_team(team_id)]
        return {"team_id": team_id, "team_info": team, "keys": members}

    @compat.get("/spend/logs")
    async def spend_logs(
        _: UsageRead,
        api_key: str | None = None,
        request_id: str | None = None,
        start_date: str | None = None,
        end_date: str | None = None,
    ) -> list[dict[str, Any]]:
        first, last = _day(start_date, "start_date"), _day(end_date, "end_date")
        name = None
        key_ids: dict[str, str] = {}
        if api_key is not None:
            record = await keys.find(api_key)
            if record is None:
                raise invalid_request("api_key: no such key.", param="api_key")
            name, key_ids = record.name, {record.name: record.id}
        if not gateway.started:
            await gateway.start()
        ledger = next(s for s in gateway.stages if isinstance(s, UsageStage)).ledger
        await ledger.flush()  # the requests just made, not only those the background writer has stored
        rows = await ledger.records(request_id=request_id, key_name=name, limit=MAX_LOGS)
        out = []
        for row in map(asdict, rows):
            day = date.fromisoformat(row["day"])
            if (first is None or day >= first) and (last is None or day <= last):
                out.append(litellm.spend_row(row, key_ids))
        return out

    return compat
