"""Live usage records of this replica, for subscribers (the GraphQL ``usage`` subscription).

The usage stage publishes each record as it finishes a request (streams: when they end), beside queueing it
for the ledger. Each subscriber has a bounded queue: a subscriber that reads too slowly loses its oldest
records (counted in ``dropped``) rather than slowing a request or growing memory. Publishing with no
subscriber costs one empty-set check. Replicas do not share the feed: a subscriber sees the traffic of the
replica it is connected to (the ledger, not the feed, is the record of everything).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.usage_record import UsageRecord

QUEUE_SIZE = 256


class UsageFeed:
    """Fan-out of finished requests' usage records to any number of subscribers."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[UsageRecord]] = set()
        self.dropped = 0

    def publish(self, record: UsageRecord) -> None:
        """Hand ``record`` to every subscriber; never blocks."""
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
        try:
            yield queue
        finally:
            self._queues.discard(queue)
