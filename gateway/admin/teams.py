"""Teams: the config file's ``teams:`` (read-only here) and teams made at run time, each change audited.

A runtime team has a budget (spent by all its keys together, enforced by the budgets stage like a
config-file team's), a model list that narrows its keys' own, and rpm/tpm limits that are one allowance
for all its keys (the rate-limit stage). They apply to keys made through the API (a config-file key's
team is a config-file team). Teams live in the admin store and every change bumps its version counter, so
each replica sees it within ``admin.sync_interval_s`` (gateway/admin/directory.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.admin.access import AdminPrincipal
from gateway.admin.directory import KeyDirectory
from gateway.admin.keys import check_models, mixed_page
from gateway.admin.records import TeamRecord, iso, team_view
from gateway.admin.schemas import TeamCreate, TeamUpdate
from gateway.admin.store import AdminStore
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.features.budgets import TeamConfig


def team_not_found(name: str) -> GatewayError:
    """404 for an unknown team."""
    return GatewayError(
        404, f"No team called '{name}'.", "invalid_request_error", "team_not_found", param="name"
    )


def team_read_only(name: str) -> GatewayError:
    """409 for a change to a team from the config file."""
    return GatewayError(
        409,
        f"The team '{name}' is defined in the config file; change it there (and reload), "
        "not through the API.",
        "invalid_request_error",
        "team_read_only",
        param="name",
    )


def team_precondition_failed(etag: str) -> GatewayError:
    """412: ``If-Match`` names another version of the team than the stored one."""
    return GatewayError(
        412,
        f"The team changed since you read it (its ETag is now {etag}); read it again and retry.",
        "invalid_request_error",
        "precondition_failed",
        param="If-Match",
    )


def config_team_view(team: TeamConfig) -> dict[str, Any]:
    """A config-file team as the API shows it (read-only; it has a budget only)."""
    return {
        "name": team.name,
        "source": "config",
        "read_only": True,
        "budget": None if team.budget is None else team.budget.model_dump(mode="json", exclude_none=True),
        "models": "*",
        "rpm": None,
        "tpm": None,
        "metadata": {},
    }


class TeamAdmin:
    """Runtime teams over an :class:`AdminStore`; ``config()`` is the running config (it can reload)."""

    def __init__(
        self,
        store: AdminStore,
        directory: KeyDirectory,
        config: Callable[[], GatewayConfig],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = directory
        self.config = config
        self.clock = clock

    def config_team(self, name: str) -> TeamConfig | None:
        """The config-file team called ``name``, or None."""
        return next((t for t in self.config().teams if t.name == name), None)

    async def _audit(
        self,
        actor: AdminPrincipal,
        action: str,
        target: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        request_id: str | None,
    ) -> None:
        await self.store.append_audit(
            {"at": iso(self.clock()), "actor": {"id": actor.id, "name": actor.name}, "action": action,
             "target": target, "before": before, "after": after, "request_id": request_id}
        )  # fmt: skip

    async def create(self, spec: TeamCreate, actor: AdminPrincipal, request_id: str | None) -> dict[str, Any]:
        """A new runtime team; 409 when a team (config file or runtime) has that name."""
        check_models(self.config(), spec.models)
        now = self.clock()
        record = TeamRecord(
            name=spec.name,
            budget=spec.budget,
            models=None if spec.models == "*" else list(spec.models),
            rpm=spec.rpm,
            tpm=spec.tpm,
            metadata=spec.metadata,
            created_at=now,
            updated_at=now,
        )
        if self.config_team(spec.name) is not None or not await self.store.insert_team(record):
            raise GatewayError(
                409, f"name: a team named '{spec.name}' already exists.", "invalid_request_error",
                "team_exists", param="name",
            )  # fmt: skip
        self.directory.forget()
        view = team_view(record)
        await self._audit(actor, "team.create", record.name, None, view, request_id)
        return view

    async def get(self, name: str) -> dict[str, Any]:
        """The team called ``name`` (config file first); 404 when unknown."""
        if (team := self.config_team(name)) is not None:
            return config_team_view(team)
        record = await self.store.team(name)
        if record is None:
            raise team_not_found(name)
        return team_view(record)

    async def page(self, cursor: str | None, limit: int | None) -> dict[str, Any]:
        """A page of teams: config-file teams first, then runtime teams in name order."""
        fixed = [config_team_view(t) for t in self.config().teams]
        return await mixed_page(cursor, limit, fixed, self.store.list_teams, team_view, lambda r: r.name)

    async def _runtime(self, name: str, if_match: str | None) -> TeamRecord:
        if self.config_team(name) is not None:
            raise team_read_only(name)
        record = await self.store.team(name)
        if record is None:
            raise team_not_found(name)
        if if_match is not None and if_match.strip() not in (record.etag, "*"):
            raise team_precondition_failed(record.etag)
        return record

    async def update(
        self,
        name: str,
        change: TeamUpdate,
        actor: AdminPrincipal,
        *,
        if_match: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Change the fields sent in ``change`` (from each key's next request); 412 when ``if_match`` is not
        the team's current ETag; 409 for a config-file team."""
        record = await self._runtime(name, if_match)
        values: dict[str, Any] = {}
        for field in change.model_fields_set:
            value = getattr(change, field)
            if field == "models":
                check_models(self.config(), value)
                value = None if value in (None, "*") else list(value)
            elif field == "metadata":
                value = value or {}
            values[field] = value
        updated = record.model_copy(
            update={**values, "revision": record.revision + 1, "updated_at": self.clock()}
        )
        if not await self.store.replace_team(updated, record.revision):
            current = await self.store.team(name)
            raise team_precondition_failed(current.etag if current is not None else "gone")
        self.directory.forget()
        view = team_view(updated)
        await self._audit(actor, "team.update", name, team_view(record), view, request_id)
        return view

    async def delete(
        self,
        name: str,
        actor: AdminPrincipal,
        members: int,
        *,
        if_match: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Delete a runtime team; 409 while ``members`` (keys not revoked) still name it, since deleting it
        would silently lift its budget and limits from them."""
        record = await self._runtime(name, if_match)
        if members:
            raise GatewayError(
                409,
                f"The team '{name}' still has {members} key(s); move or revoke them first.",
                "invalid_request_error",
                "team_not_empty",
                param="name",
            )
        if not await self.store.delete_team(name, record.revision):
            current = await self.store.team(name)
            raise team_precondition_failed(current.etag if current is not None else "gone")
        self.directory.forget()
        await self._audit(actor, "team.delete", name, team_view(record), None, request_id)
        return {"name": name, "deleted": True}
