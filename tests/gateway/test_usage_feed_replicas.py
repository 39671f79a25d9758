"""The live usage feed shared by replicas: two gateways on one real redis-server, each served by uvicorn on
loopback; a GraphQL ``usage`` subscription on one receives the requests the other finishes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio
from gateway_testing import chat, run_server
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from gateway.app import create_app
from gateway.config import parse_config
from gateway.usage_feed import RedisRelay, UsageFeed
from gateway.usage_record import UsageRecord

MASTER = "sk-feed-replicas-master"
ALICE = "sk-feed-replicas-alice"
BOB = "sk-feed-replicas-bob"
READER = "sk-feed-replicas-usage-reader"
SUBSCRIBE = "subscription { usage { requestId key model } }"


def config_text(redis_url: str, graphql: bool = True) -> str:
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}}}
    - {{name: bob, key: {BOB}}}
admin:
  keys: [{{name: usage-reader, key: {READER}, scopes: ["usage:read"]}}]
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock}}]}}]
features:
  graphql: {{enabled: {str(graphql).lower()}}}
state: {{redis_url: '{redis_url}'}}
usage: {{database: ":memory:"}}
"""


async def first_event(
    listener: str, sender: str, credential: str, key: str
) -> tuple[dict[str, Any], list[str]]:
    """Subscribe on ``listener`` as ``credential``; send chats as ``key`` to ``sender`` until an event
    arrives (sending again until then is how the test knows the subscription is live, without timing)."""
    transport = WebsocketsTransport(
        url=listener.replace("http://", "ws://") + "/graphql",
        headers={"Authorization": f"Bearer {credential}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    sent: list[str] = []
    async with Client(transport=transport) as session, httpx.AsyncClient(base_url=sender, timeout=30) as http:
        events = session.subscribe(GraphQLRequest(SUBSCRIBE))
        waiting = asyncio.ensure_future(anext(events))
        for _ in range(100):
            answer = await http.post(
                "/v1/chat/completions", json=chat("across"), headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 200, answer.text
            sent.append(answer.headers["x-request-id"])
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            if done:
                break
        result: dict[str, Any] = await asyncio.wait_for(waiting, 30)
        await events.aclose()
    return result["usage"], sent


@pytest.mark.anyio
async def test_a_subscription_on_one_replica_receives_a_request_finished_on_another(redis_url: str) -> None:
    config = parse_config(config_text(redis_url), "replica.yaml")
    with run_server(create_app(config), ws="auto") as a, run_server(create_app(config), ws="auto") as b:
        event, sent = await first_event(b, a, READER, BOB)
        assert event["key"] == "bob" and event["model"] == "echo" and event["requestId"] in sent
        # A virtual key's subscription on A sees its own request made on B.
        event, sent = await first_event(a, b, ALICE, ALICE)
        assert event["key"] == "alice" and event["requestId"] in sent


def record(request_id: str) -> UsageRecord:
    return UsageRecord(
        ts=1.0, day="2026-12-04", request_id=request_id, key_name="bob", team=None, model="echo",
        route="mock/echo", endpoint="chat", stream=False, prompt_tokens=1, completion_tokens=2,
        usage_source="reported", cost_nanos=3, latency_ms=4.0, status=200, cache_hit=False,
    )  # fmt: skip


@pytest.mark.anyio
async def test_a_replicas_own_records_reach_its_subscribers_once(redis_url: str) -> None:
    """Delivered directly, and skipped when they come back from Redis: after A's record has gone through
    Redis (a plain subscriber saw it), the next thing A's subscriber gets is B's record, not A's again."""
    channel = "test:usage-feed:once"
    feed = UsageFeed(relay=RedisRelay(redis_url, channel=channel))
    other = RedisRelay(redis_url, channel=channel)
    observer = redis.asyncio.Redis.from_url(redis_url)
    watch = observer.pubsub(ignore_subscribe_messages=True)
    await watch.subscribe(channel)
    try:
        async with feed.subscribe() as queue:
            # B publishes until A's listener is subscribed (the first of B's records reaches A's queue).
            while queue.empty():
                other.send(record("probe"))
                await asyncio.sleep(0.05)
            while not queue.empty():
                queue.get_nowait()
            feed.publish(record("from-a"))
            assert queue.get_nowait().request_id == "from-a"  # directly, before any Redis round trip
            while True:
                message = await watch.get_message(timeout=5)
                if message is not None and b"from-a" in message["data"]:
                    break
            other.send(record("from-b"))
            assert (await asyncio.wait_for(queue.get(), 30)).request_id == "from-b"
            assert queue.empty()
    finally:
        await watch.aclose()
        await observer.aclose()
        await feed.close()
        await other.close()


def test_the_relay_names_the_database_in_its_channel(redis_url: str) -> None:
    feed: UsageFeed = create_app(
        parse_config(config_text(redis_url), "replica.yaml")
    ).state.gateway.shared.feed
    assert feed.relay is not None and feed.relay.channel == "gateway:usage-feed:0"


def test_no_relay_without_graphql_or_without_redis(redis_url: str) -> None:
    off = create_app(parse_config(config_text(redis_url, graphql=False), "replica.yaml"))
    assert off.state.gateway.shared.feed.relay is None
    local = parse_config(
        config_text(redis_url).replace(f"state: {{redis_url: '{redis_url}'}}\n", ""), "r.yaml"
    )
    assert create_app(local).state.gateway.shared.feed.relay is None


def test_over_redis_cluster_the_relay_uses_a_sharded_channel() -> None:
    from gateway.runtime import usage_relay
    from gateway.stores.pubsub import cluster_pubsub_supported

    relay = usage_relay(parse_config(config_text("redis+cluster://127.0.0.1:7000"), "replica.yaml"))
    if not cluster_pubsub_supported():
        assert relay is None  # an older redis-py: each replica's feed stays its own
        return
    assert relay is not None and relay.sharded and relay.channel == "gateway:usage-feed:0"
    single = usage_relay(parse_config(config_text("redis://127.0.0.1:6379/2"), "replica.yaml"))
    assert single is not None and not single.sharded
    assert usage_relay(parse_config(config_text("redis://127.0.0.1:6379/2", graphql=False), "r.yaml")) is None


@pytest.mark.anyio
async def test_replicas_on_a_redis_cluster_share_the_feed() -> None:
    from redis_topology import RedisClusterTopology

    from gateway.stores.pubsub import cluster_pubsub_supported

    if not cluster_pubsub_supported():
        pytest.skip("this redis-py's asyncio cluster client has no pub/sub")
    with RedisClusterTopology() as cluster:
        config = parse_config(config_text(cluster.url), "replica.yaml")
        with run_server(create_app(config), ws="auto") as a, run_server(create_app(config), ws="auto") as b:
            event, sent = await first_event(b, a, READER, BOB)
            assert event["key"] == "bob" and event["requestId"] in sent
            event, sent = await first_event(a, b, ALICE, ALICE)
            assert event["key"] == "alice" and event["requestId"] in sent
