"""The seam every router uses to call one provider for one route: :func:`attempt`.

The router is the last pipeline stage (``gateway/features/routing.py``: load balancing, retries, failover,
cooldowns). Whatever its strategy, it calls :func:`attempt` per try so that upstream timing, the
``x-gateway-route`` / ``x-gateway-attempts`` headers and ``call.route`` stay consistent.
"""

from __future__ import annotations

import time

from gateway.config import RouteConfig
from gateway.pipeline import Call, Result
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
