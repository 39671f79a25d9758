"""Clearing a route's cooldown for the admin API: close its circuit on every replica, audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.admin.access import AdminPrincipal
from gateway.admin.keys import KeyAdmin, iso
from gateway.errors import GatewayError
from gateway.features.cooldown import state_of
from gateway.features.routing import RoutingStage
from gateway.stores import StoreUnavailable


def route_not_found(route: str) -> GatewayError:
    """404 for a route no model of the running config uses."""
    return GatewayError(
        404, f"route: no model has the route '{route[:200]}' (see GET /admin/v1/routes).",
        "invalid_request_error", "route_not_found", param="route",
    )  # fmt: skip


class RouteAdmin:
    """Route health changes over the running routing stage (``stage()``: it is rebuilt on reload)."""

    def __init__(self, keys: KeyAdmin, stage: Callable[[], RoutingStage]) -> None:
        self.keys = keys
        self.stage = stage

    async def _state(self, stage: RoutingStage, route: str) -> dict[str, Any]:
        health = await stage.cooldowns.health(route)
        requests, failures = await stage.cooldowns.counts(route)
        now = stage.clock()
        return {
            "route": route,
            "state": state_of(health, now),
            "rate_limited": health.rate_limited,
            "recent_requests": requests,
            "recent_failures": failures,
        }

    async def reset(self, route: str, actor: AdminPrincipal, request_id: str | None) -> dict[str, Any]:
        """Close ``route``'s circuit and clear its failure window (audited): it takes traffic from the
        next request on every replica. A route that keeps failing trips again by the usual rule."""
        stage = self.stage()
        if route not in stage.route_keys():
            raise route_not_found(route)
        try:
            before = await self._state(stage, route)
            await stage.cooldowns.reset(route)
            after = await self._state(stage, route)
        except StoreUnavailable:
            raise GatewayError(
                503, "The route could not be reset: the shared state store cannot be reached.",
                "service_unavailable", "state_store_unavailable",
            ) from None  # fmt: skip
        await self.keys.store.append_audit(
            {"at": iso(self.keys.clock()), "actor": {"id": actor.id, "name": actor.name},
             "action": "route.cooldown.reset", "target": route, "before": before, "after": after,
             "request_id": request_id}
        )  # fmt: skip
        return after
