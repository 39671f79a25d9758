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
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from redis.exceptions import RedisError

from gateway.stores import redis_url
from gateway.usage_record import UsageRecord

QUEUE_SIZE = 256
# The Redis channel every replica publishes its usage records on.
CHANNEL = "gateway:usage-feed"
# Records waiting to be published; beyond this the oldest are dropped (Redis slower than the traffic).
OUTBOX_SIZE = 1024
# How long a listener waits for a message at most (less than the connection's read timeout, which would
# otherwise count an idle channel as a lost connection), and how long it waits before reconnecting after
# losing Redis.
LISTEN_POLL_S = 1.0
RECONNECT_S = 1.0


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
    """The usage records of every replica on one Redis pub/sub channel.

    Each message carries the publishing replica's ``origin`` (random per process), so a replica skips its
    own records, which it has already delivered. Tasks start on first use, in the running event loop.
    ``sharded`` (Redis Cluster): the channel is a sharded channel (see the module docstring).
    """

    def __init__(
        self, url: str, channel: str = CHANNEL, timeout: float = 5.0, *, sharded: bool = False
    ) -> None:
        self.url = url
        self.channel = channel
        self.timeout = timeout
        self.sharded = sharded
        self.origin = uuid.uuid4().hex
        self.dropped = 0  # records not published: outbox full or Redis unreachable
        self._client: Any = None
        self._outbox: deque[str] = deque(maxlen=OUTBOX_SIZE)
        self._ready: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis_url.connect(self.url, timeout=self.timeout)
        return self._client

    def send(self, record: UsageRecord) -> None:
        """Queue ``record`` for publishing; never blocks (a full outbox drops its oldest record)."""
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append(json.dumps({"origin": self.origin, "record": asdict(record)}))
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
                    client = self._redis()
                    if self.sharded:
                        await client.spublish(self.channel, payload)
                    else:
                        await client.publish(self.channel, payload)
                except (OSError, ConnectionError, TimeoutError, RedisError):
                    self.dropped += 1  # Redis unreachable: other replicas miss it; the ledger has it

    def listen(self, deliver: Callable[[UsageRecord], None]) -> None:
        """Hand other replicas' records to ``deliver`` until :meth:`stop_listening` (idempotent)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen_loop(deliver))

    async def _listen_loop(self, deliver: Callable[[UsageRecord], None]) -> None:
        while True:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                poll = min(LISTEN_POLL_S, self.timeout / 2)
                if self.sharded:
                    await pubsub.ssubscribe(self.channel)
                else:
                    await pubsub.subscribe(self.channel)
                while True:
                    if self.sharded:
                        message = await pubsub.get_sharded_message(
                            ignore_subscribe_messages=True, timeout=poll
                        )
                    else:
                        message = await pubsub.get_message(timeout=poll)
                    if message is not None:
                        self._received(message.get("data"), deliver)
            except (OSError, ConnectionError, TimeoutError, RedisError):
                await asyncio.sleep(RECONNECT_S)  # Redis lost: listen again once it is back
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

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
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop both tasks and close the connection."""
        await self.stop_listening()
        task, self._sender = self._sender, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await redis_url.close(client)
