"""Runtime teams through ``/admin/v1/teams`` and LiteLLM's ``/team/new``: scopes, CRUD with ETags and
cursors, validation, config-file teams read-only, and enforcement of a team's budget, model list and shared
rpm limit on its keys (the app in process, SQLite admin store in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_testing import chat, serve

from gateway.config import parse_config

pytestmark = pytest.mark.anyio

MASTER = "sk-teams-test-master"
KEYS_ADMIN = "sk-teams-test-keys"
TEAMS_ADMIN = "sk-teams-test-teams"
CONFIG = f"""
auth:
  master_key: {MASTER}
admin:
  keys:
    - {{name: keys-admin, key: {KEYS_ADMIN}, scopes: ["keys:read", "keys:write"]}}
    - {{name: teams-admin, key: {TEAMS_ADMIN}, scopes: ["teams:read", "teams:write", "budgets:read"]}}
teams:
  - {{name: finance, budget: {{limit_usd: 100, period: monthly}}}}
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}]}}
  - {{name: other, routes: [{{provider: mock}}]}}
  - {{name: priced, routes: [{{provider: mock}}], pricing: {{input_per_1m: 1000, output_per_1m: 1000}}}}
usage: {{database: ":memory:"}}
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve(parse_config(CONFIG, "teams.yaml")) as c:
        yield c


async def new_team(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/admin/v1/teams", json=body, headers=bearer(TEAMS_ADMIN))
    assert response.status_code == 201, response.text
    return response.json()


async def new_key(client: httpx.AsyncClient, name: str, **body: object) -> dict[str, str]:
    response = await client.post("/admin/v1/keys", json={"name": name, **body}, headers=bearer(MASTER))
    assert response.status_code == 201, response.text
    return bearer(response.json()["secret"])


async def test_teams_need_the_teams_scopes(client: httpx.AsyncClient) -> None:
    refused = await client.post("/admin/v1/teams", json={"name": "t"}, headers=bearer(KEYS_ADMIN))
    assert refused.status_code == 403 and "teams:write" in refused.json()["error"]["message"]
    assert (await client.get("/admin/v1/teams", headers=bearer(KEYS_ADMIN))).status_code == 403
    assert (await client.get("/admin/v1/teams", headers=bearer(TEAMS_ADMIN))).status_code == 200
    legacy = await client.post("/team/new", json={"team_alias": "t"}, headers=bearer(KEYS_ADMIN))
    assert legacy.status_code == 403


async def test_create_read_list_update_and_delete_a_team_audited(client: httpx.AsyncClient) -> None:
    created = await new_team(
        client, name="research", budget={"limit_usd": "5", "period": "daily"}, models=["echo"], rpm=10
    )
    assert created["source"] == "api" and created["budget"] == {"limit_usd": "5", "period": "daily"}
    assert (created["models"], created["rpm"], created["tpm"]) == (["echo"], 10, None)
    duplicate = await client.post("/admin/v1/teams", json={"name": "research"}, headers=bearer(MASTER))
    assert duplicate.status_code == 409 and duplicate.json()["error"]["param"] == "name"
    clash = await client.post("/admin/v1/teams", json={"name": "finance"}, headers=bearer(MASTER))
    assert clash.status_code == 409
    await new_team(client, name="alpha")
    await new_team(client, name="zeta")

    # Config-file teams first, then runtime teams by name, two to a page.
    names, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/admin/v1/teams", params=params, headers=bearer(TEAMS_ADMIN))).json()
        names += [(t["name"], t["source"]) for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [("finance", "config"), ("alpha", "api"), ("research", "api"), ("zeta", "api")]

    read = await client.get("/admin/v1/teams/research", headers=bearer(TEAMS_ADMIN))
    etag = read.headers["etag"]
    assert read.json()["etag"] == etag
    changed = await client.patch(
        "/admin/v1/teams/research",
        json={"tpm": 500, "models": "*"},
        headers={**bearer(MASTER), "if-match": etag},
    )
    assert changed.status_code == 200 and changed.json()["tpm"] == 500 and changed.json()["models"] == "*"
    stale = await client.patch(
        "/admin/v1/teams/research", json={"rpm": 1}, headers={**bearer(MASTER), "if-match": etag}
    )
    assert stale.status_code == 412 and changed.headers["etag"] in stale.json()["error"]["message"]

    # A team that live keys name is not deleted (that would lift its budget from them).
    member = await client.post(
        "/admin/v1/keys", json={"name": "m", "team": "research"}, headers=bearer(MASTER)
    )
    busy = await client.delete("/admin/v1/teams/research", headers=bearer(MASTER))
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "team_not_empty"
    await client.post(f"/admin/v1/keys/{member.json()['id']}/revoke", headers=bearer(MASTER))
    assert (await client.delete("/admin/v1/teams/research", headers=bearer(MASTER))).status_code == 200
    assert (await client.get("/admin/v1/teams/research", headers=bearer(MASTER))).status_code == 404

    log = (await client.get("/admin/v1/audit", headers=bearer(MASTER))).json()["data"]
    team_log = [(e["action"], e["target"]) for e in log if e["action"].startswith("team.")]
    assert team_log == [
        ("team.create", "research"),
        ("team.create", "alpha"),
        ("team.create", "zeta"),
        ("team.update", "research"),
        ("team.delete", "research"),
    ]
    assert next(e for e in log if e["action"] == "team.update")["after"]["tpm"] == 500


async def test_config_file_teams_are_listed_but_read_only(client: httpx.AsyncClient) -> None:
    read = await client.get("/admin/v1/teams/finance", headers=bearer(TEAMS_ADMIN))
    assert read.json()["read_only"] is True and read.json()["budget"]["limit_usd"] == "100"
    patched = await client.patch("/admin/v1/teams/finance", json={"rpm": 1}, headers=bearer(MASTER))
    assert patched.status_code == 409 and patched.json()["error"]["code"] == "team_read_only"
    assert (await client.delete("/admin/v1/teams/finance", headers=bearer(MASTER))).status_code == 409


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "has space"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "t", "models": ["echo", "nope"]}, "models[1]"),
        ({"name": "t", "budget": {"limit_usd": "-1"}}, "budget.limit_usd"),
        ({"name": "t", "budget": {"limit_usd": "1", "period": "hourly"}}, "budget.period"),
        ({"name": "t", "rpm": 0}, "rpm"),
        ({"name": "t", "owner": "x"}, "owner"),
    ],
)
async def test_invalid_team_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    response = await client.post("/admin/v1/teams", json=body, headers=bearer(MASTER))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_a_teams_budget_is_shared_by_its_keys_and_shown_in_its_status(
    client: httpx.AsyncClient,
) -> None:
    await new_team(client, name="lab", budget={"limit_usd": "0.1", "period": "daily"})
    first, second = await new_key(client, "lab-1", team="lab"), await new_key(client, "lab-2", team="lab")
    body = chat(model="priced", max_tokens=20)
    assert (await client.post("/v1/chat/completions", json=body, headers=first)).status_code == 200
    status = (await client.get("/admin/v1/teams/lab/budget", headers=bearer(TEAMS_ADMIN))).json()
    spent = float(status["spent_usd"])
    assert status["scope"] == "team" and status["limit_usd"] == "0.1" and spent > 0
    # The other key spends from the same budget: a request that may cost more than what remains is refused.
    big = chat(model="priced", max_tokens=100)
    refused = await client.post("/v1/chat/completions", json=big, headers=second)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "team 'lab'" in refused.json()["error"]["message"]
    # Raising the team's budget lets the next request through.
    await client.patch("/admin/v1/teams/lab", json={"budget": {"limit_usd": "10"}}, headers=bearer(MASTER))
    assert (await client.post("/v1/chat/completions", json=big, headers=second)).status_code == 200


async def test_a_teams_model_list_narrows_its_keys_models(client: httpx.AsyncClient) -> None:
    await new_team(client, name="narrow", models=["echo"])
    key = await new_key(client, "n-1", team="narrow", models=["echo", "other"])
    assert (await client.post("/v1/chat/completions", json=chat(), headers=key)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=chat(model="other"), headers=key)
    assert refused.status_code == 403
    await client.patch("/admin/v1/teams/narrow", json={"models": "*"}, headers=bearer(MASTER))
    assert (
        await client.post("/v1/chat/completions", json=chat(model="other"), headers=key)
    ).status_code == 200


async def test_a_teams_rpm_is_one_allowance_for_all_its_keys(client: httpx.AsyncClient) -> None:
    await new_team(client, name="shared", rpm=2)
    first, second = await new_key(client, "s-1", team="shared"), await new_key(client, "s-2", team="shared")
    assert (await client.post("/v1/chat/completions", json=chat(), headers=first)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat(), headers=second)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=chat(), headers=first)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "team 'shared'" in refused.json()["error"]["message"]
    # A key of another team is not affected.
    outsider = await new_key(client, "o-1")
    assert (await client.post("/v1/chat/completions", json=chat(), headers=outsider)).status_code == 200


async def test_litellm_team_new_maps_budget_models_and_limits(client: httpx.AsyncClient) -> None:
    body = {"team_alias": "compat", "max_budget": 2.5, "budget_duration": "30d", "models": ["echo"],
            "rpm_limit": 5, "tpm_limit": 1000, "metadata": {"owner": "ops"}}  # fmt: skip
    made = await client.post("/team/new", json=body, headers=bearer(TEAMS_ADMIN))
    assert made.status_code == 200, made.text
    native = (await client.get("/admin/v1/teams/compat", headers=bearer(MASTER))).json()
    assert native["budget"] == {"limit_usd": "2.5", "period": "monthly"}
    assert (native["models"], native["rpm"], native["tpm"]) == (["echo"], 5, 1000)
    info = (await client.get("/team/info", params={"team_id": "compat"}, headers=bearer(TEAMS_ADMIN))).json()
    shown = info["team_info"]
    assert (shown["max_budget"], shown["budget_duration"], shown["models"]) == (2.5, "30d", ["echo"])
    assert (shown["rpm_limit"], shown["tpm_limit"], shown["metadata"]) == (5, 1000, {"owner": "ops"})
    bad = await client.post(
        "/team/new",
        json={"team_alias": "x", "max_budget": 1, "budget_duration": "2d"},
        headers=bearer(MASTER),
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "budget_duration"
    unknown = await client.post("/team/new", json={"team_alias": "y", "budget": 1}, headers=bearer(MASTER))
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "budget"
