"""The state store on Redis as users run it: URL forms, one slot per atomic operation, Cluster, Sentinel.

The topology tests start real servers on loopback (tests/redis_topology.py): two gateway replicas share a
3-master Redis Cluster or a Sentinel-managed primary and replica, and the cache, rate limits and budgets
behave as they do on one server. The failover test SIGKILLs the Sentinel primary with a budget reservation in
flight and checks the documented behaviour: refused (fail_closed) or let through (fail_open) while the
sentinels promote the replica, then working again with the reservation intact.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from redis.crc import key_slot
from redis_server import RedisServer
from redis_topology import RedisClusterTopology, SentinelTopology
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.budget_book import BudgetBook, BudgetSlot
from gateway.config import ConfigError, load_config, parse_config
from gateway.features.ratelimit import Limits, RateLimitConfig, RateLimitStage
from gateway.periods import Period, window_for
from gateway.stores import RedisStore, StoreUnavailable, store_key
from gateway.stores.ops import GCRA
from gateway.stores.redis_url import parse_redis_url, redacted

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (scripts/test installs it)"
)
SHARED_CONFIG = Path(__file__).parents[1] / "acceptance" / "gateway.yaml"
URL = "/v1/chat/completions"
KEY = "sk-acceptance"
BUDGET_KEY = "sk-topology-budget"
NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")


# --- URL forms ---------------------------------------------------------------------------------------------


def test_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    target = parse_redis_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2")
    assert target.topology == "sentinel"
    assert target.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (target.service, target.db, target.password) == ("mymaster", 2, "s3cret")
    assert parse_redis_url("redis+sentinel://h:1/mymaster").db == 0


def test_cluster_url_names_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001")
    assert (target.topology, target.hosts, target.password) == (
        "cluster",
        (("127.0.0.1", 7000), ("127.0.0.1", 7001)),
        "pw",
    )
    assert parse_redis_url("rediss://:pw@cache.example:6380/0").topology == "single"


def test_a_single_server_url_names_its_database() -> None:
    # Pub/sub channels ignore the database, so the gateway names it in theirs: it must be the right one.
    assert parse_redis_url("redis://:pw@127.0.0.1:6379/3").db == 3
    assert parse_redis_url("rediss://cache.example:6380").db == 0
    assert parse_redis_url("unix:///run/redis.sock?db=2").db == 2


def test_redacted_urls_never_show_the_password() -> None:
    assert (
        redacted("redis+sentinel://:s3cret@h1:1,h2:2/mymaster/0") == "redis+sentinel://h1:1,h2:2/mymaster/0"
    )
    assert redacted("redis+cluster://user:s3cret@h1:1,h2:2") == "redis+cluster://h1:1,h2:2"
    assert redacted("rediss://:s3cret@h:6380/1") == "rediss://h:6380/1"


def test_admin_config_dump_hides_the_password_of_a_multi_host_url() -> None:
    from gateway.reload import redact

    dump = redact({"state": {"redis_url": "redis+sentinel://:s3cret@h1:1,h2:2/mymaster/0"}})
    assert dump == {"state": {"redis_url": "redis+sentinel://***@h1:1,h2:2/mymaster/0"}}
    assert redact({"u": "redis+cluster://user:pw@h1:1,h2:2"}) == {"u": "redis+cluster://***@h1:1,h2:2"}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "must start with"),
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/zero", "must be a number"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://127.0.0.1", "expected host:port"),
        ("redis+cluster://", "at least one host"),
    ],
)
def test_a_bad_redis_url_is_a_config_error_naming_the_key(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"state: {{redis_url: '{url}'}}\n")
    assert "state.redis_url" in str(caught.value) and problem in str(caught.value)


# --- one slot per atomic operation --------------------------------------------------------------------------


def test_every_rate_limit_a_request_checks_shares_one_cluster_slot() -> None:
    config = RateLimitConfig.model_validate(
        {"default": {"rpm": 5, "tpm": 100, "max_concurrent": 2}, "models": {"m": {"rpm": 9, "shared": True}}}
    )
    stage = RateLimitStage(config, {"kid": Limits(rpm=3, tpm=50)}, store=None)  # type: ignore[arg-type]

    class Key:
        name, key_id, rpm, tpm = "k", "kid", None, None
        team, team_rpm, team_tpm = "research", 7, None  # a runtime team's shared allowance too

    class Call:
        key, model = Key(), "m"

    buckets, concurrency = stage._buckets(Call())  # type: ignore[arg-type]
    keys = [b.key for b in buckets] + [key for key, _, _ in concurrency]
    assert len(keys) >= 3 and any(":*:" in key for key in keys)  # the key's own and the shared model's
    assert len({key_slot(key.encode()) for key in keys}) == 1, keys


def test_every_budget_window_of_a_reservation_shares_one_cluster_slot() -> None:
    window = window_for(Period.DAILY, NOW, ZoneInfo("UTC"))
    slots = [BudgetSlot("key", "alice", 100, window), BudgetSlot("team", "research", 100, window)]
    keys = [key for slot in slots for key in slot.store_keys]
    assert len({key_slot(key.encode()) for key in keys}) == 1, keys
    # Keys without the tag still spread: the cache is not pinned to one node.
    spread = {key_slot(store_key("cache", str(n)).encode()) for n in range(20)}
    assert len(spread) > 1


# --- real topologies ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two in-process gateways serving the acceptance config, their state in the topology `param` names."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    topology = RedisClusterTopology() if request.param == "cluster" else SentinelTopology()
    data = yaml.safe_load(SHARED_CONFIG.read_text())
    data["auth"]["keys"].append(
        {
            "name": "topology-budget",
            "key": BUDGET_KEY,
            "models": ["budget-priced"],
            "budget": {"limit_usd": 0.02, "period": "total"},
        }
    )
    with topology, ExitStack() as stack:
        data["state"] = {"redis_url": topology.url, "on_error": "fail_closed"}
        path = tmp_path_factory.mktemp(f"topology-{request.param}") / "gateway.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        clients = []
        for _ in range(2):
            url = stack.enter_context(run_server(create_app(load_config(path))))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
        yield clients[0], clients[1]


def chat(model: str, text: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text or f"topology {uuid.uuid4()}"}],
        **extra,
    }


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@needs_redis
def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other(
    replicas: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = replicas
    for _ in range(5):  # several entries, so a cluster spreads them over its nodes
        body = chat("mock-cached")
        first, second = a.post(URL, json=body, headers=auth()), b.post(URL, json=body, headers=auth())
        assert (first.status_code, second.status_code) == (200, 200)
        assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("MISS", "HIT")
        assert second.json()["choices"] == first.json()["choices"]


@needs_redis
def test_a_rate_limit_counts_both_replicas_together(replicas: tuple[httpx.Client, httpx.Client]) -> None:
    statuses = []
    for number in range(8):
        client = replicas[number % 2]
        reply = client.post(URL, json=chat("mock-limited"), headers=auth("sk-acceptance-rl-rpm"))
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            break
    assert statuses == [200, 200, 200, 429], statuses


@needs_redis
def test_a_shared_model_limit_and_a_key_limit_are_checked_in_one_operation(
    replicas: tuple[httpx.Client, httpx.Client],
) -> None:
    # mock-limited-shared has a model-wide limit shared by two keys: the key's and the model's buckets
    # are different owners, so this is the multi-key GCRA call a cluster refuses unless they share a slot.
    reply = replicas[0].post(URL, json=chat("mock-limited-shared"), headers=auth("sk-acceptance-rl-shared-a"))
    assert reply.status_code in (200, 429), reply.text
    assert "x-ratelimit-limit-requests" in reply.headers


@needs_redis
def test_a_budget_used_up_through_one_replica_is_used_up_on_the_other(
    replicas: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = replicas
    admitted = 0
    for _ in range(30):
        reply = a.post(URL, json=chat("budget-priced", max_tokens=20), headers=auth(BUDGET_KEY))
        if reply.status_code != 200:
            break
        admitted += 1
    assert admitted > 0 and reply.status_code == 429, (admitted, reply.text)
    assert reply.json()["error"]["code"] == "budget_exceeded"
    other = b.post(URL, json=chat("budget-priced", max_tokens=20), headers=auth(BUDGET_KEY))
    assert other.status_code == 429 and other.json()["error"]["code"] == "budget_exceeded"


# --- Sentinel failover ---


@pytest.mark.slow
@pytest.mark.anyio
@needs_redis
async def test_sentinel_failover_keeps_the_reservation_and_refuses_only_while_it_fails_over() -> None:
    with SentinelTopology() as topology:
        closed = RedisStore(topology.url, on_error="fail_closed", timeout=0.5)
        opened = RedisStore(topology.url, on_error="fail_open", timeout=0.5)
        book = BudgetBook(closed)
        slot = BudgetSlot(
            "key", f"failover-{uuid.uuid4().hex[:8]}", 1_000, window_for(Period.TOTAL, NOW, ZoneInfo("UTC"))
        )
        limit = store_key("rl", uuid.uuid4().hex, "*", "req", together=True)
        try:
            reservation = await book.reserve([slot], 400, NOW)
            assert reservation.ok
            assert await opened.get(store_key("test", "warm")) is None  # both clients connected
            # Redis replicates asynchronously: a write the primary acknowledged but had not yet sent to the
            # replica is lost with it. The documented guarantee is for replicated writes; wait for that.
            topology.wait_for_replication()
            topology.kill_primary()

            # While the sentinels fail over: fail_closed refuses (a 503 at the edge), fail_open lets through.
            with pytest.raises(StoreUnavailable):
                await book.read([slot])
            allowed = await opened.run(GCRA, [limit], [0, 60_000_000, 1, 1])
            assert allowed[0] == 1

            topology.wait_for_promotion()
            # The promoted replica holds the reservation: settling gives it back and charges the real cost.
            # (The first command after the promotion may still meet the broken connection: bounded retries.)
            assert await _eventually(lambda: book.read([slot])) == [(0, 400)]
            assert await book.settle(reservation, 250, NOW) == [(250, 0)]
            second = await book.reserve([slot], 800, NOW)
            assert not second.ok  # 250 spent + 800 > 1000: the budget still holds after the failover
            assert (await book.reserve([slot], 700, NOW)).ok
        finally:
            await closed.close()
            await opened.close()


@pytest.mark.slow
@pytest.mark.anyio
@needs_redis
async def test_a_cluster_master_failing_over_keeps_the_reservation() -> None:
    with RedisClusterTopology(replicas=1) as topology:
        closed = RedisStore(topology.url, on_error="fail_closed", timeout=0.5)
        book = BudgetBook(closed)
        slot = BudgetSlot(
            "key", f"cluster-{uuid.uuid4().hex[:8]}", 1_000, window_for(Period.TOTAL, NOW, UTC_ZONE)
        )
        try:
            reservation = await book.reserve([slot], 400, NOW)
            assert reservation.ok
            topology.wait_for_replication(slot.store_key)
            dead = topology.kill_master_of(slot.store_key)

            # Until the replica takes the slot over, the store is unreachable for it: fail_closed refuses.
            with pytest.raises(StoreUnavailable):
                await book.read([slot])

            topology.wait_for_failover(slot.store_key, dead)
            # The client finds the new owner of the slot (a refreshed slot map after the lost connection);
            # the reservation is there and settles once.
            read = await _eventually(lambda: book.read([slot]))
            assert read == [(0, 400)]
            assert await book.settle(reservation, 250, NOW) == [(250, 0)]
            assert not (await book.reserve([slot], 800, NOW)).ok
        finally:
            await closed.close()


async def _eventually(step: Any, attempts: int = 20) -> Any:
    """`await step()` until it no longer raises StoreUnavailable (the client finding the new primary)."""
    for _ in range(attempts - 1):
        try:
            return await step()
        except StoreUnavailable:
            await asyncio.sleep(0.25)
    return await step()


# --- a regional store and a global one ---


@pytest.mark.anyio
@needs_redis
async def test_budgets_live_in_the_global_store_and_the_rest_in_the_regions() -> None:
    import redis.asyncio as aioredis

    from gateway.runtime import SharedState

    with RedisServer() as regional, RedisServer() as shared:
        config = parse_config(
            f"state: {{redis_url: '{regional.url}', global_redis_url: '{shared.url}'}}\n"
            "usage: {database: ':memory:'}\n"
        )
        state = SharedState.open(config)
        try:
            assert state.store_for("budgets") is state.global_store
            assert state.store_for("rate_limit") is state.store is state.store_for("cache")
            await state.store_for("budgets").set("gw:probe:budgets", b"1")
            await state.store_for("cache").set("gw:probe:cache", b"1")
            clients = [aioredis.Redis.from_url(url) for url in (regional.url, shared.url)]
            try:
                assert [await c.exists("gw:probe:budgets") for c in clients] == [0, 1]
                assert [await c.exists("gw:probe:cache") for c in clients] == [1, 0]
            finally:
                for client in clients:
                    await client.aclose()
        finally:
            await state.close_stores()
            await state.ledger.close()
        # Each feature may be moved to the global store by name; an unknown one is a config error.
        moved = parse_config(
            f"state: {{global_redis_url: '{shared.url}', global_features: [budgets, rate_limit]}}\n"
        )
        assert moved.state.global_features == ["budgets", "rate_limit"]
        with pytest.raises(ConfigError) as caught:
            parse_config(f"state: {{global_redis_url: '{shared.url}', global_features: [cooldowns]}}\n")
        assert "state.global_features[0]" in str(caught.value)


# --- Sentinel failover under load ---

LOAD_KEY = "sk-topology-load-0123456789"
LOAD_CLIENTS = 6


@pytest.mark.slow
@needs_redis
# redis-py drops its connections to the SIGKILLed primary without closing their transports (the server
# loops' StreamWriters then warn when collected after their loop closed): the sockets were to a dead server
# and the pool has replaced them. The test collects them itself at its end, under these filters.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sentinel_primary_killed_under_load_refuses_only_while_promoting_and_frees_every_slot(
    tmp_path: Path,
) -> None:
    """Two replicas under concurrent load while the Sentinel primary is SIGKILLed: clients see 200 or the
    documented 503 `state_store_unavailable` (fail_closed) and nothing else, both replicas serve again once
    the replica is promoted (no restart), and the concurrency slots come back. Writes the primary
    acknowledged in its last moments may not have reached the replica (Redis replicates asynchronously): a
    slot whose release was lost that way is held until `lease_seconds`, and no longer."""
    import openai
    import redis

    from gateway.auth import key_id

    config = {
        "auth": {"keys": [{"name": "load", "key": LOAD_KEY, "rpm": 100_000, "max_concurrent": 50}]},
        "providers": [{"name": "mock", "type": "mock", "options": {"latency_ms": 30}}],
        "models": [{"name": "echo", "routes": [{"provider": "mock"}]}],
        "features": {"rate_limit": {"lease_seconds": 3}},
        "usage": {"database": ":memory:"},
    }
    slots = store_key("rl", key_id(LOAD_KEY), "*", "conc", together=True)
    with SentinelTopology() as topology, ExitStack() as stack:
        config["state"] = {"redis_url": topology.url, "on_error": "fail_closed", "timeout_seconds": 0.5}
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        urls = [stack.enter_context(run_server(create_app(load_config(path)))) for _ in range(2)]
        answers: list[tuple[int, int, str | None]] = []  # (replica, status, error code)
        held: list[int] = []
        # The promoted replica, read directly: the concurrency slots held now (leases not yet expired).
        primary = stack.enter_context(redis.Redis(host="127.0.0.1", port=topology.replica_port))

        def live_slots() -> int:
            seconds, micros = primary.time()
            return int(primary.zcount(slots, seconds * 1_000_000 + micros, "+inf"))

        async def client_loop(number: int, stop: asyncio.Event) -> None:
            replica = number % 2
            client = openai.AsyncOpenAI(
                base_url=f"{urls[replica]}/v1", api_key=LOAD_KEY, max_retries=0, timeout=30
            )
            try:
                while not stop.is_set():
                    try:
                        await client.chat.completions.create(
                            model="echo", messages=[{"role": "user", "content": f"load {uuid.uuid4()}"}]
                        )
                        answers.append((replica, 200, None))
                    except openai.APIStatusError as exc:
                        body = exc.body if isinstance(exc.body, dict) else {}
                        answers.append((replica, exc.status_code, body.get("code")))
            finally:
                await client.close()

        async def after(count: int) -> None:
            while len(answers) < count:
                await asyncio.sleep(0.02)

        async def scenario() -> int:
            stop = asyncio.Event()
            loops = [asyncio.create_task(client_loop(n, stop)) for n in range(LOAD_CLIENTS)]
            await after(30)
            await asyncio.to_thread(topology.kill_primary)
            await asyncio.to_thread(topology.wait_for_promotion)
            promoted = len(answers)
            # Keep the load on until both replicas have answered 200 again, many times, after the promotion.
            while (
                sum(1 for r, s, _ in answers[promoted:] if s == 200 and r == 0) < 20
                or sum(1 for r, s, _ in answers[promoted:] if s == 200 and r == 1) < 20
            ):
                await asyncio.sleep(0.05)
            # The slots are where this test reads them: requests in flight hold some right now.
            held.extend([await asyncio.to_thread(live_slots) for _ in range(10)])
            stop.set()
            await asyncio.gather(*loops)
            return promoted

        promoted = asyncio.run(scenario())

        refused = [(status, code) for _, status, code in answers if status != 200]
        assert set(refused) <= {(503, "state_store_unavailable")}, refused
        # Once the sentinels promoted the replica, the last answers of both replicas are all 200 again.
        assert [s for _, s, _ in answers[-10:]] == [200] * 10
        assert {r for r, s, _ in answers[promoted:] if s == 200} == {0, 1}

        assert max(held) > 0
        # Every request has ended: at most the ones in flight at the kill can still hold a slot...
        assert live_slots() <= LOAD_CLIENTS
        # ...and those come back when their lease runs out.
        time.sleep(3.5)
        assert live_slots() == 0
    # Collect those dropped connections now, under this test's warning filters, not at some later test's.
    gc.collect()
