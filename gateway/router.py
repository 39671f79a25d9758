"""The router stage: the last stage, which picks a route of the model and calls its provider.

This simple router tries the model's first route once. The routing feature
(``gateway/features/routing.py``) replaces it with load balancing, retries, failover and cooldowns; the
seam is :func:`attempt`, which every router uses to call one provider for one route so that timing, the
``x-gateway-route`` / ``x-gateway-attempts`` headers and ``call.route`` stay consistent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from gateway.config import RouteConfig
from gateway.pipeline import Call, Handler, Result
from gateway.providers.base import Provider


async def attempt(call: Call, route: RouteConfig, provider: Provider) -> Result:
    """Call ``provider`` for ``route`` once, counting its wait as upstream time; raises GatewayError."""
    call.attempts += 1
    call.response_headers["x-gateway-attempts"] = str(call.attempts)
    # Set before the call so an error response also names the route that failed.
    call.response_headers["x-gateway-route"] = f"{route.provider}/{route.model or call.model}"
    began = time.perf_counter()
    try:
        if call.endpoint == "embeddings":
            result: Result = await provider.embeddings(call, route)
        else:
            result = await provider.chat(call, route)
    finally:
        call.upstream_s += time.perf_counter() - began
    call.route = route
    return result


class FirstRouteRouter:
    """Serves every call from its model's first route (no failover)."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self.providers = providers

    async def handle(self, call: Call, next: Handler) -> Result:
        """Call the first route's provider; ``next`` is never called: the router ends the chain."""
        route = call.model_config.routes[0]
        return await attempt(call, route, self.providers[route.provider])
