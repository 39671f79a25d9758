"""Budget status and reset of one key or team, over the budgets stage (gateway/features/budgets.py).

A reset zeroes the spend of the budget's current window and never drops reservations in flight (they
settle as usual). It lasts until the window ends; with the in-process state store a restart restores the
window's spend from the usage ledger, which a reset does not rewrite, so the reset is undone then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.admin.access import AdminPrincipal
from gateway.admin.keys import KeyAdmin, iso, not_found
from gateway.errors import GatewayError
from gateway.features.budgets import BudgetRule, BudgetStage


def no_budget(what: str) -> GatewayError:
    """404: the key or team has no budget."""
    return GatewayError(404, f"{what} has no budget.", "invalid_request_error", "budget_not_found")


class Budgets:
    """Budgets of keys and teams (config file or runtime); ``stage()`` is the running budgets stage."""

    def __init__(self, keys: KeyAdmin, stage: Callable[[], BudgetStage]) -> None:
        self.keys = keys
        self.stage = stage

    async def _key_rule(self, key_id: str) -> BudgetRule:
        entry = self.keys.config_key(key_id)
        if entry is not None:
            name, budget = entry.name, entry.budget
        else:
            record = await self.keys.store.key_by_id(key_id)
            if record is None:
                raise not_found(key_id)
            name, budget = record.name, record.budget
        rule = await self.stage().key_rule(name, budget)
        if rule is None:
            raise no_budget(f"The key '{key_id}'")
        return rule

    async def _team_rule(self, team: str) -> BudgetRule:
        record = await self.keys.store.team(team)
        rule = await self.stage().team_rule(team, None if record is None else record.budget)
        if rule is None:
            raise no_budget(f"The team '{team}'")
        return rule

    async def key_status(self, key_id: str) -> dict[str, Any]:
        """Spend, reservations and what remains of the key's budget this window."""
        return (await self.stage().status([await self._key_rule(key_id)]))[0]

    async def team_status(self, team: str) -> dict[str, Any]:
        """Spend, reservations and what remains of the team's budget this window."""
        return (await self.stage().status([await self._team_rule(team)]))[0]

    async def reset_key(self, key_id: str, actor: AdminPrincipal, request_id: str | None) -> dict[str, Any]:
        """Zero the key's spend this window (audited)."""
        return await self._reset(await self._key_rule(key_id), key_id, actor, request_id)

    async def reset_team(self, team: str, actor: AdminPrincipal, request_id: str | None) -> dict[str, Any]:
        """Zero the team's spend this window (audited)."""
        return await self._reset(await self._team_rule(team), team, actor, request_id)

    async def _reset(
        self, rule: BudgetRule, target: str, actor: AdminPrincipal, request_id: str | None
    ) -> dict[str, Any]:
        stage = self.stage()
        before = (await stage.status([rule]))[0]
        after = await stage.reset(rule)
        await self.keys.store.append_audit(
            {"at": iso(self.keys.clock()), "actor": {"id": actor.id, "name": actor.name},
             "action": f"{rule.scope}.budget.reset", "target": target, "before": before, "after": after,
             "request_id": request_id}
        )  # fmt: skip
        return after
