"""Cooldowns published across regions: a route one region takes out is taken out in every region that has it.

Each region keeps its routes' health in its own store (a route's health is judged best from nearby, and the
hot path never waits on another region). With `state.global_redis_url` and `server.region` set, a replica
also publishes every route it opens (a tripped circuit, a failed probe, an upstream's retry-after) on one
pub/sub channel of the global store, and listens on it: a replica of **another** region that has the same
route (`provider/model`) writes the published state into its regional store, so its requests stop trying
a dead remote route without discovering it themselves. Replicas of the publishing region skip the message:
they already share its store.

An adopted state never shortens a local one: it is written only when the route is closed locally or
opens later there. Adopting does not publish again (no echo between regions). Closing is not published:
each region probes the route itself once the cooldown ends.

Delivery is at most once, from a bounded outbox (a slow or unreachable global store never slows a
request): an event published while the store was unreachable, or while a replica was not listening, is
lost, and that region discovers the route's failure itself, as without events. On a Redis Cluster the
channel is a sharded one (gateway/stores/pubsub.py), when redis-py's asyncio cluster client has pub/sub;
with an older redis-py events are off (logged once at start).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.features.cooldown import RouteHealth
from gateway.stores import redis_url
from gateway.stores.pubsub import Channel, cluster_pubsub_supported

log = logging.getLogger("gateway.cooldown_events")

CHANNEL = "gateway:cooldown-events"
OUTBOX_SIZE = 256

Adopt = Callable[[str, RouteHealth], Awaitable[None]]


class CooldownEvents:
    """This replica's side of the cooldown channel: publish opened routes, hand other regions' to `adopt`.

    Tasks start on first use in the running event loop (:meth:`publish`, :meth:`attach`).
    """

    def __init__(
        self, url: str, region: str, *, timeout: float = 5.0, channel: str = CHANNEL, sharded: bool = False
    ) -> None:
        self.region = region
        self.channel = channel
        self.sharded = sharded
        self.origin = uuid.uuid4().hex
        self.adopted = 0  # other regions' events applied here
        self._adopt: Adopt | None = None
        self._channel = Channel(url, channel, timeout=timeout, sharded=sharded, outbox_size=OUTBOX_SIZE)
        # Set once the listener has subscribed (tests wait for it; events before that are not received).
        self.listening = self._channel.listening

    @property
    def dropped(self) -> int:
        """Events not published: outbox full or the store unreachable (the other regions then discover the
        route's failure themselves)."""
        return self._channel.dropped

    def publish(self, route: str, health: RouteHealth) -> None:
        """Queue `route`'s new open state for every other region; never blocks."""
        message = {"origin": self.origin, "region": self.region, "route": route, "health": health.to_json()}
        self._channel.publish(json.dumps(message))

    def attach(self, adopt: Adopt) -> None:
        """Hand other regions' events to `adopt` from now on (the running router's; a reload replaces it)
        and start listening if not yet."""
        self._adopt = adopt
        self._channel.listen(self._received)

    async def _received(self, data: Any) -> None:
        await self.received(data)

    async def received(self, data: Any) -> bool:
        """Apply one message from another region; False when skipped (own region, malformed, no router)."""
        try:
            message = json.loads(data)
            origin, region, route = message["origin"], message["region"], message["route"]
            health = RouteHealth.from_json(message["health"])
        except (TypeError, ValueError, KeyError):
            return False
        if origin == self.origin or region == self.region or not isinstance(route, str):
            return False
        if health.open_until is None or self._adopt is None:
            return False
        await self._adopt(route, health)
        self.adopted += 1
        return True

    async def close(self) -> None:
        """Stop both tasks and close the connection."""
        await self._channel.close()


def cooldown_events(global_url: str | None, region: str | None, timeout: float) -> CooldownEvents | None:
    """The cooldown channel for a replica of `region` sharing `global_url`; None without either. On a Redis
    Cluster the channel is a sharded one, when the installed redis-py's asyncio cluster client has pub/sub
    (older ones, which ``redis>=5.0`` allows, have none: events are then off)."""
    if not global_url or not region:
        return None
    target = redis_url.parse_redis_url(global_url)
    if target.topology == "cluster":
        if cluster_pubsub_supported():
            return CooldownEvents(global_url, region, timeout=timeout, channel=f"{CHANNEL}:0", sharded=True)
        log.warning(
            "cooldown events across regions are off: the global store is a Redis Cluster and this redis-py's "
            "asyncio cluster client has no pub/sub"
        )
        return None
    # Pub/sub channels ignore the database number: naming it keeps gateways on other databases apart.
    return CooldownEvents(global_url, region, timeout=timeout, channel=f"{CHANNEL}:{target.db}")
