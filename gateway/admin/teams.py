"""Teams made at run time (``/team/new``), beside the config file's ``teams:``.

A runtime team is a name keys can join (``team`` on a key) plus metadata. Its budget and model list are
not taken through the API yet: a team budget is enforced by the budgets stage from the config file's
``teams:``, so one set here would be silently ignored; such fields are refused with a 400 instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.admin.access import AdminPrincipal
from gateway.admin.records import iso
from gateway.admin.store import AdminStore
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


class TeamAdmin:
    """Runtime teams over an :class:`AdminStore`; config-file teams are read-only."""

    def __init__(self, store: AdminStore, config: Callable[[], GatewayConfig]) -> None:
        self.store = store
        self.config = config

    def _config_team(self, name: str) -> dict[str, Any] | None:
        team = next((t for t in self.config().teams if t.name == name), None)
        if team is None:
            return None
        budget = None if team.budget is None else team.budget.model_dump(mode="json", exclude_none=True)
        return {"team_id": team.name, "team_alias": team.name, "source": "config", "budget": budget,
                "metadata": {}}  # fmt: skip

    async def create(
        self, name: str, metadata: dict[str, Any], actor: AdminPrincipal, request_id: str | None
    ) -> dict[str, Any]:
        """A new runtime team called ``name``; 409 when a team (config or runtime) has that name."""
        team = {"team_id": name, "team_alias": name, "source": "api", "budget": None,
                "metadata": metadata, "created_at": iso(time.time())}  # fmt: skip
        if self._config_team(name) is not None or not await self.store.insert_team(team):
            raise GatewayError(
                409, f"A team named '{name}' already exists.", "invalid_request_error", "team_exists",
                param="team_alias",
            )  # fmt: skip
        await self.store.append_audit(
            {"at": team["created_at"], "actor": {"id": actor.id, "name": actor.name}, "action": "team.create",
             "target": name, "before": None, "after": team, "request_id": request_id}
        )  # fmt: skip
        return team

    async def get(self, name: str) -> dict[str, Any]:
        """The team called ``name`` (config file first); 404 when unknown."""
        team = self._config_team(name) or await self.store.team(name)
        if team is None:
            raise GatewayError(
                404, f"No team called '{name}'.", "invalid_request_error", "team_not_found", param="team_id"
            )
        return team
