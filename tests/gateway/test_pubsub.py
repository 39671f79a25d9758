"""The pub/sub channel shared by the usage feed and the cross-region cooldown events (stores/pubsub.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from gateway.stores.pubsub import Channel

pytestmark = pytest.mark.anyio


async def test_a_message_published_on_one_replica_reaches_the_listener_of_another(redis_url: str) -> None:
    name = f"test:{uuid.uuid4().hex}"
    sender, receiver = Channel(redis_url, name, timeout=2.0), Channel(redis_url, name, timeout=2.0)
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(data: Any) -> None:
        await received.put(data)

    try:
        receiver.listen(handle)
        await asyncio.wait_for(receiver.listening.wait(), 10)
        sender.publish("hello")
        assert await asyncio.wait_for(received.get(), 10) == b"hello"
        await receiver.stop_listening()
        assert not receiver.listening.is_set()
    finally:
        await sender.close()
        await receiver.close()
    assert sender.dropped == 0


async def test_an_unreachable_redis_drops_messages_and_never_blocks_the_publisher() -> None:
    channel = Channel("redis://127.0.0.1:1/0", "test:nowhere", timeout=0.5, outbox_size=2)
    try:
        for n in range(5):
            channel.publish(f"m{n}")  # returns at once: the outbox is bounded
        assert channel.dropped >= 3  # the full outbox dropped its oldest
        for _ in range(100):
            if channel.dropped == 5:
                break
            await asyncio.sleep(0.05)
        assert channel.dropped == 5  # and the two it kept could not be sent
    finally:
        await channel.close()
