"""``/graphql`` through a real GraphQL client (gql over httpx) against a gateway served by uvicorn on
loopback: authentication, a virtual key's narrowed view, the limits, the mutation as the REST API sees it,
errors naming the argument, and the exported SDL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testing import chat, run_server
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport
from gql.transport.websockets import WebsocketsTransport

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.graphql.schema import SDL_FILE, sdl

MASTER = "sk-graphql-test-master"
ALICE = "sk-graphql-test-alice"
BOB = "sk-graphql-test-bob"
USAGE_READER = "sk-graphql-test-usage-reader"
KEY_WRITER = "sk-graphql-test-key-writer"
CONFIG = f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}, models: [echo], rpm: 100, budget: {{limit_usd: 5, period: total}}}}
    - {{name: bob, key: {BOB}}}
admin:
  failed_auth_limit: 1000
  keys:
    - {{name: usage-reader, key: {USAGE_READER}, scopes: ["usage:read"]}}
    - {{name: key-writer, key: {KEY_WRITER}, scopes: ["keys:read", "keys:write"]}}
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 1, output_per_1m: 1}}}}
  - {{name: other, routes: [{{provider: mock}}]}}
features:
  graphql: {{enabled: true, max_depth: 3, max_cost: 300}}
usage: {{database: ":memory:"}}
"""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_server(create_app(parse_config(CONFIG, "graphql.yaml"))) as base:
        yield base


def client(url: str, key: str) -> Client:
    transport = HTTPXTransport(url=f"{url}/graphql", headers={"Authorization": f"Bearer {key}"})
    return Client(transport=transport)


def run(url: str, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    with client(url, credential) as session:
        result: dict[str, Any] = session.execute(GraphQLRequest(query, variable_values=variables or None))
    return result


def refused(url: str, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    """The first GraphQL error of a query expected to fail."""
    with pytest.raises(TransportQueryError) as caught:
        run(url, credential, query, **variables)
    assert caught.value.errors
    error: dict[str, Any] = caught.value.errors[0]
    return error


def spend(url: str, key: str, content: str) -> None:
    response = httpx.post(
        f"{url}/v1/chat/completions", json=chat(content), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text


USAGE = """query ($key: String) {
  usage(groupBy: [KEY], key: $key) { key totals { requests } edges { node { key requests } } }
}"""


def test_a_virtual_key_sees_its_own_usage_and_cannot_read_another_keys(url: str) -> None:
    spend(url, ALICE, "from alice")
    spend(url, BOB, "from bob")
    spend(url, BOB, "from bob again")
    mine = run(url, ALICE, USAGE)["usage"]
    assert mine["key"] == "alice"
    assert [edge["node"]["key"] for edge in mine["edges"]] == ["alice"]
    assert mine["totals"]["requests"] >= 1
    error = refused(url, ALICE, USAGE, key="bob")
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "own usage" in error["message"]
    # An admin key with usage:read sees both, and reads them back the same as the REST API.
    every = run(url, USAGE_READER, USAGE)["usage"]
    by_key = {e["node"]["key"]: e["node"]["requests"] for e in every["edges"]}
    rest = httpx.get(
        f"{url}/admin/v1/usage", params={"group_by": "key"}, headers={"Authorization": f"Bearer {MASTER}"}
    ).json()
    assert by_key == {g["key"]: g["requests"] for g in rest["groups"]}
    assert by_key["bob"] >= 2


def test_usage_pages_with_opaque_cursors(url: str) -> None:
    for word in ("one", "two"):
        spend(url, ALICE, f"page {word}")
    spend(url, BOB, "page bob")
    query = """query ($after: String) {
      usage(groupBy: [KEY], first: 1, after: $after) {
        totalCount edges { cursor node { key } } pageInfo { hasNextPage endCursor }
      }
    }"""
    seen: list[str] = []
    after = None
    while True:
        page = run(url, MASTER, query, after=after)["usage"]
        assert len(page["edges"]) <= 1
        seen += [e["node"]["key"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == ["alice", "bob"] and page["totalCount"] == 2
    error = refused(url, MASTER, query, after="not-a-cursor")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["param"] in ("after", "cursor")


def test_models_and_me_for_a_limited_key(url: str) -> None:
    data = run(url, ALICE, "{ models { name } me { name models rpm budget { limitUsd scope } } }")
    assert data["models"] == [{"name": "echo"}]
    assert data["me"] == {
        "name": "alice",
        "models": ["echo"],
        "rpm": 100,
        "budget": {"limitUsd": "5", "scope": "key"},
    }
    assert [m["name"] for m in run(url, BOB, "{ models { name } }")["models"]] == ["echo", "other"]
    # A virtual key sees its own models' routes only, and no admin-only budget list.
    routes = run(url, ALICE, "{ routes { model routes { route state } } }")["routes"]
    assert [r["model"] for r in routes] == ["echo"]
    assert [b["name"] for b in run(url, ALICE, "{ budgets { name } }")["budgets"]] == ["alice"]


def test_admin_scopes_apply_as_on_the_rest_api(url: str) -> None:
    assert refused(url, USAGE_READER, "{ budgets { name } }")["extensions"]["code"] == "FORBIDDEN"
    assert refused(url, USAGE_READER, "{ me { name } }")["extensions"]["code"] == "FORBIDDEN"
    mutation = 'mutation { createKey(input: {name: "nope"}) { id } }'
    error = refused(url, USAGE_READER, mutation)
    assert error["extensions"]["code"] == "FORBIDDEN" and "keys:write" in error["message"]
    assert refused(url, ALICE, mutation)["extensions"]["code"] == "FORBIDDEN"


def test_no_key_or_an_unknown_key_is_401_before_any_query_runs(url: str) -> None:
    body = {"query": "{ models { name } }"}
    for headers in ({}, {"Authorization": "Bearer sk-nobody-at-all"}):
        response = httpx.post(f"{url}/graphql", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_a_deep_query_is_refused_before_it_runs() -> None:
    # The schema's deepest path is usage > edges > node > field (depth 3): a limit of 2 refuses it.
    config = parse_config(CONFIG.replace("max_depth: 3", "max_depth: 2"), "graphql.yaml")
    with run_server(create_app(config)) as base:
        assert run(base, ALICE, "{ me { budget { name } } }")["me"]["budget"]["name"] == "alice"
        error = refused(base, ALICE, "{ usage { edges { node { key } } } }")
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert "features.graphql.max_depth" in error["message"]


def test_an_expensive_query_is_refused_before_it_runs(url: str) -> None:
    query = "query ($n: Int!) { usage(first: $n) { totalCount } }"
    assert run(url, ALICE, query, n=5)["usage"]["totalCount"] >= 0
    error = refused(url, ALICE, "{ a: usage(first: 200) { totalCount key timezone } b: models { name } }")
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert "features.graphql.max_cost" in error["message"]
    aliases = "{ " + " ".join(f"m{i}: models {{ name }}" for i in range(20)) + " }"
    assert refused(url, ALICE, aliases)["extensions"]["code"] == "TOO_MANY_ALIASES"
    long = "{ models { " + "name " * 2000 + "} }"
    error = refused(url, ALICE, long)
    assert error["extensions"]["code"] == "QUERY_TOO_LONG" and "max_tokens" in error["message"]


def test_introspection_is_off_unless_configured(url: str) -> None:
    error = refused(url, ALICE, "{ __schema { queryType { name } } }")
    assert error["extensions"]["code"] == "INTROSPECTION_DISABLED"


def test_batches_are_bounded(url: str) -> None:
    headers = {"Authorization": f"Bearer {ALICE}"}
    two = [{"query": "{ models { name } }"}] * 2
    answers = httpx.post(f"{url}/graphql", json=two, headers=headers)
    assert answers.status_code == 200 and len(answers.json()) == 2
    many = httpx.post(f"{url}/graphql", json=[{"query": "{ models { name } }"}] * 11, headers=headers)
    assert many.status_code == 400


def test_a_created_key_is_visible_to_the_rest_api_and_works_until_revoked(url: str) -> None:
    created = run(
        url,
        KEY_WRITER,
        """mutation ($input: KeyCreateInput!) { createKey(input: $input) { id name models secret } }""",
        input={"name": "made-by-graphql", "models": ["echo"], "budget": {"limitUsd": 2, "period": "daily"}},
    )["createKey"]
    assert created["models"] == ["echo"] and created["secret"]
    master = {"Authorization": f"Bearer {MASTER}"}
    rest = httpx.get(f"{url}/admin/v1/keys/{created['id']}", headers=master).json()
    assert rest["name"] == "made-by-graphql" and float(rest["budget"]["limit_usd"]) == 2
    assert "secret" not in rest
    audit = httpx.get(f"{url}/admin/v1/audit", headers=master).json()["data"]
    assert any(e["action"] == "key.create" and e["actor"]["name"] == "key-writer" for e in audit)
    # The new key is a virtual key at once, on GraphQL as on the client API.
    assert run(url, created["secret"], "{ me { name models } }")["me"] == {
        "name": "made-by-graphql",
        "models": ["echo"],
    }
    revoked = run(url, KEY_WRITER, "mutation ($id: ID!) { revokeKey(id: $id) { revoked } }", id=created["id"])
    assert revoked["revokeKey"]["revoked"] is True
    assert httpx.get(f"{url}/admin/v1/keys/{created['id']}", headers=master).json()["revoked"] is True


def test_bad_mutation_input_is_an_error_naming_the_field(url: str) -> None:
    mutation = "mutation ($input: KeyCreateInput!) { createKey(input: $input) { id } }"
    error = refused(url, KEY_WRITER, mutation, input={"name": "x", "rpm": 0})
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["param"] == "rpm"
    error = refused(url, KEY_WRITER, mutation, input={"name": "x", "models": ["no-such-model"]})
    assert error["extensions"]["status"] == 400 and "no-such-model" in error["message"]
    error = refused(url, ALICE, '{ usage(from: "yesterday") { totalCount } }')
    assert error["extensions"]["param"] == "from"


def test_the_route_is_absent_unless_enabled() -> None:
    config = parse_config(CONFIG.replace("enabled: true, ", ""), "graphql.yaml")
    with run_server(create_app(config)) as base:
        response = httpx.post(f"{base}/graphql", json={"query": "{ models { name } }"})
    assert response.status_code == 404


def test_unknown_graphql_settings_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("max_depth: 3", "max_depht: 3"), "graphql.yaml")
    assert "features.graphql.max_depht" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("max_depth: 3", "max_depth: 0"), "graphql.yaml")
    assert "features.graphql.max_depth" in str(caught.value)


def test_the_exported_sdl_matches_the_code() -> None:
    assert SDL_FILE.read_text() == sdl(), "regenerate: python3 -m gateway.graphql.schema > " + str(SDL_FILE)


def test_the_docs_show_the_exported_sdl() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "gateway" / "graphql.md").read_text()
    assert "```graphql\n" + SDL_FILE.read_text() + "```" in page


def test_a_budget_reset_is_visible_to_the_rest_api_and_reload_needs_its_scope(url: str) -> None:
    master = {"Authorization": f"Bearer {MASTER}"}
    spend(url, ALICE, "before the reset")
    keys = httpx.get(f"{url}/admin/v1/keys", headers=master).json()["data"]
    alice = next(k["id"] for k in keys if k["name"] == "alice")
    assert float(httpx.get(f"{url}/admin/v1/keys/{alice}/budget", headers=master).json()["spent_usd"]) > 0
    mutation = "mutation ($id: ID!) { resetKeyBudget(id: $id) { name spentUsd limitUsd } }"
    error = refused(url, USAGE_READER, mutation, id=alice)
    assert error["extensions"]["code"] == "FORBIDDEN" and "budgets:write" in error["message"]
    reset = run(url, MASTER, mutation, id=alice)["resetKeyBudget"]
    assert reset == {"name": "alice", "spentUsd": "0", "limitUsd": "5"}
    assert httpx.get(f"{url}/admin/v1/keys/{alice}/budget", headers=master).json()["spent_usd"] == "0"
    assert refused(url, MASTER, mutation, id="key_nope")["extensions"]["code"] == "NOT_FOUND"
    # Started from a config object, not a file: nothing to reload, said as the REST API says it.
    outcome = run(url, MASTER, "mutation { reloadConfig { ok status } }")["reloadConfig"]
    assert outcome == {"ok": False, "status": "no_source"}
    assert refused(url, KEY_WRITER, "mutation { reloadConfig { ok } }")["extensions"]["code"] == "FORBIDDEN"


def test_an_unexpected_failure_is_masked_and_logged_by_type_only(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.graphql.data import GraphQLData

    def broken(self: GraphQLData) -> list[str]:
        raise RuntimeError(f"leaked {MASTER}")

    monkeypatch.setattr(GraphQLData, "models", broken)
    error = refused(url, ALICE, "{ models { name } }")
    assert error["message"] == "Internal error." and error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert MASTER not in caplog.text and "Traceback" not in caplog.text
    assert "RuntimeError" in caplog.text


def test_features_lists_graphql_enabled(url: str) -> None:
    features = run(url, ALICE, "{ features { slug enabled } }")["features"]
    assert {"slug": "graphql-api", "enabled": True} in features


SUBSCRIBE = "subscription { usage { requestId key model costUsd promptTokens } }"


async def first_event(base: str, credential: str, senders: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Subscribe as ``credential``; send a chat as each of ``senders`` (in order) until an event arrives.

    Sending again until something arrives is how the test knows the subscription is live, without timing.
    """
    ws_url = base.replace("http://", "ws://") + "/graphql"
    transport = WebsocketsTransport(
        url=ws_url,
        headers={"Authorization": f"Bearer {credential}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    sent: list[str] = []
    async with Client(transport=transport) as session, httpx.AsyncClient(base_url=base, timeout=30) as http:
        events = session.subscribe(GraphQLRequest(SUBSCRIBE))
        waiting = asyncio.ensure_future(anext(events))
        for _ in range(100):
            for sender in senders:
                answer = await http.post(
                    "/v1/chat/completions", json=chat("live"), headers={"Authorization": f"Bearer {sender}"}
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
async def test_a_subscription_receives_each_finished_requests_usage_of_its_own_key_only() -> None:
    with run_server(create_app(parse_config(CONFIG, "graphql.yaml")), ws="auto") as base:
        # Bob's request goes first each round: were the feed not narrowed, alice would see bob's first.
        event, sent = await first_event(base, ALICE, [BOB, ALICE])
        assert event["key"] == "alice" and event["model"] == "echo"
        assert event["requestId"] in sent and event["promptTokens"] > 0
        everyone, sent = await first_event(base, USAGE_READER, [BOB])
        assert everyone["key"] == "bob" and everyone["requestId"] in sent
        # A key without usage:read gets an error, not a feed.
        with pytest.raises(TransportQueryError) as caught:
            await first_event(base, KEY_WRITER, [BOB])
        assert caught.value.errors and caught.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
        # No key: the handshake itself is refused.
        ws_url = base.replace("http://", "ws://") + "/graphql"
        with pytest.raises(Exception) as refused_handshake:
            async with Client(transport=WebsocketsTransport(url=ws_url)) as session:
                await anext(session.subscribe(GraphQLRequest(SUBSCRIBE)))
        cause = refused_handshake.value.__cause__ or refused_handshake.value
        assert "HTTP 401" in str(cause), repr(cause)  # the gateway's 401 envelope, before the upgrade


FLAKY = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: alice, key: {ALICE}, models: [flaky]}}]
providers:
  - {{name: mock, type: mock}}
  - {{name: down, type: mock, options: {{fail_rate: 1.0, fail_status: 502}}}}
models:
  - {{name: flaky, routes: [{{provider: down, model: dead}}]}}
  - {{name: echo, routes: [{{provider: mock}}]}}
features:
  routing:
    max_attempts: 1
    cooldown: {{min_requests: 2, window_seconds: 30, seconds: 60, max_seconds: 60}}
  graphql: {{enabled: true}}
usage: {{database: ":memory:"}}
"""


@pytest.mark.anyio
async def test_a_route_health_subscription_sees_a_route_go_into_cooldown() -> None:
    with run_server(create_app(parse_config(FLAKY, "flaky.yaml")), ws="auto") as base:
        transport = WebsocketsTransport(
            url=base.replace("http://", "ws://") + "/graphql",
            headers={"Authorization": f"Bearer {ALICE}"},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        query = GraphQLRequest("subscription { routes { model routes { route state coolingForS } } }")
        async with Client(transport=transport) as session, httpx.AsyncClient(base_url=base) as http:
            events = session.subscribe(query)
            first = (await asyncio.wait_for(anext(events), 30))["routes"]
            # A virtual key sees its own model only, healthy to begin with.
            assert first == [{"model": "flaky", "routes": [{"route": "down/dead", "state": "closed",
                                                            "coolingForS": None}]}]  # fmt: skip
            for _ in range(3):
                answer = await http.post(
                    "/v1/chat/completions", json=chat(model="flaky"), headers=auth_of(ALICE)
                )
                assert answer.status_code >= 500
            changed = (await asyncio.wait_for(anext(events), 30))["routes"]
            await events.aclose()
        route = changed[0]["routes"][0]
        assert route["state"] == "open" and route["coolingForS"] > 0


def auth_of(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_queries_over_get_are_refused_and_graphiql_is_opt_in(url: str) -> None:
    headers = {"Authorization": f"Bearer {MASTER}", "accept": "text/html"}
    assert httpx.get(f"{url}/graphql", headers=headers).status_code == 404  # graphiql: false
    assert httpx.get(f"{url}/graphql").status_code == 401
    config = parse_config(
        CONFIG.replace("enabled: true, ", "enabled: true, graphiql: true, "), "graphql.yaml"
    )
    with run_server(create_app(config)) as base:
        # The page itself, to a browser without a key; a query over GET is still refused, with or without one.
        page = httpx.get(f"{base}/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        for who in ({}, {"Authorization": f"Bearer {MASTER}"}):
            query = httpx.get(f"{base}/graphql", params={"query": "{ models { name } }"}, headers=who)
            assert query.status_code >= 400 and "echo" not in query.text, query.text
        assert httpx.post(f"{base}/graphql", json={"query": "{ models { name } }"}).status_code == 401


def test_keys_page_with_cursors_and_their_budgets_are_read_in_one_batch(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.features.budgets import BudgetStage

    create = "mutation ($input: KeyCreateInput!) { createKey(input: $input) { id } }"
    for n in (1, 2):
        budget = {"limitUsd": n, "period": "daily"}
        run(url, MASTER, create, input={"name": f"batched-{n}", "models": ["echo"], "budget": budget})
    calls: list[int] = []
    status = BudgetStage.status

    async def counted(self: BudgetStage, rules: Any) -> Any:
        calls.append(len(rules))
        return await status(self, rules)

    monkeypatch.setattr(BudgetStage, "status", counted)
    query = """query ($after: String) {
      keys(first: 20, after: $after) { nodes { name budget { limitUsd } } pageInfo { hasNextPage endCursor } }
    }"""
    nodes = run(url, MASTER, query)["keys"]["nodes"]
    budgets = {n["name"]: n["budget"] and n["budget"]["limitUsd"] for n in nodes}
    assert budgets["alice"] == "5" and budgets["bob"] is None
    assert budgets["batched-1"] == "1" and budgets["batched-2"] == "2"
    assert calls == [sum(1 for b in budgets.values() if b is not None)]  # one read for the whole page
    # Pages of one: every key once, config-file keys first, as GET /admin/v1/keys lists them.
    names: list[str] = []
    after = None
    small = query.replace("first: 20", "first: 1").replace("budget { limitUsd } ", "")
    while True:
        page = run(url, MASTER, small, after=after)["keys"]
        names += [n["name"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert names[:2] == ["alice", "bob"] and set(budgets) == set(names)
    # keys:read without budgets:read: the keys, and an error for the budget field.
    error = refused(url, KEY_WRITER, "{ keys { nodes { name budget { limitUsd } } } }")
    assert error["extensions"]["code"] == "FORBIDDEN" and "budgets:read" in error["message"]
    assert refused(url, ALICE, "{ keys { nodes { name } } }")["extensions"]["code"] == "FORBIDDEN"
