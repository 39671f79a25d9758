"""Acceptance: the GraphQL API (``POST /graphql``), black box over HTTP with a real GraphQL client (``gql``).

Each test uses its own keys (``graphql-*`` in gateway.yaml) and unique prompts, so it also holds against a
live gateway that has served other traffic.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport
from gql.transport.websockets import WebsocketsTransport
from redis_server import RedisServer
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config

TENANT = "sk-acceptance-graphql-tenant"  # models: [mock-echo], rpm 600, a $100 total budget
OTHER = "sk-acceptance-graphql-other"
SLUG = "graphql-api"


def run(gw: Any, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    transport = HTTPXTransport(url=f"{gw.url}/graphql", headers={"Authorization": f"Bearer {credential}"})
    with Client(transport=transport) as session:
        result: dict[str, Any] = session.execute(GraphQLRequest(query, variable_values=variables or None))
    return result


def refused(gw: Any, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    with pytest.raises(TransportQueryError) as caught:
        run(gw, credential, query, **variables)
    assert caught.value.errors
    error: dict[str, Any] = caught.value.errors[0]
    return error


def master(gw: Any) -> str:
    return gw.admin_headers()["Authorization"].removeprefix("Bearer ")


def chat(gw: Any, credential: str) -> None:
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": f"graphql {uuid.uuid4()}"}]}
    response = gw.client.post("/v1/chat/completions", json=body, headers=gw.headers(credential))
    assert response.status_code == 200, response.text


@pytest.mark.feature(SLUG, step=1)
def test_graphql_is_served_when_enabled_and_listed_as_a_feature(gateway: Any) -> None:
    features = run(gateway, TENANT, "{ features { slug enabled } }")["features"]
    assert {"slug": SLUG, "enabled": True} in features
    anonymous = gateway.client.post("/graphql", json={"query": "{ models { name } }"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"


@pytest.mark.feature(SLUG, step=2)
def test_models_me_and_usage_answer_what_the_rest_api_answers(gateway: Any) -> None:
    assert run(gateway, TENANT, "{ models { name } }")["models"] == [{"name": "mock-echo"}]
    query = "{ me { name models rpm budget { limitUsd spentUsd } } usage { totals { requests costUsd } } }"
    before = run(gateway, TENANT, query)
    chat(gateway, TENANT)
    after = run(gateway, TENANT, query)
    assert after["me"]["name"] == "graphql-tenant" and after["me"]["models"] == ["mock-echo"]
    assert after["me"]["rpm"] == 600 and after["me"]["budget"]["limitUsd"] == "100"
    assert after["usage"]["totals"]["requests"] == before["usage"]["totals"]["requests"] + 1
    rest = gateway.client.get(
        "/admin/v1/usage", params={"key": "graphql-tenant"}, headers=gateway.admin_headers()
    ).json()
    assert after["usage"]["totals"]["requests"] == rest["totals"]["requests"]
    assert after["usage"]["totals"]["costUsd"] == rest["totals"]["cost_usd"]
    routes = run(gateway, TENANT, "{ routes { model routes { route state } } }")["routes"]
    assert [r["model"] for r in routes] == ["mock-echo"]


@pytest.mark.feature(SLUG, step=3)
def test_a_deep_or_expensive_query_is_refused_with_a_graphql_error(gateway: Any) -> None:
    # max_depth 3 in gateway.yaml: usage > edges > node > key is depth 3; through `me` it is 4, refused.
    assert "usage" in run(gateway, TENANT, "{ usage { edges { node { key } } } }")
    error = refused(gateway, TENANT, "{ me { usage { edges { node { key } } } } }")
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert "features.graphql.max_depth" in error["message"]
    assert run(gateway, TENANT, "{ me { usage { totals { requests } } } }")["me"]["usage"]["totals"]
    error = refused(gateway, TENANT, "{ usage(first: 200) { edges { node { key model day } } } }")
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert "features.graphql.max_cost" in error["message"]


@pytest.mark.feature(SLUG, step=3)
def test_graphiql_loads_every_asset_from_the_gateway_under_a_strict_csp(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts a gateway of its own with graphiql on; the acceptance gateway keeps it off")
    data = yaml.safe_load(Path(__file__).with_name("gateway.yaml").read_text())
    data["features"]["graphql"]["graphiql"] = True
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with run_server(create_app(load_config(path))) as base:
        page = httpx.get(f"{base}/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200
        csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
        assert (
            csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        )
        sources = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert len(sources) >= 4
        for source in sources:
            asset = httpx.get(f"{base}{source}")
            assert asset.status_code == 200, source
            assert "max-age=" in asset.headers["cache-control"]
        assert "graphiql" in " ".join(sources) and "react-dom" in " ".join(sources)


@pytest.mark.feature(SLUG, step=4)
def test_a_virtual_key_cannot_read_another_keys_usage(gateway: Any) -> None:
    chat(gateway, OTHER)
    query = "query ($key: String) { usage(key: $key, groupBy: [KEY]) { key edges { node { key } } } }"
    own = run(gateway, TENANT, query)["usage"]
    assert own["key"] == "graphql-tenant"
    assert {e["node"]["key"] for e in own["edges"]} <= {"graphql-tenant"}
    error = refused(gateway, TENANT, query, key="graphql-other")
    assert error["extensions"]["code"] == "FORBIDDEN"
    # Its budgets are its own too; the admin-only views need an admin credential.
    assert [b["name"] for b in run(gateway, TENANT, "{ budgets { name } }")["budgets"]] == ["graphql-tenant"]
    assert refused(gateway, TENANT, 'mutation { revokeKey(id: "key_x") { id } }')["extensions"]["code"] == (
        "FORBIDDEN"
    )
    everyone = run(gateway, master(gateway), query)["usage"]
    assert "graphql-other" in {e["node"]["key"] for e in everyone["edges"]}


@pytest.mark.feature(SLUG, step=5)
def test_usage_groups_and_keys_page_with_opaque_cursors(gateway: Any) -> None:
    chat(gateway, TENANT)
    chat(gateway, OTHER)
    query = """query ($after: String) {
      usage(groupBy: [KEY], first: 1, after: $after) { totalCount edges { node { key } }
        pageInfo { hasNextPage endCursor } }
    }"""
    keys: list[str] = []
    after = None
    for _ in range(1000):
        page = run(gateway, master(gateway), query, after=after)["usage"]
        keys += [e["node"]["key"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(keys) == page["totalCount"] == len(set(keys))
    assert {"graphql-tenant", "graphql-other"} <= set(keys)
    # Keys page the same way, each with its budget (read in one batch per page).
    query = """query ($after: String) {
      keys(first: 20, after: $after) { nodes { name budget { limitUsd } } pageInfo { hasNextPage endCursor } }
    }"""
    budgets: dict[str, Any] = {}
    after = None
    for _ in range(1000):
        listing = run(gateway, master(gateway), query, after=after)["keys"]
        budgets.update({n["name"]: n["budget"] for n in listing["nodes"]})
        if not listing["pageInfo"]["hasNextPage"]:
            break
        after = listing["pageInfo"]["endCursor"]
    assert budgets["graphql-tenant"] == {"limitUsd": "100"} and budgets["graphql-other"] is None


@pytest.mark.feature(SLUG, step=5)
def test_rate_limit_status_is_read_without_spending_and_matches_the_rest_api(gateway: Any) -> None:
    # A key of its own with 2 requests per minute: one refills every 30 s, so what it spent stays spent
    # while the test reads it.
    made = gateway.client.post(
        "/admin/v1/keys",
        json={"name": f"graphql-limited-{uuid.uuid4().hex[:8]}", "models": ["mock-echo"], "rpm": 2},
        headers=gateway.admin_headers(),
    )
    assert made.status_code == 201, made.text
    key_id, secret = made.json()["id"], made.json()["secret"]
    limits = "rateLimits { scope kind limit used remaining resetMs }"
    chat(gateway, secret)
    for _ in range(3):  # reading is free: none of these takes the second request of the minute
        mine = run(gateway, secret, f"{{ me {{ {limits} }} {limits} }}")
    [requests] = [r for r in mine["rateLimits"] if r["kind"] == "requests"]
    assert requests["scope"] == "key" and requests["limit"] == 2
    assert requests["used"] == 1 and requests["remaining"] == 1 and requests["resetMs"] > 0
    assert [r["kind"] for r in mine["me"]["rateLimits"]] == ["requests"]
    chat(gateway, secret)
    over = gateway.client.post(
        "/v1/chat/completions",
        json={"model": "mock-echo", "messages": [{"role": "user", "content": "third"}]},
        headers=gateway.headers(secret),
    )
    assert over.status_code == 429
    rest = gateway.client.get(f"/admin/v1/keys/{key_id}/rate-limit", headers=gateway.admin_headers())
    assert rest.status_code == 200
    [row] = rest.json()["limits"]
    assert (row["kind"], row["limit"], row["used"], row["remaining"]) == ("requests", 2, 2, 0)
    # An admin reads it by id, or over a page of keys; the tenant may not read another key's.
    by_admin = run(gateway, master(gateway), "query ($k: ID) { rateLimits(key: $k) { used } }", k=key_id)
    assert by_admin["rateLimits"] == [{"used": 2}]
    error = refused(gateway, TENANT, "query ($k: ID) { rateLimits(key: $k) { used } }", k=key_id)
    assert error["extensions"]["code"] == "FORBIDDEN"
    query = """query ($after: String) {
      keys(first: 20, after: $after) {
        nodes { id rateLimits { kind used } } pageInfo { hasNextPage endCursor }
      }
    }"""
    found: list[Any] = []
    after = None
    for _ in range(1000):
        listing = run(gateway, master(gateway), query, after=after)["keys"]
        found += [n["rateLimits"] for n in listing["nodes"] if n["id"] == key_id]
        if not listing["pageInfo"]["hasNextPage"]:
            break
        after = listing["pageInfo"]["endCursor"]
    assert found == [[{"kind": "requests", "used": 2}]]
    revoked = gateway.client.post(f"/admin/v1/keys/{key_id}/revoke", headers=gateway.admin_headers())
    assert revoked.status_code == 200


@pytest.mark.feature(SLUG, step=6)
def test_a_created_key_is_visible_to_the_rest_admin_api(gateway: Any) -> None:
    name = f"graphql-made-{uuid.uuid4().hex[:8]}"
    created = run(
        gateway,
        master(gateway),
        "mutation ($input: KeyCreateInput!) { createKey(input: $input) { id name secret models } }",
        input={"name": name, "models": ["mock-echo"]},
    )["createKey"]
    rest = gateway.client.get(f"/admin/v1/keys/{created['id']}", headers=gateway.admin_headers())
    assert rest.status_code == 200 and rest.json()["name"] == name and rest.json()["models"] == ["mock-echo"]
    chat(gateway, created["secret"])  # the new key works on the client API at once
    run(gateway, master(gateway), "mutation ($id: ID!) { revokeKey(id: $id) { revoked } }", id=created["id"])
    assert gateway.client.get(f"/admin/v1/keys/{created['id']}", headers=gateway.admin_headers()).json()[
        "revoked"
    ]
    refused_call = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "mock-echo", "messages": [{"role": "user", "content": "revoked"}]},
        headers=gateway.headers(created["secret"]),
    )
    assert refused_call.status_code == 401
    error = refused(gateway, TENANT, 'mutation { createKey(input: {name: "x"}) { id } }')
    assert error["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.feature(SLUG, step=7)
@pytest.mark.anyio
async def test_a_subscription_receives_a_requests_usage_when_it_finishes(gateway: Any) -> None:
    ws_url = gateway.url.replace("http://", "ws://").replace("https://", "wss://") + "/graphql"
    transport = WebsocketsTransport(
        url=ws_url,
        headers={"Authorization": f"Bearer {TENANT}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    query = GraphQLRequest("subscription { usage { requestId key model costUsd } }")
    sent: list[str] = []
    async with Client(transport=transport) as session, httpx.AsyncClient(base_url=gateway.url) as http:
        events = session.subscribe(query)
        waiting = asyncio.ensure_future(anext(events))
        # Another key's request first each round: the tenant's subscription must skip it.
        for _ in range(100):
            for credential in (OTHER, TENANT):
                body = {
                    "model": "mock-echo",
                    "messages": [{"role": "user", "content": f"live {uuid.uuid4()}"}],
                }
                answer = await http.post(
                    "/v1/chat/completions", json=body, headers=gateway.headers(credential)
                )
                assert answer.status_code == 200, answer.text
                if credential == TENANT:
                    sent.append(answer.headers["x-request-id"])
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            if done:
                break
        event = (await asyncio.wait_for(waiting, 30))["usage"]
        await events.aclose()
    assert event["key"] == "graphql-tenant" and event["model"] == "mock-echo"
    assert event["requestId"] in sent


@pytest.mark.feature(SLUG, step=6)
def test_a_persisted_query_is_sent_once_then_run_by_its_hash(gateway: Any) -> None:
    # Apollo's automatic persisted queries, as an APQ client speaks them (features.graphql.persisted_queries).
    query = f"{{ me {{ name models }} }} # {uuid.uuid4()}"
    digest = hashlib.sha256(query.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}

    def post(body: dict[str, Any], credential: str = TENANT) -> dict[str, Any]:
        response = gateway.client.post("/graphql", json=body, headers=gateway.headers(credential))
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    unknown = post({"extensions": extensions})
    assert unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    assert unknown["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    me = {"me": {"name": "graphql-tenant", "models": ["mock-echo"]}}
    assert post({"query": query, "extensions": extensions})["data"] == me
    assert post({"extensions": extensions})["data"] == me
    # The stored text runs with the caller's own rights; a hash that is not the query's is refused.
    assert post({"extensions": extensions}, OTHER)["data"]["me"]["name"] == "graphql-other"
    wrong = post({"query": "{ models { name } }", "extensions": extensions})
    assert wrong["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


READER = "sk-acceptance-admin-reader"  # keys:read and audit:read only


def ask(gw: Any, credential: str, model: str, content: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return gw.client.post("/v1/chat/completions", json=body, headers=gw.headers(credential))


@pytest.mark.feature(SLUG, step=6)
def test_key_update_rotation_team_budget_reset_and_cache_purge_as_the_rest_api_sees_them(
    gateway: Any,
) -> None:
    admin, suffix = master(gateway), uuid.uuid4().hex[:8]
    team = f"graphql-team-{suffix}"
    made = gateway.client.post(
        "/admin/v1/teams", json={"name": team, "budget": {"limit_usd": 50}}, headers=gateway.admin_headers()
    )
    assert made.status_code == 201, made.text
    created = run(
        gateway,
        admin,
        "mutation ($input: KeyCreateInput!) { createKey(input: $input) { id secret } }",
        input={"name": f"graphql-ops-{suffix}", "models": ["budget-priced"], "team": team},
    )["createKey"]
    key_url = f"/admin/v1/keys/{created['id']}"
    # updateKey: the REST API sees the change, and the client API applies it.
    update = (
        "mutation ($id: ID!, $input: KeyUpdateInput!) { updateKey(id: $id, input: $input) { rpm models } }"
    )
    assert (
        refused(gateway, READER, update, id=created["id"], input={"rpm": 5})["extensions"]["code"]
        == "FORBIDDEN"
    )
    changed = run(
        gateway,
        admin,
        update,
        id=created["id"],
        input={"rpm": 500, "models": ["budget-priced", "mock-cached"]},
    )
    assert changed["updateKey"] == {"rpm": 500, "models": ["budget-priced", "mock-cached"]}
    assert gateway.client.get(key_url, headers=gateway.admin_headers()).json()["rpm"] == 500
    # purgeCache by this key: its cached answer misses afterwards.
    prompt = f"graphql purge {uuid.uuid4()}"
    assert ask(gateway, created["secret"], "mock-cached", prompt).headers["x-gateway-cache"] == "MISS"
    assert ask(gateway, created["secret"], "mock-cached", prompt).headers["x-gateway-cache"] == "HIT"
    purge = "mutation ($input: CachePurgeInput!) { purgeCache(input: $input) { keyId } }"
    assert (
        refused(gateway, READER, purge, input={"keyId": created["id"]})["extensions"]["code"] == "FORBIDDEN"
    )
    assert run(gateway, admin, purge, input={"keyId": created["id"]})["purgeCache"] == {
        "keyId": created["id"]
    }
    assert ask(gateway, created["secret"], "mock-cached", prompt).headers["x-gateway-cache"] == "MISS"
    # resetTeamBudget: the team's spend the REST API reports is zero afterwards.
    assert ask(gateway, created["secret"], "budget-priced", prompt).status_code == 200
    team_budget = f"/admin/v1/teams/{team}/budget"
    assert float(gateway.client.get(team_budget, headers=gateway.admin_headers()).json()["spent_usd"]) > 0
    reset = "mutation ($team: String!) { resetTeamBudget(team: $team) { spentUsd } }"
    assert refused(gateway, READER, reset, team=team)["extensions"]["code"] == "FORBIDDEN"
    assert run(gateway, admin, reset, team=team)["resetTeamBudget"] == {"spentUsd": "0"}
    assert gateway.client.get(team_budget, headers=gateway.admin_headers()).json()["spent_usd"] == "0"
    # rotateKey without a grace period: the old secret stops, the new one works.
    rotate = "mutation ($id: ID!) { rotateKey(id: $id, gracePeriodS: 0) { secret } }"
    assert refused(gateway, READER, rotate, id=created["id"])["extensions"]["code"] == "FORBIDDEN"
    secret = run(gateway, admin, rotate, id=created["id"])["rotateKey"]["secret"]
    assert ask(gateway, created["secret"], "budget-priced", "old").status_code == 401
    assert ask(gateway, secret, "budget-priced", "new").status_code == 200
    actions: set[tuple[str, str]] = set()
    cursor = None  # the audit log is oldest first: read it all
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = gateway.client.get("/admin/v1/audit", params=params, headers=gateway.admin_headers()).json()
        actions |= {(e["action"], str(e["target"])) for e in page["data"]}
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert {
        ("key.update", created["id"]),
        ("key.rotate", created["id"]),
        ("team.budget.reset", team),
    } <= actions


@pytest.fixture(scope="module")
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two gateways (the acceptance config) sharing one Redis: their base URLs."""
    if request.config.getoption("gateway_url"):
        pytest.skip("starts two replicas of its own on one Redis; a live gateway's store is its own")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    data = yaml.safe_load(Path(__file__).with_name("gateway.yaml").read_text())
    with RedisServer() as redis:
        data["state"] = {"redis_url": redis.url}
        path = tmp_path_factory.mktemp("graphql-replicas") / "gateway.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with (
            run_server(create_app(load_config(path)), ws="auto") as a,
            run_server(create_app(load_config(path)), ws="auto") as b,
        ):
            yield [a, b]


@pytest.mark.feature(SLUG, step=7)
@pytest.mark.anyio
async def test_a_usage_subscription_on_one_replica_receives_a_request_made_on_another(
    replicas: list[str],
) -> None:
    listener, sender = replicas
    transport = WebsocketsTransport(
        url=listener.replace("http://", "ws://") + "/graphql",
        headers={"Authorization": f"Bearer {TENANT}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    query = GraphQLRequest("subscription { usage { requestId key model } }")
    sent: list[str] = []
    async with Client(transport=transport) as session, httpx.AsyncClient(base_url=sender) as http:
        events = session.subscribe(query)
        waiting = asyncio.ensure_future(anext(events))
        # Sending again until an event arrives is how the test knows the subscription is live.
        for _ in range(100):
            body = {"model": "mock-echo", "messages": [{"role": "user", "content": f"across {uuid.uuid4()}"}]}
            answer = await http.post(
                "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TENANT}"}
            )
            assert answer.status_code == 200, answer.text
            sent.append(answer.headers["x-request-id"])
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            if done:
                break
        event = (await asyncio.wait_for(waiting, 30))["usage"]
        await events.aclose()
    assert event["key"] == "graphql-tenant" and event["requestId"] in sent
