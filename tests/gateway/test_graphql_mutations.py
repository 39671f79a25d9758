"""The admin mutations ``updateKey``, ``rotateKey``, ``resetTeamBudget`` and ``purgeCache`` through a real
GraphQL client (gql over httpx) against a gateway served by uvicorn on loopback: each one's effect as the
REST admin API (and the client API) then sees it, its audit entry, and its scope refused without it."""

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

MASTER = "sk-gqlmut-test-master"
ALICE = "sk-gqlmut-test-alice"
BOB = "sk-gqlmut-test-bob"
KEY_WRITER = "sk-gqlmut-test-key-writer"
OPERATOR = "sk-gqlmut-test-operator"
CONFIG = f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}, team: research}}
    - {{name: bob, key: {BOB}}}
teams:
  - {{name: research, budget: {{limit_usd: 10, period: total}}}}
admin:
  failed_auth_limit: 1000
  rotation_grace_s: 0
  keys:
    - {{name: key-writer, key: {KEY_WRITER}, scopes: ["keys:read", "keys:write"]}}
    - {{name: operator, key: {OPERATOR}, scopes: ["budgets:write", "cache:write"]}}
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 1, output_per_1m: 1}}}}
  - {{name: other, routes: [{{provider: mock}}]}}
features:
  graphql: {{enabled: true}}
  cache: {{}}
usage: {{database: ":memory:"}}
"""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_server(create_app(parse_config(CONFIG, "graphql-mutations.yaml"))) as base:
        yield base


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run(url: str, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    transport = HTTPXTransport(url=f"{url}/graphql", headers=bearer(credential))
    with Client(transport=transport) as session:
        result: dict[str, Any] = session.execute(GraphQLRequest(query, variable_values=variables or None))
    return result


def refused(url: str, credential: str, query: str, **variables: Any) -> dict[str, Any]:
    """The first GraphQL error of a query expected to fail."""
    with pytest.raises(TransportQueryError) as caught:
        run(url, credential, query, **variables)
    assert caught.value.errors
    error: dict[str, Any] = caught.value.errors[0]
    return error


def ask(url: str, key: str, content: str, model: str = "echo") -> httpx.Response:
    body = {**chat(content), "model": model}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=bearer(key))


def audited(url: str, action: str, actor: str) -> bool:
    entries = httpx.get(f"{url}/admin/v1/audit", params={"limit": 100}, headers=bearer(MASTER)).json()
    return any(e["action"] == action and e["actor"]["name"] == actor for e in entries["data"])


def create(url: str, name: str) -> dict[str, Any]:
    mutation = "mutation ($input: KeyCreateInput!) { createKey(input: $input) { id secret } }"
    created: dict[str, Any] = run(url, KEY_WRITER, mutation, input={"name": name, "models": ["echo"]})
    return created["createKey"]


UPDATE = """mutation ($id: ID!, $input: KeyUpdateInput!) {
  updateKey(id: $id, input: $input) { name models rpm team }
}"""


def test_update_key_changes_only_the_fields_given_as_the_rest_api_then_sees(url: str) -> None:
    key = create(url, "to-update")
    updated = run(url, KEY_WRITER, UPDATE, id=key["id"], input={"rpm": 7, "models": ["echo", "other"]})
    assert updated["updateKey"] == {"name": "to-update", "models": ["echo", "other"], "rpm": 7, "team": None}
    rest = httpx.get(f"{url}/admin/v1/keys/{key['id']}", headers=bearer(MASTER)).json()
    assert rest["rpm"] == 7 and rest["models"] == ["echo", "other"]
    # The key may now call `other` on the client API.
    assert ask(url, key["secret"], "now allowed", model="other").status_code == 200
    # An explicit null clears a field; a field not given stays.
    cleared = run(url, KEY_WRITER, UPDATE, id=key["id"], input={"models": None, "budget": {"limitUsd": 3}})
    assert cleared["updateKey"]["models"] is None and cleared["updateKey"]["rpm"] == 7
    rest = httpx.get(f"{url}/admin/v1/keys/{key['id']}", headers=bearer(MASTER)).json()
    assert rest["models"] == "*" and float(rest["budget"]["limit_usd"]) == 3
    assert audited(url, "key.update", "key-writer")


def test_update_key_refuses_bad_input_naming_the_field_and_needs_keys_write(url: str) -> None:
    key = create(url, "to-refuse")
    error = refused(url, KEY_WRITER, UPDATE, id=key["id"], input={"rpm": 0})
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["param"] == "rpm"
    error = refused(url, KEY_WRITER, UPDATE, id=key["id"], input={"models": ["no-such-model"]})
    assert error["extensions"]["status"] == 400 and "no-such-model" in error["message"]
    error = refused(url, OPERATOR, UPDATE, id=key["id"], input={"rpm": 5})
    assert error["extensions"]["code"] == "FORBIDDEN" and "keys:write" in error["message"]
    error = refused(url, ALICE, UPDATE, id=key["id"], input={"rpm": 5})
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert refused(url, KEY_WRITER, UPDATE, id="key_nope", input={"rpm": 5})["extensions"]["status"] == 404
    assert httpx.get(f"{url}/admin/v1/keys/{key['id']}", headers=bearer(MASTER)).json()["rpm"] is None


ROTATE = "mutation ($id: ID!, $grace: Int) { rotateKey(id: $id, gracePeriodS: $grace) { name secret } }"


def test_rotate_key_answers_a_new_secret_that_works_and_retires_the_old_one(url: str) -> None:
    key = create(url, "to-rotate")
    assert ask(url, key["secret"], "before rotation").status_code == 200
    error = refused(url, OPERATOR, ROTATE, id=key["id"])
    assert error["extensions"]["code"] == "FORBIDDEN" and "keys:write" in error["message"]
    rotated = run(url, KEY_WRITER, ROTATE, id=key["id"])["rotateKey"]
    assert rotated["name"] == "to-rotate" and rotated["secret"] and rotated["secret"] != key["secret"]
    # admin.rotation_grace_s is 0 here: the old secret stops at once, the new one works.
    assert ask(url, key["secret"], "old secret").status_code == 401
    assert ask(url, rotated["secret"], "new secret").status_code == 200
    assert "secret" not in httpx.get(f"{url}/admin/v1/keys/{key['id']}", headers=bearer(MASTER)).json()
    assert audited(url, "key.rotate", "key-writer")
    # With a grace period, the previous secret keeps working for it.
    again = run(url, KEY_WRITER, ROTATE, id=key["id"], grace=600)["rotateKey"]
    assert ask(url, rotated["secret"], "in grace").status_code == 200
    assert ask(url, again["secret"], "newest").status_code == 200
    error = refused(url, KEY_WRITER, ROTATE, id=key["id"], grace=-1)
    assert error["extensions"]["param"] == "grace_period_s"


RESET_TEAM = "mutation ($team: String!) { resetTeamBudget(team: $team) { scope name spentUsd limitUsd } }"


def test_reset_team_budget_zeroes_the_spend_the_rest_api_reports(url: str) -> None:
    assert ask(url, ALICE, "spend on the team budget").status_code == 200
    team_budget = f"{url}/admin/v1/teams/research/budget"
    assert float(httpx.get(team_budget, headers=bearer(MASTER)).json()["spent_usd"]) > 0
    error = refused(url, KEY_WRITER, RESET_TEAM, team="research")
    assert error["extensions"]["code"] == "FORBIDDEN" and "budgets:write" in error["message"]
    reset = run(url, OPERATOR, RESET_TEAM, team="research")["resetTeamBudget"]
    assert reset == {"scope": "team", "name": "research", "spentUsd": "0", "limitUsd": "10"}
    assert httpx.get(team_budget, headers=bearer(MASTER)).json()["spent_usd"] == "0"
    assert audited(url, "team.budget.reset", "operator")
    assert refused(url, OPERATOR, RESET_TEAM, team="no-such-team")["extensions"]["code"] == "NOT_FOUND"


PURGE = """mutation ($input: CachePurgeInput!) {
  purgeCache(input: $input) { model keyId all sharedGroup }
}"""


def cache_status(url: str, key: str, model: str, content: str) -> str:
    response = ask(url, key, content, model=model)
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-cache"]


def test_purge_cache_makes_the_named_entries_miss_and_needs_cache_write(url: str) -> None:
    for model in ("echo", "other"):
        assert cache_status(url, BOB, model, "cache me") == "MISS"
        assert cache_status(url, BOB, model, "cache me") == "HIT"
    error = refused(url, KEY_WRITER, PURGE, input={"model": "echo"})
    assert error["extensions"]["code"] == "FORBIDDEN" and "cache:write" in error["message"]
    assert cache_status(url, BOB, "echo", "cache me") == "HIT"
    purged = run(url, OPERATOR, PURGE, input={"model": "echo"})["purgeCache"]
    assert purged == {"model": "echo", "keyId": None, "all": False, "sharedGroup": None}
    assert cache_status(url, BOB, "echo", "cache me") == "MISS"
    assert cache_status(url, BOB, "other", "cache me") == "HIT"
    assert audited(url, "cache.purge", "operator")
    everything = run(url, OPERATOR, PURGE, input={"all": True})["purgeCache"]
    assert everything["all"] is True
    assert cache_status(url, BOB, "other", "cache me") == "MISS"
    # Neither or both targets: the REST API's 400.
    assert refused(url, OPERATOR, PURGE, input={})["extensions"]["status"] == 400
    error = refused(url, OPERATOR, PURGE, input={"model": "no-such-model"})
    assert error["extensions"]["param"] == "model"
