"""The seam every router uses to call one provider for one route: :func:`attempt`.

The router is the last pipeline stage (``gateway/features/routing.py``: load balancing, retries, failover,
cooldowns). Whatever its strategy, it calls :func:`attempt` per try so that upstream timing, the
``x-gateway-route`` / ``x-gateway-attempts`` headers and ``call.route`` stay consistent.
"""

from __future__ import annotations

import time

from gateway.config import RouteConfig
from gateway.features.tracing_config import SCRATCH_KEY
from gateway.pipeline import Call, Result
from gateway.providers.base import Provider


async def attempt(call: Call, route: RouteConfig, provider: Provider) -> Result:
    """Call ``provider`` for ``route`` once, counting its wait as upstream time; raises GatewayError."""
    call.attempts += 1
    call.response_headers["x-gateway-attempts"] = str(call.attempts)
    # Set before the call so an error response also names the route that failed.
    call.response_headers["x-gateway-route"] = f"{route.provider}/{route.model or call.model}"
    tracing = call.scratch.get(SCRATCH_KEY)
    began = time.perf_counter()
    try:
        if tracing is None:
            result = await _send(call, route, provider)
        else:
            result = await tracing.attempt(call, route, provider, _send)
    finally:
        call.upstream_s += time.perf_counter() - began
    call.route = route
    return result


async def _send(call: Call, route: RouteConfig, provider: Provider) -> Result:
    if call.endpoint == "embeddings":
        return await provider.embeddings(call, route)
    return await provider.chat(call, route)
