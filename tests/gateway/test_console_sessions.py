"""Console sessions in the state store: digest keys, expiry, logout, the admin credential checked at each
use, and two gateway apps sharing a real redis-server sharing their sessions."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from redis_server import RedisServer
from test_console import CONFIG, MASTER, ON, VIEWER, console_config, csrf_of, log_in

from gateway.admin.access import MASTER as MASTER_PRINCIPAL
from gateway.admin.access import AdminPrincipal
from gateway.app import create_app
from gateway.auth import key_id
from gateway.config import GatewayConfig, parse_config
from gateway.console.sessions import Sessions, credential_of, current_principal
from gateway.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


async def test_a_session_is_stored_under_a_digest_of_its_id_and_ends_at_its_ttl_or_logout() -> None:
    store = MemoryStore()
    now = [1000.0]
    valid = [True]
    sessions = Sessions(lambda: store, lambda: 60, lambda p, c: valid[0], clock=lambda: now[0])
    first = await sessions.open(MASTER_PRINCIPAL, "master_x")
    second = await sessions.open(MASTER_PRINCIPAL, "master_x")
    assert first.id != second.id and first.csrf != second.csrf
    keys = list(store._values)
    digest = hashlib.sha256(first.id.encode()).hexdigest()
    assert f"gw:console:session:{digest}" in keys
    assert not any(first.id in key or first.id.encode() in value for key, (value, _) in store._values.items())
    assert await sessions.get(first.id) == first
    assert await sessions.get("not-a-session") is None and await sessions.get(None) is None
    await sessions.close(first.id)
    assert await sessions.get(first.id) is None and await sessions.get(second.id) == second
    valid[0] = False  # the admin credential no longer stands: the session ends and is deleted
    assert await sessions.get(second.id) is None
    valid[0] = True
    assert await sessions.get(second.id) is None
    third = await sessions.open(MASTER_PRINCIPAL, "master_x")
    now[0] += 60
    assert await sessions.get(third.id) is None


def test_a_session_stands_while_its_admin_key_is_configured_with_the_same_scopes() -> None:
    config = console_config()
    [entry] = config.admin.keys
    scopes = frozenset({"usage:read", "keys:read"})
    viewer = AdminPrincipal(id=f"adm_{key_id(entry.key)}", name="viewer", scopes=scopes)
    master = credential_of(config, MASTER_PRINCIPAL)
    assert master is not None and MASTER not in master
    assert current_principal(config, MASTER_PRINCIPAL, master)
    assert current_principal(config, viewer, viewer.id)
    rekeyed = parse_config(
        CONFIG.replace(MASTER, MASTER + "-new").replace(VIEWER, VIEWER + "-new") + ON, "c.yaml"
    )
    assert not current_principal(rekeyed, MASTER_PRINCIPAL, master)
    assert not current_principal(rekeyed, viewer, viewer.id) and credential_of(rekeyed, viewer) is None
    rescoped = parse_config(
        CONFIG.replace("scopes: [usage:read, keys:read]", "scopes: [usage:read]") + ON, "c.yaml"
    )
    assert not current_principal(rescoped, viewer, viewer.id)


@asynccontextmanager
async def app_client(config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


async def test_two_gateways_sharing_redis_share_sessions_and_logout() -> None:
    with RedisServer() as server:
        state = f"state: {{redis_url: '{server.url}'}}\n"
        config = parse_config(CONFIG + ON + state, "console.yaml")
        async with app_client(config) as one, app_client(config) as two:
            assert (await log_in(one, VIEWER)).status_code == 303
            cookie = one.cookies["gateway_console"]
            two.cookies.set("gateway_console", cookie, path="/console")
            page = await two.get("/console/requests")  # the session opened on one, used on two
            assert page.status_code == 200 and "viewer" in page.text
            out = await two.post("/console/logout", data={"csrf": csrf_of(page.text)})
            assert out.status_code == 303 and out.headers["location"] == "/console/login"
            assert (await one.get("/console")).status_code == 303  # logged out on one too
            # A replica whose configuration no longer has the admin key ends that key's sessions.
            assert (await log_in(one, VIEWER)).status_code == 303
            without = parse_config(
                CONFIG.replace("keys: [{name: viewer", "keys: [{name: other").replace(VIEWER, VIEWER + "x")
                + ON
                + state,
                "console.yaml",
            )
            async with app_client(without) as three:
                three.cookies.set("gateway_console", one.cookies["gateway_console"], path="/console")
                assert (await three.get("/console")).status_code == 303
            assert (await one.get("/console")).status_code == 303  # deleted in the shared store


async def test_a_gateway_restarted_on_redis_keeps_its_sessions() -> None:
    with RedisServer() as server:
        config = parse_config(CONFIG + ON + f"state: {{redis_url: '{server.url}'}}\n", "console.yaml")
        async with app_client(config) as before:
            assert (await log_in(before, MASTER)).status_code == 303
            cookie = before.cookies["gateway_console"]
        async with app_client(config) as after:
            after.cookies.set("gateway_console", cookie, path="/console")
            assert (await after.get("/console")).status_code == 200


async def test_without_redis_sessions_have_their_own_memory_bounded_by_max_sessions() -> None:
    config = parse_config(
        CONFIG + "features: {console: {enabled: true, max_sessions: 2}}\nstate: {memory_max_entries: 10}\n",
        "console.yaml",
    )
    app = create_app(config)
    gateway = app.state.gateway
    async with app.router.lifespan_context(app):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
            for _ in range(3)
        ]
        try:
            first, second, third = clients
            assert (await log_in(first)).status_code == 303
            # The shared memory store churns (the response cache's entries): the session is not evicted.
            for index in range(50):
                await gateway.store.set(f"gw:cache:churn:{index}", b"x" * 100, ttl=60)
            assert (await first.get("/console")).status_code == 200
            assert (await log_in(second)).status_code == 303
            assert (await second.get("/console")).status_code == 200
            assert (await log_in(third)).status_code == 303  # a third session: the least recently used goes
            assert (await first.get("/console")).status_code == 303
            assert (await second.get("/console")).status_code == 200
            assert (await third.get("/console")).status_code == 200
        finally:
            for client in clients:
                await client.aclose()
