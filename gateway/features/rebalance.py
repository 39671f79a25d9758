"""The background half of partitioned rate limits: publish demand, rebalance shares, read them back.

Every `state.rebalance_interval_s` each replica (:class:`Rebalancer`), off the request path:

1. **publishes** the demand its requests asked of each partitioned limit since the last round (admitted and
   refused alike) into one hash of the global store, `gw:{rlp}:demand`, field `<region> <limit> <bucket>`
   (HINCRBY, so the replicas of a region add up);
2. **claims the rebalance** for this interval: `SET gw:{rlp}:lock NX PX` with a TTL just under the
   interval, so one replica of all regions computes each round;
3. the claimant **takes the demand** (one script: read the hash and delete it, so no publication is lost
   or counted twice), smooths it with the earlier rounds' (:func:`next_entries`), splits every limit in
   use over `state.regions` in proportion to it (`gateway.features.partitions.apportion`, summing to the
   limit exactly) and replaces `gw:{rlp}:shares` (one JSON value per bucket). A limit nobody asked for in
   :data:`IDLE_ROUNDS` rounds drops out and is split equally again;
4. **reads the shares** back into this replica's in-process table, which the rate limiter consults.

**When the global store is unreachable** a round fails quietly (logged once per outage): the replica keeps
the shares it last read, so every region goes on enforcing its last share, and the demand of that round is
not counted. Shares move again once the store is back.

The keys share the hash tag `{rlp}`, so on Redis Cluster each command stays on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.features.partitions import RegionShares, apportion, empty_share
from gateway.stores import redis_url
from gateway.stores.base import store_key

log = logging.getLogger("gateway.partitions")

DEMAND = store_key("rlp", "demand", together=True)
SHARES = store_key("rlp", "shares", together=True)
LOCK = store_key("rlp", "lock", together=True)
_OUTAGE = (RedisError, OSError, TimeoutError, ConnectionError)
# Read the demand hash and clear it in one step: a replica publishing meanwhile lands in the next round.
_TAKE = "local d = redis.call('HGETALL', KEYS[1]) redis.call('DEL', KEYS[1]) return d"
# Replace the shares hash in one step, so a replica never reads half of a round.
_REPLACE = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""


# Rounds a limit keeps its shares without any demand before it goes back to the equal split (and its entry is
# dropped, so the table holds only limits in use).
IDLE_ROUNDS = 12


@dataclass(frozen=True)
class Entry:
    """One limit's state in the global shares hash: its shares and the smoothed demand they come from."""

    limit: int
    shares: dict[str, int]
    demand: dict[str, float]
    idle: int = 0

    def to_json(self) -> str:
        """The hash value (sorted keys: equal entries, equal bytes)."""
        data = {"limit": self.limit, "shares": self.shares, "demand": self.demand, "idle": self.idle}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Entry | None:
        """The entry, or None when unreadable (that limit is then split equally)."""
        try:
            data = json.loads(text)
            return cls(
                int(data["limit"]),
                {str(k): int(v) for k, v in data["shares"].items()},
                {str(k): float(v) for k, v in data.get("demand", {}).items()},
                int(data.get("idle", 0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def next_entries(
    fields: dict[str, int], previous: dict[str, Entry], regions: tuple[str, ...], min_share: float
) -> dict[str, Entry]:
    """Every limit's new entry from one round's demand hash (`<region> <limit> <bucket>` -> units) and the
    last round's entries.

    Demand is smoothed over rounds (half the last average plus half this round's), so a round that missed
    a replica's publication (they are not synchronised) does not swing the shares; a limit without demand
    keeps its shares for :data:`IDLE_ROUNDS` rounds, then drops out (split equally again). Demand from a
    region outside `regions` is ignored (a replica with another config); when replicas reported different
    limits for one bucket (a reload in progress), the largest is split.
    """
    rounds: dict[str, tuple[int, dict[str, int]]] = {}
    for name, units in fields.items():
        region, limit_text, bucket = [*name.split(" ", 2), "", ""][:3]
        if not bucket or not limit_text.isdigit() or region not in regions:
            continue
        limit, demand = rounds.get(bucket, (0, {}))
        demand[region] = demand.get(region, 0) + max(0, units)
        rounds[bucket] = (max(limit, int(limit_text)), demand)
    out: dict[str, Entry] = {}
    for bucket in set(rounds) | set(previous):
        before = previous.get(bucket)
        limit, demand = rounds.get(bucket, (before.limit if before else 0, {}))
        if limit <= 0:
            continue
        old = before.demand if before is not None and before.limit == limit else {}
        average = {r: round((old.get(r, 0.0) + demand.get(r, 0)) / 2, 3) for r in regions}
        idle = 0 if demand else (before.idle + 1 if before is not None else IDLE_ROUNDS)
        if idle >= IDLE_ROUNDS:
            continue
        if not demand and before is not None:
            out[bucket] = Entry(limit, before.shares, average, idle)  # nothing new to weigh
            continue
        weights = {r: round(value * 1000) for r, value in average.items()}
        out[bucket] = Entry(limit, apportion(limit, regions, weights, min_share), average, idle)
    return out


class Rebalancer:
    """This replica's partitioned limits: the shares table, its demand, and the loop keeping them current.

    The rate limiter calls :meth:`limit` per limit of a request (in-process only); :meth:`start` (the
    stage's start hook) reads the shares once and starts the loop; :meth:`close` stops it.
    """

    def __init__(self, shares: RegionShares, url: str, *, interval: float, timeout: float = 1.0) -> None:
        self.shares = shares
        self.interval = interval
        self.url = url
        self.timeout = timeout
        self.owner = uuid.uuid4().hex
        self.healthy = True
        self.rounds = 0  # rebalances this replica computed (for tests and diagnostics)
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None

    def limit(self, key: str, limit: int, cost: int) -> int:
        """This region's share of bucket `key` (see `RegionShares.limit`)."""
        return self.shares.limit(key, limit, cost)

    def empty(self, scope: str) -> GatewayError:
        """The 429 for a limit of which this region holds no unit until the next rebalance."""
        return empty_share(scope, self.shares.region, self.interval)

    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis_url.connect(self.url, timeout=self.timeout)
        return self._client

    async def start(self) -> None:
        """Read the current shares (at most one timeout) and start the loop; idempotent."""
        if self._task is not None and not self._task.done():
            return
        await self._guarded(self.refresh)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._guarded(self.round)
            except Exception as exc:  # a bad entry must not end rebalancing: the next round starts afresh
                log.error("partitioned rate limits: a rebalance round failed: %s", type(exc).__name__)

    async def round(self) -> None:
        """One round: publish this replica's demand, rebalance if it holds this interval's lock, read the
        shares. Raises the store's errors (the loop logs them)."""
        await self.publish()
        if await self.claim():
            await self.rebalance()
        await self.refresh()

    async def publish(self) -> None:
        """Add the demand counted since the last round to the global demand hash."""
        demand = self.shares.take_demand()
        if not demand:
            return
        pipe = self._redis().pipeline(transaction=False)
        for bucket, (limit, units) in demand.items():
            pipe.hincrby(DEMAND, f"{self.shares.region} {limit} {bucket}", units)
        await pipe.execute()

    async def claim(self) -> bool:
        """True when this replica computes this interval's shares (the lock expires before the next)."""
        ttl_ms = max(1, math.floor(self.interval * 900))
        return bool(await self._redis().set(LOCK, self.owner, nx=True, px=ttl_ms))

    async def rebalance(self) -> None:
        """Take the round's demand and write the new shares of every limit asked of (replacing the last)."""
        raw = await self._redis().eval(_TAKE, 1, DEMAND)
        fields = {_text(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)}
        previous = await self._entries()
        entries = next_entries(fields, previous, self.shares.regions, self.shares.min_share)
        args: list[str] = []
        for bucket, entry in entries.items():
            args += [bucket, entry.to_json()]
        await self._redis().eval(_REPLACE, 1, SHARES, *args)
        self.rounds += 1

    async def _entries(self) -> dict[str, Entry]:
        raw = await self._redis().hgetall(SHARES)
        entries = {_text(name): Entry.from_json(value) for name, value in raw.items()}
        # A malformed entry counts as absent: that limit is split equally.
        return {name: entry for name, entry in entries.items() if entry is not None}

    async def refresh(self) -> None:
        """Replace this replica's shares table with the global one (a limit absent there is split equally)."""
        entries = await self._entries()
        self.shares.table = {name: (entry.limit, entry.shares) for name, entry in entries.items()}

    async def _guarded(self, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except _OUTAGE as exc:
            if self.healthy:
                log.error(
                    "partitioned rate limits: the global store %s is unreachable (%s); each region keeps "
                    "its last shares until it is back",
                    redis_url.redacted(self.url),
                    type(exc).__name__,
                )
            self.healthy = False
            return
        if not self.healthy:
            log.warning("partitioned rate limits: the global store is reachable again")
        self.healthy = True

    async def close(self) -> None:
        """Stop the loop and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await redis_url.close(client)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
