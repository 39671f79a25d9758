"""The seam every router uses to call one provider for one route: :func:`attempt`.

The router is the last pipeline stage (``gateway/features/routing.py``: load balancing, retries, failover,
cooldowns). Whatever its strategy, it calls :func:`attempt` per try so that upstream timing, the
``x-gateway-route`` / ``x-gateway-attempts`` headers and ``call.route`` stay consistent.
"""

from __future__ import annotations

import time
from dataclasses import replace

from gateway.config import RouteConfig
from gateway.features.tracing_config import SCRATCH_KEY
from gateway.params import DROPPED_HEADER, drop_allowed, refusal, support_of, without
from gateway.pipeline import Call, Result
from gateway.providers.base import Provider


async def attempt(call: Call, route: RouteConfig, provider: Provider, *, drop_params: bool = False) -> Result:
    """Call ``provider`` for ``route`` once, counting its wait as upstream time; raises GatewayError.

    Parameters the provider cannot honour are dropped from what it receives and named in
    ``x-gateway-dropped-params`` when dropping is allowed (``drop_params`` is the configured default), and
    refused with a 400 otherwise (gateway/params.py).
    """
    sent = _honest(call, route, provider, drop_params)
    call.attempts += 1
    call.response_headers["x-gateway-attempts"] = str(call.attempts)
    # Set before the call so an error response also names the route that failed.
    call.response_headers["x-gateway-route"] = f"{route.provider}/{route.model or call.model}"
    tracing = call.scratch.get(SCRATCH_KEY)
    began = time.perf_counter()
    try:
        if tracing is None:
            result = await _send(sent, route, provider)
        else:
            result = await tracing.attempt(sent, route, provider, _send)
    finally:
        call.upstream_s += time.perf_counter() - began
    call.route = route
    return result


def _honest(call: Call, route: RouteConfig, provider: Provider, default: bool) -> Call:
    """The call this attempt sends: ``call`` itself, or a copy whose body lacks the dropped parameters
    (sharing headers and scratch, so the answer's headers and notes still reach the client)."""
    names = support_of(provider).unsupported(call.body) if call.endpoint == "chat" else []
    if not names:
        call.response_headers.pop(DROPPED_HEADER, None)  # an earlier attempt's drops do not apply
        return call
    if not drop_allowed(call, route, default):
        raise refusal(names, route.provider)
    call.response_headers[DROPPED_HEADER] = ",".join(names)
    return replace(call, body=without(call.body, names))


async def _send(call: Call, route: RouteConfig, provider: Provider) -> Result:
    if call.endpoint == "embeddings":
        return await provider.embeddings(call, route)
    return await provider.chat(call, route)
