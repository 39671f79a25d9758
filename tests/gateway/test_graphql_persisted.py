"""Persisted queries on ``/graphql`` (``features.graphql.persisted_queries``), spoken as an APQ client speaks
them (raw httpx: ``extensions.persistedQuery``), against gateways on loopback: off, automatic (kept in the
shared state store with a TTL, seen by a second replica on the same Redis), and an allowlist file that holds
for WebSocket subscriptions too."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from gateway_testing import run_server
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from gateway.app import create_app
from gateway.config import ConfigError, parse_config

MASTER = "sk-graphql-pq-master"
ALICE = "sk-graphql-pq-alice"
MODELS = "{ models { name } }"
FEATURES = "{ features { slug } }"


def config(graphql: str, extra: str = "") -> str:
    return f"""
auth:
  master_key: {MASTER}
  keys: [{{name: alice, key: {ALICE}, models: [echo]}}]
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}]}}
  - {{name: other, routes: [{{provider: mock}}]}}
features:
  graphql: {{enabled: true, max_depth: 3, {graphql}}}
usage: {{database: ":memory:"}}
{extra}
"""


def sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def post(base: str, body: Any, key: str = ALICE) -> dict[str, Any]:
    response = httpx.post(f"{base}/graphql", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def persisted(digest: str, query: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    if query is not None:
        body["query"] = query
    return body


def code(answer: dict[str, Any]) -> str:
    assert answer.get("errors"), answer
    return str(answer["errors"][0]["extensions"]["code"])


def test_off_tells_an_apq_client_to_send_full_queries() -> None:
    with run_server(create_app(parse_config(config(""), "pq.yaml"))) as base:
        answer = post(base, persisted(sha(MODELS)))
        assert code(answer) == "PERSISTED_QUERY_NOT_SUPPORTED"
        assert "features.graphql.persisted_queries" in answer["errors"][0]["message"]
        assert post(base, {"query": MODELS}) == {"data": {"models": [{"name": "echo"}]}}


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[tuple[str, str]]:
    """Two gateways with automatic persisted queries sharing one Redis (the session's redis-server)."""
    text = config(
        "persisted_queries: automatic, persisted_queries_ttl_s: 600", f"state: {{redis_url: '{redis_url}'}}"
    )
    with (
        run_server(create_app(parse_config(text, "pq.yaml"))) as a,
        run_server(create_app(parse_config(text, "pq.yaml"))) as b,
    ):
        yield a, b


def test_automatic_registers_a_query_once_and_every_replica_runs_it_by_hash(
    replicas: tuple[str, str], redis_url: str
) -> None:
    first, second = replicas
    query = f"{{ models {{ name }} __typename }} # {uuid.uuid4()}"  # a text no other test registered
    digest = sha(query)
    # Unknown hash: exactly what APQ clients expect, so they retry with the query.
    answer = post(first, persisted(digest))
    assert answer["errors"][0]["message"] == "PersistedQueryNotFound"
    assert code(answer) == "PERSISTED_QUERY_NOT_FOUND" and answer.get("data") is None
    assert post(first, persisted(digest, query))["data"]["models"] == [{"name": "echo"}]
    # By hash alone now, on this replica and on the other (the state store is shared).
    for base in (first, second):
        assert post(base, persisted(digest))["data"] == {"models": [{"name": "echo"}], "__typename": "Query"}
    # Kept with the configured TTL in the gateway's store namespace.
    with redis.Redis.from_url(redis_url) as client:
        ttl = client.ttl(f"gw:gqlpq:{digest}")
        assert 0 < ttl <= 600
        assert client.get(f"gw:gqlpq:{digest}") == query.encode()
    # The stored text runs under the caller's own rights: the master key sees every model.
    everything = post(first, persisted(digest), key=MASTER)["data"]["models"]
    assert everything == [{"name": "echo"}, {"name": "other"}]


def test_automatic_checks_the_hash_and_keeps_no_refused_query(replicas: tuple[str, str]) -> None:
    base, _ = replicas
    answer = post(base, persisted(sha(MODELS), FEATURES))  # a hash that is not the query's
    assert code(answer) == "BAD_USER_INPUT" and "sha256" in answer["errors"][0]["message"]
    assert answer["errors"][0]["extensions"]["status"] == 400
    assert code(post(base, persisted("ABC"))) == "BAD_USER_INPUT"
    bad_version = {"extensions": {"persistedQuery": {"version": 2, "sha256Hash": sha(MODELS)}}}
    assert "version 1" in post(base, bad_version)["errors"][0]["message"]
    # Too deep for max_depth 3: refused, and not kept, so its hash stays unknown.
    deep = f"{{ me {{ usage {{ edges {{ node {{ key }} }} }} }} }} # {uuid.uuid4()}"
    assert code(post(base, persisted(sha(deep), deep))) == "QUERY_TOO_DEEP"
    assert code(post(base, persisted(sha(deep)))) == "PERSISTED_QUERY_NOT_FOUND"
    # Batches resolve each operation on its own.
    query = f"{{ models {{ name }} }} # {uuid.uuid4()}"
    post(base, persisted(sha(query), query))
    batch = post(base, [persisted(sha(query)), {"query": FEATURES}])
    assert batch[0]["data"]["models"] == [{"name": "echo"}] and batch[1]["data"]["features"]


def allowlist_config(tmp_path: Path, operations: Any) -> str:
    path = tmp_path / "operations.json"
    path.write_text(json.dumps(operations))
    return config(f"persisted_queries: allowlist, persisted_queries_file: '{path}'")


SUBSCRIBE = "subscription { usage { key } }"


@pytest.mark.anyio
async def test_an_allowlist_runs_only_its_operations_on_every_transport(tmp_path: Path) -> None:
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha(MODELS), "name": "Models", "type": "query", "body": MODELS}],
    }
    with run_server(
        create_app(parse_config(allowlist_config(tmp_path, manifest), "pq.yaml")), ws="auto"
    ) as base:
        assert post(base, persisted(sha(MODELS)))["data"] == {"models": [{"name": "echo"}]}
        assert post(base, {"query": MODELS})["data"] == {"models": [{"name": "echo"}]}  # its exact text
        for body in ({"query": FEATURES}, persisted(sha(FEATURES)), persisted(sha(FEATURES), FEATURES)):
            answer = post(base, body, key=MASTER)
            assert code(answer) == "PERSISTED_QUERY_NOT_IN_LIST" and answer.get("data") is None
            assert "persisted_queries_file" in answer["errors"][0]["message"]
        # A subscription over WebSocket is an operation too.
        transport = WebsocketsTransport(
            url=base.replace("http://", "ws://") + "/graphql",
            headers={"Authorization": f"Bearer {MASTER}"},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        with pytest.raises(TransportQueryError) as caught:
            async with Client(transport=transport) as session:
                await anext(session.subscribe(GraphQLRequest(SUBSCRIBE)))
        assert (
            caught.value.errors
            and caught.value.errors[0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
        )


def test_allowlist_files_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    # A plain {sha256: query} object (Relay's format) loads too.
    parse_config(allowlist_config(tmp_path, {sha(MODELS): MODELS}), "pq.yaml")
    for operations, words in (
        ({sha(MODELS): FEATURES}, "the id is not the sha256 of its query"),
        ({}, "no operations"),
        ({"operations": [{"id": sha(MODELS)}]}, "needs a sha256 id and a query string"),
        ([MODELS], "expected Apollo's manifest"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(allowlist_config(tmp_path, operations), "pq.yaml")
        assert "features.graphql.persisted_queries_file" in str(caught.value) and words in str(caught.value)
    missing = config(f"persisted_queries: allowlist, persisted_queries_file: '{tmp_path / 'nope.json'}'")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(missing, "pq.yaml")
    with pytest.raises(ConfigError, match="allowlist needs persisted_queries_file"):
        parse_config(config("persisted_queries: allowlist"), "pq.yaml")
    allowlist_config(tmp_path, {sha(MODELS): MODELS})  # a good file, but not asked for
    with pytest.raises(ConfigError, match="persisted_queries: allowlist"):
        parse_config(config(f"persisted_queries_file: '{tmp_path / 'operations.json'}'"), "pq.yaml")
    with pytest.raises(ConfigError, match=r"features\.graphql\.persisted_queries"):
        parse_config(config("persisted_queries: sometimes"), "pq.yaml")
