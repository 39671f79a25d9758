"""Live usage records of this replica, for subscribers (the GraphQL ``usage`` subscription).

The usage stage publishes each record as it finishes a request (streams: when they end), beside queueing it
for the ledger. Each subscriber has a bounded queue: a subscriber that reads too slowly loses its oldest
records (counted in ``dropped``) rather than slowing a request or growing memory. Publishing with no
subscriber costs one empty-set check.

Replicas share the feed through Redis pub/sub when they share a state store (``state.redis_url``) and serve
GraphQL: each replica publishes its records on one channel (:class:`RedisRelay`, from a bounded outbox, so a
slow or unreachable Redis never slows a request), and listens on it while it has subscribers of its own,
handing other replicas' records to them. A replica's own records reach its subscribers directly, so they
keep flowing when Redis is down. Over Redis Cluster the channel is a sharded one (``SPUBLISH`` and
``SSUBSCRIBE``, Redis 7): it lives on the one node owning its slot, so a message is not broadcast to every
node of the cluster. Pub/sub delivers at most once: a record published while a replica was not
listening, or while Redis was unreachable, is not replayed (the ledger, not the feed, is the record of
everything).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from gateway.stores.pubsub import Channel
from gateway.usage_record import UsageRecord

QUEUE_SIZE = 256
# The Redis channel every replica publishes its usage records on.
CHANNEL = "gateway:usage-feed"
# Records waiting to be published; beyond this the oldest are dropped (Redis slower than the traffic).
OUTBOX_SIZE = 1024


class UsageFeed:
    """Fan-out of finished requests' usage records to any number of subscribers."""

    def __init__(self, queue_size: int = QUEUE_SIZE, relay: RedisRelay | None = None) -> None:
        self.queue_size = queue_size
        self.relay = relay
        self._queues: set[asyncio.Queue[UsageRecord]] = set()
        self.dropped = 0

    def publish(self, record: UsageRecord) -> None:
        """Hand ``record`` to every subscriber of this replica, and to the other replicas through the relay;
        never blocks."""
        self.deliver(record)
        if self.relay is not None:
            self.relay.send(record)

    def deliver(self, record: UsageRecord) -> None:
        """Hand ``record`` to every subscriber of this replica."""
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(record)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[UsageRecord]]:
        """A queue receiving every record published while the block runs."""
        queue: asyncio.Queue[UsageRecord] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        if self.relay is not None:
            self.relay.listen(self.deliver)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
            if self.relay is not None and not self._queues:
                await self.relay.stop_listening()

    async def close(self) -> None:
        """Stop the relay's tasks and close its Redis connection (the gateway is shutting down)."""
        if self.relay is not None:
            await self.relay.close()


class RedisRelay:
    """The usage records of every replica on one Redis pub/sub channel (`gateway.stores.pubsub.Channel`).

    Each message carries the publishing replica's ``origin`` (random per process), so a replica skips its
    own records, which it has already delivered. ``sharded`` (Redis Cluster): the channel is a sharded
    channel (see the module docstring).
    """

    def __init__(
        self, url: str, channel: str = CHANNEL, timeout: float = 5.0, *, sharded: bool = False
    ) -> None:
        self.channel = channel
        self.sharded = sharded
        self.origin = uuid.uuid4().hex
        self._channel = Channel(url, channel, timeout=timeout, sharded=sharded, outbox_size=OUTBOX_SIZE)

    @property
    def dropped(self) -> int:
        """Records not published: outbox full or Redis unreachable (other replicas miss them; the ledger
        has them)."""
        return self._channel.dropped

    def send(self, record: UsageRecord) -> None:
        """Queue ``record`` for publishing; never blocks (a full outbox drops its oldest record)."""
        self._channel.publish(json.dumps({"origin": self.origin, "record": asdict(record)}))

    def listen(self, deliver: Callable[[UsageRecord], None]) -> None:
        """Hand other replicas' records to ``deliver`` until :meth:`stop_listening` (idempotent)."""

        async def handle(data: Any) -> None:
            self._received(data, deliver)

        self._channel.listen(handle)

    def _received(self, data: Any, deliver: Callable[[UsageRecord], None]) -> None:
        """Deliver one message's record unless this replica published it; a malformed one is skipped."""
        try:
            message = json.loads(data)
            if message["origin"] == self.origin:
                return
            record = UsageRecord(**message["record"])
        except (TypeError, ValueError, KeyError):
            return
        deliver(record)

    async def stop_listening(self) -> None:
        """Stop listening (no subscriber left on this replica)."""
        await self._channel.stop_listening()

    async def close(self) -> None:
        """Stop both tasks and close the connection."""
        await self._channel.close()
