"""Partitioned rate limits: each region enforces a share of a limit in its own store, no global round trip.

With `state.partitioned_features: [rate_limit]`, a limit of L (a key's rpm, a team's tpm, a model's rpm...)
is split into one share per region of `state.regions`, and each region's replicas admit against their
regional store (`state.redis_url`) with their region's share as the limit. The shares of a limit always sum
to L exactly (:func:`apportion`), so the regions together never have more than L to give at any instant.

The hot path only touches this process: :class:`RegionShares` answers a bucket's share from an in-process
table and counts the demand asked of it (admitted and refused alike). In the background
(`gateway.features.rebalance`) every replica publishes its demand to the global store, one replica per
interval recomputes every limit's shares in proportion to the demand each region saw, and every replica
reads the new shares back into its table.

**Seeding.** A limit with no shares in the table (no demand yet, or a limit whose value changed since the
shares were computed) is split equally over `state.regions` (largest remainder, ties to the region that
sorts first). Not weighted by replica count: the replicas of a region share their regional store, so a
region's share is enforced once however many replicas it runs.

**Floor.** Every region keeps at least `state.partition_min_share` of an equal split (at least one unit when
the limit has one per region), so a region that was idle can admit at once when traffic arrives there,
before the next rebalance gives it more.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

# The only feature that can be partitioned: a budget is money and stays exact in the global store.
PARTITIONABLE = ("rate_limit",)


def floor_units(limit: int, regions: int, min_share: float) -> int:
    """The units every region keeps whatever the demand: `min_share` of an equal split, rounded down, and
    at least one when `min_share` is positive and the limit has a unit for every region."""
    if regions <= 0 or limit < regions or min_share <= 0:
        return 0
    equal = limit // regions
    return min(equal, max(1, math.floor(limit * min_share / regions)))


def apportion(
    limit: int, regions: Sequence[str], demand: Mapping[str, int], min_share: float = 0.0
) -> dict[str, int]:
    """Split `limit` into whole units per region, in proportion to `demand`, summing to `limit` exactly.

    Each region first gets its floor (:func:`floor_units`); the rest is split by demand (equally when no
    region saw any) with the largest-remainder method: every region gets the whole part of its quota, and
    the units left over go to the largest fractional parts, ties to the region that sorts first. Integer
    arithmetic throughout, so every replica computing it gets the same answer.
    """
    names = sorted(set(regions))
    if not names:
        return {}
    floor = floor_units(limit, len(names), min_share)
    rest = limit - floor * len(names)
    weights = [max(0, int(demand.get(name, 0))) for name in names]
    total = sum(weights)
    if total == 0:
        weights, total = [1] * len(names), len(names)
    quotas = [divmod(rest * weight, total) for weight in weights]
    shares = [floor + whole for whole, _ in quotas]
    left = limit - sum(shares)
    by_remainder = sorted(range(len(names)), key=lambda i: (-quotas[i][1], names[i]))
    for i in by_remainder[:left]:
        shares[i] += 1
    return dict(zip(names, shares, strict=True))


@dataclass
class RegionShares:
    """This replica's view of partitioned limits: the shares table (filled by the rebalancer) and the demand
    counted since the last publication. Everything here is in-process: the hot path never waits on a store.

    `table` maps a bucket key to (the limit its shares were computed for, the shares by region).
    """

    region: str
    regions: tuple[str, ...]
    min_share: float = 0.0
    table: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    # bucket key -> [configured limit, units asked since the last publication]
    demand: dict[str, list[int]] = field(default_factory=dict)

    def limit(self, key: str, limit: int, cost: int) -> int:
        """This region's share of bucket `key` (configured limit `limit`), counting `cost` units of demand
        asked of it; the rate limiter's one hook into partitioning."""
        seen = self.demand.get(key)
        if seen is None:
            self.demand[key] = [limit, cost]
        else:
            seen[0] = limit
            seen[1] += cost
        known = self.table.get(key)
        if known is not None and known[0] == limit and self.region in known[1]:
            return known[1][self.region]
        return apportion(limit, self.regions, {}, self.min_share)[self.region]

    def take_demand(self) -> dict[str, tuple[int, int]]:
        """The demand counted since the last call, by bucket key: (limit, units); the counters restart."""
        taken, self.demand = self.demand, {}
        return {key: (limit, units) for key, (limit, units) in taken.items()}


def empty_share(scope: str, region: str, retry_s: float) -> GatewayError:
    """The 429 when this region's share of a limit is zero units (a limit smaller than the number of
    regions, all of it given to busier regions); the client may retry after the next rebalance."""
    return GatewayError(
        429,
        f"Rate limit reached on {scope}: region '{region}' has no share of this limit right now (it is "
        "partitioned across regions by demand). Please try again later.",
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        headers={"retry-after": str(max(1, math.ceil(retry_s)))},
    )


def partition_regions(config: GatewayConfig) -> tuple[str, ...]:
    """The regions sharing every partitioned limit: `state.regions`, or else every region a route is in
    (the same for every replica of one config file, wherever it runs)."""
    if config.state.regions:
        return tuple(sorted(set(config.state.regions)))
    return tuple(sorted({route.region for model in config.models for route in model.routes if route.region}))


def partition_problems(config: GatewayConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Config problems of `state.partitioned_features`, each with the key path it is about."""
    state = config.state
    for i, feature in enumerate(state.partitioned_features):
        if feature in state.global_features:
            yield (
                ("state", "partitioned_features", i),
                f"'{feature}' is also in state.global_features: a feature is either global or partitioned",
            )
    if not state.partitioned_features:
        return
    if not state.global_redis_url:
        yield (
            ("state", "global_redis_url"),
            "required with state.partitioned_features: regions publish their demand and read their shares "
            "there",
        )
    regions = partition_regions(config)
    if config.server.region is None:
        yield (
            ("server", "region"),
            "required with state.partitioned_features (or GATEWAY_REGION): the region whose share this "
            "replica enforces",
        )
    elif config.server.region not in regions:
        where = "does not list" if state.regions else "is unset and no route is in"
        yield (
            ("state", "regions"),
            f"{where} this replica's region '{config.server.region}' (server.region): list every region "
            "sharing the limits",
        )
    if len(set(state.regions)) != len(state.regions):
        yield (("state", "regions"), "lists a region twice")
