"""One Redis pub/sub channel that replicas publish to and listen on, off the hot path.

The usage feed shares finished requests' records between replicas (gateway/usage_feed.py) and multi-region
replicas share the routes they take out (gateway/features/cooldown_events.py) the same way: a message is
queued in a bounded outbox that never blocks the request (a full outbox drops its oldest message), a task
publishes the outbox, and another task listens and hands each message's data to a handler, subscribing
again after an outage. Delivery is at most once: what is published while Redis is unreachable, or while a
replica is not listening, is lost, and each caller documents what that means for it.

``sharded`` (Redis Cluster): the channel is a sharded one (SPUBLISH/SSUBSCRIBE), which redis-py's asyncio
cluster client supports from 5.x on; plain pub/sub is not available there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from gateway.stores import redis_url

OUTBOX_SIZE = 256
# How long a listener waits for a message at most (less than the connection's read timeout, which would
# otherwise count an idle channel as a lost connection), and how long it waits before subscribing again
# after losing Redis.
LISTEN_POLL_S = 1.0
RECONNECT_S = 1.0
OUTAGE = (RedisError, OSError, TimeoutError, ConnectionError)

Handler = Callable[[Any], Awaitable[None]]


class Channel:
    """This replica's side of one channel; its tasks start on first use, in the running event loop."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        timeout: float = 5.0,
        sharded: bool = False,
        outbox_size: int = OUTBOX_SIZE,
    ) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        self.sharded = sharded
        self.dropped = 0  # messages not published: the outbox was full or Redis unreachable
        # Set while the listener is subscribed (tests wait for it: messages before that are not received).
        self.listening = asyncio.Event()
        self._client: Any = None
        self._outbox: deque[str] = deque(maxlen=outbox_size)
        self._ready: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis_url.connect(self.url, timeout=self.timeout)
        return self._client

    def publish(self, payload: str) -> None:
        """Queue ``payload`` for every replica listening; never blocks."""
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append(payload)
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
                        await client.spublish(self.name, payload)
                    else:
                        await client.publish(self.name, payload)
                except OUTAGE:
                    self.dropped += 1

    def listen(self, handle: Handler) -> None:
        """Hand every message's data to ``handle`` until :meth:`stop_listening` (idempotent: a listener
        already running keeps its handler)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen_loop(handle))

    async def _listen_loop(self, handle: Handler) -> None:
        while True:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                poll = min(LISTEN_POLL_S, self.timeout / 2)
                if self.sharded:
                    await pubsub.ssubscribe(self.name)
                else:
                    await pubsub.subscribe(self.name)
                self.listening.set()
                while True:
                    if self.sharded:
                        message = await pubsub.get_sharded_message(
                            ignore_subscribe_messages=True, timeout=poll
                        )
                    else:
                        message = await pubsub.get_message(timeout=poll)
                    if message is not None:
                        await handle(message.get("data"))
            except OUTAGE:
                self.listening.clear()
                await asyncio.sleep(RECONNECT_S)  # Redis is gone: subscribe again once it is back
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def stop_listening(self) -> None:
        """Stop listening (nobody on this replica wants the messages now)."""
        await _cancel(self._listener)
        self._listener = None
        self.listening.clear()

    async def close(self) -> None:
        """Stop both tasks and close the connection."""
        await self.stop_listening()
        await _cancel(self._sender)
        self._sender = None
        client, self._client = self._client, None
        if client is not None:
            await redis_url.close(client)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cluster_pubsub_supported() -> bool:
    """Whether redis-py's asyncio cluster client can subscribe to sharded channels (newer releases)."""
    from redis.asyncio.cluster import RedisCluster

    return hasattr(RedisCluster, "pubsub") and hasattr(RedisCluster, "spublish")
