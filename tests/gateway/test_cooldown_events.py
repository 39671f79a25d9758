"""Cooldown events across regions: what a replica publishes when it opens a route, what it adopts from other
regions, and the channel itself on a real Redis (tests/redis_server.py) standing in for the global store."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis_server import RedisServer

from gateway.config import ModelConfig
from gateway.features.cooldown import CooldownPolicy, CooldownTracker, RouteHealth, state_of
from gateway.features.cooldown_events import CooldownEvents, cooldown_events
from gateway.features.routing import RoutingConfig, RoutingStage
from gateway.stores import MemoryStore
from gateway.stores.pubsub import cluster_pubsub_supported

pytestmark = pytest.mark.anyio
POLICY = CooldownPolicy(min_requests=2, failure_rate=0.5, cooldown_s=10, max_cooldown_s=60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(published: list[tuple[str, RouteHealth]] | None = None) -> CooldownTracker:
    on_open = (lambda route, health: published.append((route, health))) if published is not None else None
    return CooldownTracker(MemoryStore(), POLICY, Clock(), on_open=on_open)


async def test_a_route_this_replica_opens_is_published_once_per_transition() -> None:
    published: list[tuple[str, RouteHealth]] = []
    routes = tracker(published)
    await routes.failure("up/m")
    assert published == []  # one failure in the window: nothing opens
    await routes.failure("up/m")
    assert [(route, health.open_until) for route, health in published] == [("up/m", 1010.0)]
    await routes.failure("up/m", hold_s=30)  # the upstream asks for a pause: opened further, published
    assert [health.open_until for _, health in published] == [1010.0, 1030.0]
    await routes.success("up/m", probe=True)  # closing is not published: each region probes itself
    assert len(published) == 2


async def test_adopting_never_shortens_a_local_cooldown_and_never_publishes_again() -> None:
    published: list[tuple[str, RouteHealth]] = []
    routes = tracker(published)
    remote = RouteHealth(open_until=1020.0, period_s=20.0)
    assert await routes.adopt("up/m", remote)
    health = await routes.health("up/m")
    assert state_of(health, 1000.0) == "open" and health.open_until == 1020.0
    assert not await routes.adopt("up/m", RouteHealth(open_until=1015.0, period_s=15.0))  # ends sooner
    assert not await routes.adopt("up/m", RouteHealth(open_until=999.0, period_s=1.0))  # already over
    assert await routes.adopt("up/m", RouteHealth(open_until=1040.0, period_s=40.0))  # lasts longer
    assert (await routes.health("up/m")).open_until == 1040.0
    assert published == []  # no echo back to the regions it came from


def message(events: CooldownEvents, **fields: object) -> str:
    body = {
        "origin": "another-replica",
        "region": "us-east",
        "route": "up/m",
        "health": RouteHealth(open_until=2e9, period_s=5.0).to_json(),
    }
    return json.dumps({**body, **fields})


async def test_a_replica_adopts_only_other_regions_events_for_routes_it_has() -> None:
    events = CooldownEvents("redis://127.0.0.1:1/0", "eu-west")
    stage = RoutingStage(
        RoutingConfig(),
        {},
        {"m": ModelConfig.model_validate({"name": "m", "routes": [{"provider": "up", "region": "us-east"}]})},
        MemoryStore(),
        events=events,
    )
    events._adopt = stage.adopt
    assert await events.received(message(events))
    assert state_of(await stage.cooldowns.health("up/m"), 1e9) == "open"
    # Another region's route this config does not have: handed over, nothing written.
    assert await events.received(message(events, route="elsewhere/x"))
    assert await stage.cooldowns.health("elsewhere/x") == RouteHealth()
    # Skipped: this replica's own message, its own region's (they share its store), a closed state, junk.
    assert not await events.received(message(events, origin=events.origin, route="a/b"))
    assert not await events.received(message(events, region="eu-west", route="a/b"))
    assert not await events.received(message(events, health=RouteHealth().to_json()))
    assert not await events.received("not json")
    assert not await events.received(json.dumps({"origin": "x"}))


def test_events_need_a_global_store_and_a_region_and_use_a_sharded_channel_on_a_cluster() -> None:
    assert cooldown_events(None, "eu-west", 1.0) is None
    assert cooldown_events("redis://127.0.0.1:1/3", None, 1.0) is None
    events = cooldown_events("redis://127.0.0.1:1/3", "eu-west", 1.0)
    assert events is not None and events.channel == "gateway:cooldown-events:3" and not events.sharded
    on_cluster = cooldown_events("redis+cluster://127.0.0.1:1", "eu-west", 1.0)
    if cluster_pubsub_supported():
        assert on_cluster is not None and on_cluster.sharded
    else:
        assert on_cluster is None  # an older redis-py: no pub/sub on its asyncio cluster client


async def test_an_event_published_in_one_region_is_adopted_in_another_over_redis() -> None:
    with RedisServer() as server:
        await published_and_adopted(
            CooldownEvents(server.url, "eu-west", timeout=2.0),
            CooldownEvents(server.url, "us-east", timeout=2.0),
        )


@pytest.mark.slow
async def test_over_a_redis_cluster_global_store_events_travel_on_a_sharded_channel() -> None:
    from redis_topology import RedisClusterTopology

    if not cluster_pubsub_supported():
        pytest.skip("this redis-py's asyncio cluster client has no pub/sub")
    with RedisClusterTopology() as cluster:
        eu, us = (cooldown_events(cluster.url, region, 2.0) for region in ("eu-west", "us-east"))
        assert eu is not None and us is not None and eu.sharded
        await published_and_adopted(eu, us)


async def published_and_adopted(eu: CooldownEvents, us: CooldownEvents) -> None:
    """eu-west publishes a route it opened; us-east adopts it, eu-west skips its own event."""
    adopted: list[tuple[str, float | None]] = []

    async def adopt(route: str, health: RouteHealth) -> None:
        adopted.append((route, health.open_until))

    try:
        us.attach(adopt)
        eu.attach(adopt)  # eu-west listens too, and skips its own event
        await asyncio.wait_for(us.listening.wait(), 10)
        await asyncio.wait_for(eu.listening.wait(), 10)
        eu.publish("up/m", RouteHealth(open_until=2e9, period_s=5.0))
        for _ in range(200):
            if adopted:
                break
            await asyncio.sleep(0.05)
        assert adopted == [("up/m", 2e9)]
        assert us.adopted == 1 and eu.adopted == 0
    finally:
        await eu.close()
        await us.close()
