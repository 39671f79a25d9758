"""The GraphQL API's data-access functions: each decides what its caller may see, then calls the library
function the REST API calls (``/v1/models``, ``/admin/v1/usage``, ``/admin/v1/budgets``, ``/admin/v1/routes``,
``/admin/v1/keys``) and whose mutations call the admin library functions ``/admin/v1``'s routes call
(audited there), so the two APIs can never disagree.

Authorization lives here, not in the resolvers: a virtual key is narrowed to its own data (its key, its
models, its usage, its budgets); an admin caller needs the scope the matching ``/admin/v1`` route needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from gateway.admin.budgets import Budgets
from gateway.admin.cache import CacheAdmin
from gateway.admin.keys import CONFIG_PREFIX
from gateway.admin.ratelimits import RateLimits
from gateway.admin.schemas import CachePurge, KeyCreate, KeyRotate, KeyUpdate
from gateway.catalog import features_report
from gateway.errors import invalid_request
from gateway.features.budgets import BudgetConfig, BudgetStage
from gateway.features.ratelimit import RateLimitStage
from gateway.features.routing import RoutingStage
from gateway.features.usage import UsageStage
from gateway.graphql.access import Caller, forbidden, require_scope
from gateway.ledger import GroupBy
from gateway.reload import ReloadResult
from gateway.routes.usage import usage_report
from gateway.usage_record import UsageRecord

if TYPE_CHECKING:
    from gateway.app import Gateway

# How often a route health subscription reads the routes' state (one store read per route each time).
ROUTE_POLL_S = 1.0


class GraphQLData:
    """What one request's caller may read and change, over the running gateway."""

    def __init__(self, gateway: Gateway, caller: Caller, request_id: str | None = None) -> None:
        self.gateway = gateway
        self.caller = caller
        self.request_id = request_id

    async def _started(self) -> None:
        if not self.gateway.started:
            await self.gateway.start()

    def _stage(self, kind: type[Any]) -> Any:
        return next(s for s in self.gateway.stages if isinstance(s, kind))

    def models(self) -> list[str]:
        """The aliases the caller may use (``GET /v1/models``): a virtual key's allowed models, every
        model for an admin caller."""
        if self.caller.key is not None:
            return self.gateway.visible_models(self.caller.key)
        return list(self.gateway.models)

    async def me(self) -> dict[str, Any]:
        """The calling virtual key: name, team, models, limits and budget status (never its secret)."""
        key = self.caller.key
        if key is None:
            raise forbidden("'me' is a virtual key's view of itself; an admin caller has no key to show.")
        entry = next((k for k in self.gateway.config.auth.keys if k.name == key.name), None)
        budgets = await self._key_budgets()
        return {
            "name": key.name,
            "team": key.team,
            "models": self.models(),
            "rpm": entry.rpm if entry is not None else key.rpm,
            "tpm": entry.tpm if entry is not None else key.tpm,
            "max_concurrent": entry.max_concurrent if entry is not None else None,
            "budget": next((b for b in budgets if b["scope"] == "key"), None),
        }

    async def _key_budgets(self) -> list[dict[str, Any]]:
        """The calling virtual key's budget and its team's, as ``GET /admin/v1/budgets`` reports them."""
        assert self.caller.key is not None
        await self._started()
        stage: BudgetStage = self._stage(BudgetStage)
        key = self.caller.key
        rules = [await stage.key_rule(key.name, key.budget)]
        if key.team is not None:
            rules.append(await stage.team_rule(key.team, key.team_budget))
        return await stage.status([rule for rule in rules if rule is not None])

    async def usage(
        self, group_by: list[GroupBy], key: str | None, start: str | None, end: str | None
    ) -> dict[str, Any]:
        """The usage report of ``GET /admin/v1/usage``. A virtual key reads only its own requests (naming
        another key is 403); an admin caller needs ``usage:read``."""
        if self.caller.key is not None:
            own = self.caller.key.name
            if key is not None and key != own:
                raise forbidden("A virtual key reads only its own usage.")
            key = own
        else:
            require_scope(self.caller, "usage:read")
        await self._started()
        return await usage_report(self._stage(UsageStage), group_by, key, start, end)

    async def budgets(self) -> list[dict[str, Any]]:
        """Every budget (``budgets:read``), or a virtual key's own budget and its team's."""
        if self.caller.key is not None:
            return await self._key_budgets()
        require_scope(self.caller, "budgets:read")
        await self._started()
        stage: BudgetStage = self._stage(BudgetStage)
        return await stage.report()

    async def routes(self) -> dict[str, Any]:
        """Each model's routes with health and cooldowns (``GET /admin/v1/routes``): every model with
        ``routes:read``, a virtual key's allowed models only."""
        if self.caller.key is None:
            require_scope(self.caller, "routes:read")
        await self._started()
        snapshot: dict[str, Any] = await self._stage(RoutingStage).snapshot()
        visible = set(self.models())
        return {name: model for name, model in snapshot["models"].items() if name in visible}

    async def usage_events(self) -> AsyncIterator[UsageRecord]:
        """Each request finished from now on, as its usage record (this replica's, and the other replicas'
        through the feed's Redis relay when there is one): a virtual key's own
        requests only; every request for an admin caller with ``usage:read``."""
        own = self.caller.key.name if self.caller.key is not None else None
        if own is None:
            require_scope(self.caller, "usage:read")
        async with self.gateway.shared.feed.subscribe() as queue:
            while True:
                record = await queue.get()
                if own is None or record.key_name == own:
                    yield record

    async def route_changes(self) -> AsyncIterator[dict[str, Any]]:
        """What :meth:`routes` answers now, then again whenever a route's state changes (polled every
        ``ROUTE_POLL_S``; the state lives in the shared store, so a change another replica made shows too)."""
        last: dict[tuple[str, str], str] | None = None
        while True:
            current = await self.routes()
            states = {(name, r["route"]): r["state"] for name, m in current.items() for r in m["routes"]}
            if states != last:
                last = states
                yield current
            await asyncio.sleep(ROUTE_POLL_S)

    def features(self) -> dict[str, dict[str, Any]]:
        """The roadmap features this build implements and whether the running config enables each
        (``GET /admin/v1/features``, which any authenticated caller may read)."""
        return features_report(self.gateway.config)

    async def keys_page(self, cursor: str | None, limit: int) -> dict[str, Any]:
        """A page of keys, config-file keys first (``GET /admin/v1/keys``, ``keys:read``)."""
        require_scope(self.caller, "keys:read")
        return await self.gateway.admin.keys.page(cursor, limit)

    async def key_budgets(self, keys: list[tuple[str, str | None]]) -> list[dict[str, Any] | None]:
        """The budget status of each ``(key name, its budget as JSON or None)`` (``budgets:read``), read in
        one batch: the GraphQL DataLoader hands a whole page's keys here at once, so a list of keys with
        their budgets costs one state-store round trip, not one per key."""
        require_scope(self.caller, "budgets:read")
        await self._started()
        stage: BudgetStage = self._stage(BudgetStage)
        rules = [
            await stage.key_rule(name, None if budget is None else BudgetConfig.model_validate_json(budget))
            for name, budget in keys
        ]
        found = [rule for rule in rules if rule is not None]
        statuses = iter(await stage.status(found) if found else [])
        return [None if rule is None else next(statuses) for rule in rules]

    def _rate_limits(self) -> RateLimits:
        return RateLimits(self.gateway.admin.keys, lambda: self._stage(RateLimitStage))

    async def rate_limits(self, key_id: str | None) -> list[dict[str, Any]]:
        """The rate limits of a key, used and remaining now (``GET /admin/v1/keys/{id}/rate-limit``): a
        virtual key reads only its own (``key_id`` null or its own id); an admin caller names the key and
        needs ``keys:read``."""
        key = self.caller.key
        if key is not None:
            if key_id is not None and key_id not in (key.key_id, CONFIG_PREFIX + key.key_id):
                raise forbidden("A virtual key reads only its own rate limits.")
            await self._started()
            stage: RateLimitStage = self._stage(RateLimitStage)
            return (await stage.status([key]))[0]
        require_scope(self.caller, "keys:read")
        if key_id is None:
            raise invalid_request("'key' is required for an admin caller: the key's id.", param="key")
        await self._started()
        status: dict[str, Any] = await self._rate_limits().key_status(key_id)
        return list(status["limits"])

    async def key_rate_limits(self, views: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """The rate limits of each key of a page (``keys:read``), given as the admin API lists them, read
        in one batch: the GraphQL DataLoader hands a whole page here, one state-store read for it all."""
        require_scope(self.caller, "keys:read")
        await self._started()
        return [status["limits"] for status in await self._rate_limits().of_views(views)]

    async def create_key(self, spec: KeyCreate) -> dict[str, Any]:
        """Create a runtime key (``POST /admin/v1/keys``, ``keys:write``); the answer holds its secret."""
        actor = require_scope(self.caller, "keys:write")
        return await self.gateway.admin.keys.create(spec, actor, request_id=self.request_id)

    async def reset_key_budget(self, key_id: str) -> dict[str, Any]:
        """Zero a key's spend this window (``POST /admin/v1/keys/{id}/budget/reset``, ``budgets:write``)."""
        actor = require_scope(self.caller, "budgets:write")
        await self._started()
        budgets = Budgets(self.gateway.admin.keys, lambda: self._stage(BudgetStage))
        return await budgets.reset_key(key_id, actor, self.request_id)

    async def reload_config(self) -> ReloadResult:
        """Re-read the config file and apply it (``POST /admin/v1/config/reload``, ``config:reload``)."""
        require_scope(self.caller, "config:reload")
        return await self.gateway.reloader.reload_and_log("graphql reloadConfig")

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a runtime key (``POST /admin/v1/keys/{id}/revoke``, ``keys:write``)."""
        actor = require_scope(self.caller, "keys:write")
        return await self.gateway.admin.keys.revoke(key_id, actor, request_id=self.request_id)

    async def update_key(self, key_id: str, change: KeyUpdate) -> dict[str, Any]:
        """Change the fields of a runtime key sent in ``change`` (``PATCH /admin/v1/keys/{id}``,
        ``keys:write``)."""
        actor = require_scope(self.caller, "keys:write")
        return await self.gateway.admin.keys.update(key_id, change, actor, request_id=self.request_id)

    async def rotate_key(self, key_id: str, spec: KeyRotate) -> dict[str, Any]:
        """A new secret for a runtime key, the old one working for the grace period
        (``POST /admin/v1/keys/{id}/rotate``, ``keys:write``); the answer holds the new secret."""
        actor = require_scope(self.caller, "keys:write")
        return await self.gateway.admin.keys.rotate(key_id, spec, actor, request_id=self.request_id)

    async def reset_team_budget(self, team: str) -> dict[str, Any]:
        """Zero a team's spend this window (``POST /admin/v1/teams/{team}/budget/reset``,
        ``budgets:write``)."""
        actor = require_scope(self.caller, "budgets:write")
        await self._started()
        budgets = Budgets(self.gateway.admin.keys, lambda: self._stage(BudgetStage))
        return await budgets.reset_team(team, actor, self.request_id)

    async def purge_cache(self, spec: CachePurge) -> dict[str, Any]:
        """Purge cached answers of a model, a key, both, or all (``POST /admin/v1/cache/purge``,
        ``cache:write``)."""
        actor = require_scope(self.caller, "cache:write")
        await self._started()
        cache = CacheAdmin(self.gateway.admin.keys, self.gateway.store)
        return await cache.purge(spec, actor, self.request_id)
