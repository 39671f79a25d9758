"""Rate-limit status over GraphQL (``Query.rateLimits``, ``Me.rateLimits``, ``Key.rateLimits``) and the REST
admin API (``GET /admin/v1/keys/{id}/rate-limit``), through gql against a gateway on loopback: both doors
answer from the same library function, a virtual key reads only its own, and a page of keys is one read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_testing import chat, run_server
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport

from gateway.app import create_app
from gateway.config import parse_config
from gateway.features.ratelimit import RateLimitStage

MASTER = "sk-graphql-rl-master"
CAROL = "sk-graphql-rl-carol"
DAVE = "sk-graphql-rl-dave"
BUDGET_READER = "sk-graphql-rl-budget-reader"
# rpm 2: one request refills every 30 s, so what a test spends is still spent when it reads the status.
CONFIG = f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: carol, key: {CAROL}, rpm: 2, tpm: 100000, max_concurrent: 4}}
    - {{name: dave, key: {DAVE}}}
admin:
  keys:
    - {{name: budget-reader, key: {BUDGET_READER}, scopes: ["budgets:read"]}}
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock}}]}}]
features:
  graphql: {{enabled: true}}
usage: {{database: ":memory:"}}
"""
LIMITS = "rateLimits { scope name kind limit used remaining resetMs }"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_server(create_app(parse_config(CONFIG, "graphql.yaml"))) as base:
        yield base


def run(url: str, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    transport = HTTPXTransport(url=f"{url}/graphql", headers={"Authorization": f"Bearer {credential}"})
    with Client(transport=transport) as session:
        result: dict[str, Any] = session.execute(GraphQLRequest(query, variable_values=variables or None))
    return result


def refused(url: str, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    with pytest.raises(TransportQueryError) as caught:
        run(url, credential, query, **variables)
    assert caught.value.errors
    error: dict[str, Any] = caught.value.errors[0]
    return error


def admin(url: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        kwargs.pop("method", "GET"), f"{url}{path}", headers={"Authorization": f"Bearer {MASTER}"}, **kwargs
    )


def key_id(url: str, name: str) -> str:
    keys = admin(url, "/admin/v1/keys").json()["data"]
    return str(next(k["id"] for k in keys if k["name"] == name))


def spend(url: str, key: str) -> None:
    response = httpx.post(
        f"{url}/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text


def stable(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What two reads a moment apart agree on: each limit, and the requests used (one refills every 30 s);
    tokens and reset times move with the clock."""
    return [
        (r["scope"], r["name"], r["kind"], r["limit"], r["used"] if r["kind"] != "tokens" else None)
        for r in rows
    ]


def kinds(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["kind"]: row for row in rows}


def test_a_key_reads_its_own_rate_limits_as_the_rest_api_reports_them(url: str) -> None:
    spend(url, CAROL)
    mine = run(url, CAROL, f"{{ me {{ {LIMITS} }} {LIMITS} }}")
    assert stable(mine["me"]["rateLimits"]) == stable(mine["rateLimits"])
    rows = kinds(mine["rateLimits"])
    assert set(rows) == {"requests", "tokens", "concurrent"}
    assert rows["requests"]["limit"] == 2 and rows["requests"]["used"] == 1
    assert rows["requests"]["remaining"] == 1 and rows["requests"]["resetMs"] > 0
    # A request's few tokens refill within milliseconds at this tpm: only the accounting is exact here
    # (tests/gateway/test_ratelimit_status.py checks the tokens spent with a clock standing still).
    assert rows["tokens"]["limit"] == 100000
    assert rows["tokens"]["used"] + rows["tokens"]["remaining"] == 100000
    assert rows["concurrent"] == {
        "scope": "key", "name": "carol", "kind": "concurrent", "limit": 4, "used": 0, "remaining": 4,
        "resetMs": None,
    }  # fmt: skip
    # Reading the status spent nothing: the second request of the two per minute is still admitted.
    spend(url, CAROL)
    carol = key_id(url, "carol")
    rest = admin(url, f"/admin/v1/keys/{carol}/rate-limit")
    assert rest.status_code == 200
    body = rest.json()
    assert body["key_id"] == carol and body["name"] == "carol"
    query = f"query ($key: ID) {{ {LIMITS.replace('rateLimits', 'rateLimits(key: $key)')} }}"
    by_admin = run(url, MASTER, query, key=carol)["rateLimits"]
    assert stable(by_admin) == stable(body["limits"])
    assert kinds(by_admin)["requests"]["used"] == 2 and kinds(by_admin)["requests"]["remaining"] == 0
    # Own id given explicitly is fine; another key's is not.
    assert run(url, CAROL, "query ($key: ID) { rateLimits(key: $key) { kind } }", key=carol)["rateLimits"]
    error = refused(
        url, CAROL, "query ($key: ID) { rateLimits(key: $key) { kind } }", key=key_id(url, "dave")
    )
    assert error["extensions"]["code"] == "FORBIDDEN" and "own rate limits" in error["message"]


def test_admin_callers_need_keys_read_and_must_name_a_key(url: str) -> None:
    error = refused(url, BUDGET_READER, '{ rateLimits(key: "x") { kind } }')
    assert error["extensions"]["code"] == "FORBIDDEN" and "keys:read" in error["message"]
    error = refused(url, MASTER, "{ rateLimits { kind } }")
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["param"] == "key"
    error = refused(url, MASTER, '{ rateLimits(key: "key_missing") { kind } }')
    assert error["extensions"]["code"] == "NOT_FOUND"
    reader = httpx.get(
        f"{url}/admin/v1/keys/{key_id(url, 'carol')}/rate-limit",
        headers={"Authorization": f"Bearer {BUDGET_READER}"},
    )
    assert reader.status_code == 403 and "keys:read" in reader.json()["error"]["message"]
    assert admin(url, "/admin/v1/keys/key_missing/rate-limit").status_code == 404


def test_a_page_of_keys_reads_its_rate_limits_in_one_batch(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A runtime team with its own allowance, and a key of it that has spent from it.
    team = admin(url, "/admin/v1/teams", method="POST", json={"name": "rl-team", "rpm": 3, "tpm": 50000})
    assert team.status_code == 201, team.text
    created = admin(url, "/admin/v1/keys", method="POST", json={"name": "erin", "team": "rl-team"})
    assert created.status_code == 201, created.text
    spend(url, created.json()["secret"])
    calls: list[int] = []
    status = RateLimitStage.status

    async def counted(self: RateLimitStage, keys: Any) -> Any:
        calls.append(len(keys))
        return await status(self, keys)

    monkeypatch.setattr(RateLimitStage, "status", counted)
    nodes = run(url, MASTER, f"{{ keys(first: 20) {{ nodes {{ name {LIMITS} }} }} }}")["keys"]["nodes"]
    assert calls == [len(nodes)]  # one read for the whole page, not one per key
    limits = {node["name"]: node["rateLimits"] for node in nodes}
    assert limits["dave"] == []  # no limit of its own, no default
    assert kinds(limits["carol"])["requests"]["limit"] == 2
    erin = limits["erin"]
    assert [(r["scope"], r["name"], r["kind"], r["limit"]) for r in erin] == [
        ("team", "rl-team", "requests", 3),
        ("team", "rl-team", "tokens", 50000),
    ]
    assert erin[0]["used"] == 1 and erin[0]["remaining"] == 2
    # The REST door answers the same for the runtime key.
    rest = admin(url, f"/admin/v1/keys/{created.json()['id']}/rate-limit").json()
    assert [(r["scope"], r["kind"], r["used"]) for r in rest["limits"]] == [
        (r["scope"], r["kind"], r["used"]) for r in erin
    ]
    # keys:read is required for the field as for the page; a virtual key reaches neither.
    assert refused(url, CAROL, "{ keys { nodes { name } } }")["extensions"]["code"] == "FORBIDDEN"
