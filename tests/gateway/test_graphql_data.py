"""The GraphQL API's data-access functions alone (no HTTP, no GraphQL): authorization is theirs, so each
caller kind is checked here against a real gateway object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.admin.access import MASTER as MASTER_PRINCIPAL
from gateway.admin.access import AdminPrincipal
from gateway.app import Gateway
from gateway.config import load_config, parse_config
from gateway.errors import GatewayError
from gateway.graphql.access import Caller, authenticate
from gateway.graphql.data import GraphQLData

pytestmark = pytest.mark.anyio

MASTER = "sk-graphql-data-master"
ALICE = "sk-graphql-data-alice"
CONFIG = f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}, models: [echo], team: red, budget: {{limit_usd: 3, period: total}}}}
teams: [{{name: red, budget: {{limit_usd: 10, period: monthly}}}}]
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}]}}
  - {{name: other, routes: [{{provider: mock}}]}}
usage: {{database: ":memory:"}}
"""


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway(parse_config(CONFIG, "data.yaml"))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.close()


async def test_a_virtual_key_is_narrowed_to_its_own_data(gateway: Gateway) -> None:
    caller = await authenticate(gateway, {"authorization": f"Bearer {ALICE}"}, "127.0.0.1")
    assert caller.key is not None and caller.admin is None
    data = GraphQLData(gateway, caller)
    assert data.models() == ["echo"]
    assert list(await data.routes()) == ["echo"]
    assert {(b["scope"], b["name"]) for b in await data.budgets()} == {("key", "alice"), ("team", "red")}
    assert (await data.usage([], None, None, None))["key"] == "alice"
    with pytest.raises(GatewayError) as caught:
        await data.usage([], "bob", None, None)
    assert caught.value.status == 403
    me = await data.me()
    assert me["name"] == "alice" and me["budget"]["limit_usd"] == "3"


async def test_admin_callers_need_the_scope_of_the_matching_rest_route(gateway: Gateway) -> None:
    reader = GraphQLData(gateway, Caller(admin=AdminPrincipal("adm_x", "reader", frozenset({"usage:read"}))))
    assert (await reader.usage([], "alice", None, None))["key"] == "alice"
    for call in (reader.budgets(), reader.routes(), reader.me(), reader.reload_config()):
        with pytest.raises(GatewayError) as caught:
            await call
        assert caught.value.status == 403
    master = GraphQLData(gateway, Caller(admin=MASTER_PRINCIPAL))
    assert master.models() == ["echo", "other"]
    assert {b["name"] for b in await master.budgets()} >= {"alice", "red"}


async def test_unknown_or_missing_keys_are_401(gateway: Gateway) -> None:
    for headers in ({}, {"authorization": "Bearer sk-unknown-key-000"}):
        with pytest.raises(GatewayError) as caught:
            await authenticate(gateway, headers, "127.0.0.1")
        assert caught.value.status == 401
    assert (
        await authenticate(gateway, {"authorization": f"Bearer {MASTER}"}, "::1")
    ).admin == MASTER_PRINCIPAL


async def test_a_reload_changing_features_graphql_is_rejected_as_needing_a_restart(tmp_path: Path) -> None:
    source = tmp_path / "gateway.yaml"
    source.write_text(CONFIG + "features: {graphql: {enabled: true}}\n")
    gw = Gateway(load_config(source), source=source)
    try:
        source.write_text(CONFIG + "features: {graphql: {enabled: true, max_depth: 3}}\n")
        result = await gw.reloader.reload()
        assert result.status == "rejected"
        assert any(p.startswith("features.graphql:") for p in result.problems), result.problems
        assert gw.config.features.graphql.max_depth == 8  # the running config is unchanged
    finally:
        await gw.close()
