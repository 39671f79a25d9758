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
lost, and that region discovers the route's failure itself, as without events. Not on Redis Cluster, whose
redis-py asyncio client has no pub/sub: events are then off (logged once at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from gateway.features.cooldown import RouteHealth
from gateway.stores import redis_url

log = logging.getLogger("gateway.cooldown_events")

CHANNEL = "gateway:cooldown-events"
OUTBOX_SIZE = 256
LISTEN_POLL_S = 1.0
RECONNECT_S = 1.0
_OUTAGE = (RedisError, OSError, TimeoutError, ConnectionError)

Adopt = Callable[[str, RouteHealth], Awaitable[None]]


class CooldownEvents:
    """This replica's side of the cooldown channel: publish opened routes, hand other regions' to `adopt`.

    Tasks start on first use in the running event loop (:meth:`publish`, :meth:`attach`).
    """

    def __init__(self, url: str, region: str, *, timeout: float = 5.0, channel: str = CHANNEL) -> None:
        self.url = url
        self.region = region
        self.timeout = timeout
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.dropped = 0  # events not published: outbox full or the store unreachable
        self.adopted = 0  # other regions' events applied here
        self._adopt: Adopt | None = None
        self._client: Any = None
        self._outbox: deque[str] = deque(maxlen=OUTBOX_SIZE)
        self._ready: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        # Set once the listener has subscribed (tests wait for it; events before that are not received).
        self.listening = asyncio.Event()

    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis_url.connect(self.url, timeout=self.timeout)
        return self._client

    def publish(self, route: str, health: RouteHealth) -> None:
        """Queue `route`'s new open state for every other region; never blocks."""
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        message = {"origin": self.origin, "region": self.region, "route": route, "health": health.to_json()}
        self._outbox.append(json.dumps(message))
        if self._ready is None:
            self._ready = asyncio.Event()
        self._ready.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_loop(self._ready))

    async def _send_loop(self, ready: asyncio.Event) -> None:
        while True:
            await ready.wait()
            ready.clear()
            while self._outbox:
                payload = self._outbox.popleft()
                try:
                    await self._redis().publish(self.channel, payload)
                except _OUTAGE:
                    self.dropped += 1  # the other regions discover the route's failure themselves

    def attach(self, adopt: Adopt) -> None:
        """Hand other regions' events to `adopt` from now on (the running router's; a reload replaces it)
        and start listening if not yet."""
        self._adopt = adopt
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen_loop())

    async def _listen_loop(self) -> None:
        while True:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                while True:
                    message = await pubsub.get_message(timeout=min(LISTEN_POLL_S, self.timeout / 2))
                    if message is not None:
                        await self.received(message.get("data"))
            except _OUTAGE:
                self.listening.clear()
                await asyncio.sleep(RECONNECT_S)  # the global store is gone: listen again once it is back
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

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
        for name in ("_listener", "_sender"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        client, self._client = self._client, None
        if client is not None:
            await redis_url.close(client)


def cooldown_events(global_url: str | None, region: str | None, timeout: float) -> CooldownEvents | None:
    """The cooldown channel for a replica of `region` sharing `global_url`; None without either, or on
    Redis Cluster (no pub/sub in its asyncio client)."""
    if not global_url or not region:
        return None
    target = redis_url.parse_redis_url(global_url)
    if target.topology == "cluster":
        log.warning(
            "cooldown events across regions are off: the global store is a Redis Cluster (no pub/sub)"
        )
        return None
    # Pub/sub channels ignore the database number: naming it keeps gateways on other databases apart.
    return CooldownEvents(global_url, region, timeout=timeout, channel=f"{CHANNEL}:{target.db}")
