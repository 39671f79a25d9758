"""Region-aware routing: which routes a key may use (residency) and in which order the router tries them.

A replica knows its region (`server.region`, or `GATEWAY_REGION` when the config leaves it unset); routes
carry a `region`. For each model alias the router:

1. **removes** every route outside the key's `allowed_regions` (a route without a region counts as outside:
   residency that cannot be shown is not kept) before balancing, retries, failover and fallbacks, so no
   failover can cross the boundary;
2. **tiers** the rest: routes in the replica's region, then those in each region of
   `features.routing.region_preference[<replica region>]` in the order listed, then every other route.
   The balancing strategy orders each tier on its own, so the next tier is reached only when every route of
   the tiers before it has failed in this request or is cooling down.

Without `server.region` there is one tier (the behaviour of a single-region gateway).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from gateway.features.routing_strategies import RouteTarget

REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
REGION_ENV = "GATEWAY_REGION"
REGION_HEADER = "x-gateway-region"

T = TypeVar("T")


def apply_region_env(data: Any, environ: Mapping[str, str] = os.environ) -> Any:
    """The raw config with `server.region` taken from `GATEWAY_REGION` when the file does not set it.

    One config file can then be deployed to every region, each replica told its region by its environment.
    """
    region = environ.get(REGION_ENV, "").strip()
    if not region or not isinstance(data, dict):
        return data
    server = data.get("server")
    if server is None:
        server = {}
    if not isinstance(server, dict) or server.get("region") is not None:
        return data
    return {**data, "server": {**server, "region": region}}


def allowed(
    candidates: Sequence[tuple[RouteTarget, T]], regions: frozenset[str] | None
) -> tuple[list[tuple[RouteTarget, T]], list[RouteTarget]]:
    """The candidates a key restricted to `regions` may use, and the ones it may not (None: all allowed)."""
    if regions is None:
        return list(candidates), []
    kept = [(target, extra) for target, extra in candidates if target.region in regions]
    dropped = [target for target, _ in candidates if target.region not in regions]
    return kept, dropped


def tiers(
    routes: Sequence[RouteTarget], region: str | None, preference: Mapping[str, Sequence[str]]
) -> list[list[RouteTarget]]:
    """`routes` grouped into tiers, nearest first (see the module docstring); never drops a route."""
    if region is None:
        return [list(routes)]
    rank: dict[str, int] = {region: 0}
    for other in preference.get(region, ()):
        rank.setdefault(other, len(rank))
    last = len(rank)
    grouped: dict[int, list[RouteTarget]] = {}
    for route in routes:
        grouped.setdefault(rank.get(route.region or "", last), []).append(route)
    return [grouped[number] for number in sorted(grouped)]


def tiered_order(
    routes: Sequence[RouteTarget],
    region: str | None,
    preference: Mapping[str, Sequence[str]],
    order: Callable[[Sequence[RouteTarget]], list[RouteTarget]],
) -> list[RouteTarget]:
    """The order the router tries `routes` in: each tier in the strategy's `order`, tier after tier."""
    if region is None:  # one tier (most gateways): no grouping, no copy
        return order(routes)
    return [route for tier in tiers(routes, region, preference) for route in order(tier)]


def region_problems(
    route_regions: Sequence[str | None],
    key_regions: Sequence[tuple[int, Sequence[str] | None]],
    preference: Mapping[str, Sequence[str]],
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Config problems: an `allowed_regions` or `region_preference` entry naming a region no route is in.

    `key_regions` holds `(index in auth.keys, allowed_regions)`. A replica's own region (and the keys of
    `region_preference`) may have no routes: a gateway can run in a region its providers do not.
    """
    known = sorted({region for region in route_regions if region})
    hint = f" (regions on routes: {', '.join(known)})" if known else " (no route has a region)"
    for index, regions in key_regions:
        for position, region in enumerate(regions or ()):
            if region not in known:
                path: tuple[str | int, ...] = ("auth", "keys", index, "allowed_regions", position)
                yield path, f"no route is in region '{region}'{hint}"
    for replica, regions in preference.items():
        for position, region in enumerate(regions):
            if region not in known:
                path = ("features", "routing", "region_preference", replica, position)
                yield path, f"no route is in region '{region}'{hint}"


def restriction_message(model: str, key: str, regions: frozenset[str], dropped: Sequence[RouteTarget]) -> str:
    """The 503's message when nothing a region-restricted key may use is healthy; names the restriction."""
    outside = sorted({target.region or "no region" for target in dropped})
    where = f" (routes in {', '.join(outside)} are never used for it)" if outside else ""
    return (
        f"Model '{model}' has no healthy route in the regions key '{key}' is restricted to "
        f"(allowed_regions: {', '.join(sorted(regions))}){where}."
    )
