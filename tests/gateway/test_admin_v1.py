"""``/admin/v1``: scopes (401/403/429), key CRUD, ETags, idempotency, validation and the audit log, through
the app in process (SQLite admin store in memory)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_testing import chat, serve

from gateway.config import parse_config

pytestmark = pytest.mark.anyio

MASTER = "sk-admin-test-master"
READER = "sk-admin-test-reader"
WRITER = "sk-admin-test-writer"
USER = "sk-admin-test-user"
CONFIG = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: user, key: {USER}, models: [echo]}}]
admin:
  failed_auth_limit: 3
  keys:
    - {{name: reader, key: {READER}, scopes: ["keys:read"]}}
    - {{name: writer, key: {WRITER}, scopes: ["keys:read", "keys:write", "audit:read"]}}
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
    async with serve(parse_config(CONFIG, "admin.yaml")) as c:
        yield c


async def create(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/admin/v1/keys", json={"name": "svc", **body}, headers=bearer(MASTER))
    assert response.status_code == 201, response.text
    return response.json()


async def test_no_or_unknown_credential_is_401_and_a_missing_scope_is_403(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/v1/keys")).status_code == 401
    unknown = await client.get("/admin/v1/keys", headers=bearer("sk-nobody-at-all"))
    assert unknown.status_code == 401
    assert unknown.json()["error"]["type"] == "authentication_error"
    assert (await client.get("/admin/v1/keys", headers=bearer(READER))).status_code == 200
    refused = await client.post("/admin/v1/keys", json={"name": "x"}, headers=bearer(READER))
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "message": "This credential lacks the 'keys:write' scope.",
        "type": "permission_error",
        "param": None,
        "code": "insufficient_scope",
    }
    assert (await client.get("/admin/v1/audit", headers=bearer(READER))).status_code == 403
    # A virtual key is known, so 403, not 401.
    assert (await client.get("/admin/v1/keys", headers=bearer(USER))).status_code == 403


async def test_failed_admin_logins_are_limited_per_address(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.get("/admin/v1/keys", headers=bearer("sk-guess-000000"))).status_code == 401
    blocked = await client.get("/admin/v1/keys", headers=bearer("sk-guess-000000"))
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "60"
    # Blocked even with the right key until the window ends: guessing must not pay.
    assert (await client.get("/admin/v1/keys", headers=bearer(MASTER))).status_code == 429


async def test_a_created_key_works_once_shown_and_never_again(client: httpx.AsyncClient) -> None:
    created = await create(client, models=["echo"], metadata={"owner": "ci"})
    secret = str(created["secret"])
    assert secret.startswith("sk-gw-") and created["key"] == f"sk-gw-…{secret[-4:]}"
    ok = await client.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
    assert ok.status_code == 200
    other = await client.post("/v1/chat/completions", json=chat(model="other"), headers=bearer(secret))
    assert other.status_code == 403
    read = await client.get(f"/admin/v1/keys/{created['id']}", headers=bearer(READER))
    assert read.status_code == 200 and read.headers["etag"] == created["etag"]
    listed = await client.get("/admin/v1/keys", headers=bearer(READER))
    for text in (read.text, listed.text):
        assert secret not in text
    assert "secret" not in read.json()


async def test_the_list_pages_with_opaque_cursors_config_keys_first(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, name=f"k{i}"))["id"] for i in range(3)]
    seen: list[object] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/admin/v1/keys", params=params, headers=bearer(READER))).json()
        seen.extend(item["id"] for item in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[0].startswith("cfg_") and seen[1:] == ids
    bad = await client.get("/admin/v1/keys", params={"cursor": "nonsense"}, headers=bearer(READER))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cursor"
    too_big = await client.get("/admin/v1/keys", params={"limit": 1000}, headers=bearer(READER))
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "limit"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "color": "red"}, "color"),
        ({"name": ""}, "name"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "budget": {"limit_usd": -1}}, "budget.limit_usd"),
        ({"name": "x", "models": ["echo", "nope"]}, "models[1]"),
        ({"name": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"models": ["echo"]}, "name"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    response = await client.post("/admin/v1/keys", json=body, headers=bearer(MASTER))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_updates_need_the_current_etag_when_if_match_is_sent(client: httpx.AsyncClient) -> None:
    created = await create(client)
    url = f"/admin/v1/keys/{created['id']}"
    stale = await client.patch(url, json={"rpm": 5}, headers={**bearer(WRITER), "If-Match": '"old"'})
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "precondition_failed"
    changed = await client.patch(
        url, json={"rpm": 5, "team": "ops"}, headers={**bearer(WRITER), "If-Match": str(created["etag"])}
    )
    assert changed.status_code == 200
    assert changed.json()["rpm"] == 5 and changed.json()["team"] == "ops"
    assert changed.headers["etag"] != created["etag"]
    again = await client.patch(
        url, json={"rpm": 6}, headers={**bearer(WRITER), "If-Match": str(created["etag"])}
    )
    assert again.status_code == 412


async def test_config_file_keys_are_read_only(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/admin/v1/keys", headers=bearer(READER))).json()["data"]
    config_key = next(k for k in listed if k["source"] == "config")
    assert config_key["name"] == "user" and config_key["key"] is None
    for response in (
        await client.patch(f"/admin/v1/keys/{config_key['id']}", json={"rpm": 1}, headers=bearer(MASTER)),
        await client.post(f"/admin/v1/keys/{config_key['id']}/revoke", headers=bearer(MASTER)),
    ):
        assert response.status_code == 409
        assert "config file" in response.json()["error"]["message"]
    clash = await client.post("/admin/v1/keys", json={"name": "user"}, headers=bearer(MASTER))
    assert clash.status_code == 409 and clash.json()["error"]["param"] == "name"


async def test_rotation_keeps_the_old_secret_for_the_grace_period_and_revocation_ends_both(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client)
    old = str(created["secret"])
    rotated = await client.post(
        f"/admin/v1/keys/{created['id']}/rotate", json={"grace_period_s": 600}, headers=bearer(WRITER)
    )
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["previous_key_valid_until"] is not None
    for secret in (old, new):
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
        ).status_code == 200
    revoked = await client.delete(f"/admin/v1/keys/{created['id']}", headers=bearer(WRITER))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    for secret in (old, new):
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=bearer(secret))
        ).status_code == 401
    no_grace = await create(client, name="nograce")
    await client.post(
        f"/admin/v1/keys/{no_grace['id']}/rotate", json={"grace_period_s": 0}, headers=bearer(MASTER)
    )
    gone = await client.post("/v1/chat/completions", json=chat(), headers=bearer(str(no_grace["secret"])))
    assert gone.status_code == 401


async def test_an_expired_key_is_refused(client: httpx.AsyncClient) -> None:
    created = await create(client, expires_at="2000-01-01T00:00:00Z")
    refused = await client.post("/v1/chat/completions", json=chat(), headers=bearer(str(created["secret"])))
    assert refused.status_code == 401


async def test_an_idempotent_create_answers_the_same_key_twice(client: httpx.AsyncClient) -> None:
    headers = {**bearer(MASTER), "Idempotency-Key": "create-svc-1"}
    first = await client.post("/admin/v1/keys", json={"name": "svc"}, headers=headers)
    second = await client.post("/admin/v1/keys", json={"name": "svc"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"] and first.json()["secret"] == second.json()["secret"]
    different = await client.post("/admin/v1/keys", json={"name": "other"}, headers=headers)
    assert different.status_code == 422 and different.json()["error"]["param"] == "Idempotency-Key"
    listed = (await client.get("/admin/v1/keys", headers=bearer(READER))).json()["data"]
    assert [k["name"] for k in listed if k["source"] == "api"] == ["svc"]


async def test_the_audit_log_records_who_changed_what_without_secrets(client: httpx.AsyncClient) -> None:
    created = await client.post("/admin/v1/keys", json={"name": "audited"}, headers=bearer(WRITER))
    key = created.json()
    await client.patch(f"/admin/v1/keys/{key['id']}", json={"rpm": 9}, headers=bearer(MASTER))
    rotated = (await client.post(f"/admin/v1/keys/{key['id']}/rotate", headers=bearer(MASTER))).json()
    await client.post(f"/admin/v1/keys/{key['id']}/revoke", headers=bearer(MASTER))
    log = await client.get("/admin/v1/audit", headers=bearer(WRITER))
    entries = log.json()["data"]
    assert [(e["action"], e["actor"]["name"]) for e in entries] == [
        ("key.create", "writer"),
        ("key.update", "master"),
        ("key.rotate", "master"),
        ("key.revoke", "master"),
    ]
    assert entries[1]["before"]["rpm"] is None and entries[1]["after"]["rpm"] == 9
    text = json.dumps(log.json())
    for secret in (key["secret"], rotated["secret"]):
        assert secret not in text
        assert secret[6:] not in text


async def test_the_admin_openapi_document_describes_the_admin_api(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/v1/openapi.json")).status_code == 401
    document = (await client.get("/admin/v1/openapi.json", headers=bearer(READER))).json()
    assert {
        "/admin/v1/keys",
        "/admin/v1/keys/{key_id}",
        "/admin/v1/keys/{key_id}/rotate",
        "/admin/v1/audit",
    } <= set(document["paths"])
    assert "KeyCreate" in document["components"]["schemas"]
    # The client API's document does not list the admin API.
    public = (await client.get("/openapi.json")).json()
    assert not any(path.startswith("/admin") for path in public["paths"])


async def test_limits_and_budget_of_a_runtime_key_are_enforced_and_changes_apply(
    client: httpx.AsyncClient,
) -> None:
    limited = await create(client, name="limited", rpm=2)
    secret = bearer(str(limited["secret"]))
    statuses = [
        (await client.post("/v1/chat/completions", json=chat(), headers=secret)).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    # A budget smaller than one request's most possible cost refuses it; raised, the next request passes.
    poor = await create(client, name="poor", budget={"limit_usd": "0.001", "period": "daily"})
    body = chat(model="priced", max_tokens=50)
    refused = await client.post("/v1/chat/completions", json=body, headers=bearer(str(poor["secret"])))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    await client.patch(
        f"/admin/v1/keys/{poor['id']}",
        json={"budget": {"limit_usd": "5", "period": "daily"}},
        headers=bearer(MASTER),
    )
    allowed = await client.post("/v1/chat/completions", json=body, headers=bearer(str(poor["secret"])))
    assert allowed.status_code == 200


async def test_a_runtime_keys_budget_is_read_and_reset_without_dropping_reservations(
    client: httpx.AsyncClient,
) -> None:
    key = await create(client, name="spender", budget={"limit_usd": "0.5", "period": "daily"})
    secret = bearer(str(key["secret"]))
    assert (
        await client.post("/v1/chat/completions", json=chat(model="priced", max_tokens=20), headers=secret)
    ).status_code == 200
    status = await client.get(f"/admin/v1/keys/{key['id']}/budget", headers=bearer(MASTER))
    assert status.status_code == 200
    spent = float(status.json()["spent_usd"])
    assert spent > 0 and status.json()["limit_usd"] == "0.5"
    assert (
        await client.post(f"/admin/v1/keys/{key['id']}/budget/reset", headers=bearer(WRITER))
    ).status_code == 403
    reset = await client.post(f"/admin/v1/keys/{key['id']}/budget/reset", headers=bearer(MASTER))
    assert reset.status_code == 200 and float(reset.json()["spent_usd"]) == 0
    log = (await client.get("/admin/v1/audit", headers=bearer(MASTER))).json()["data"]
    assert log[-1]["action"] == "key.budget.reset" and float(log[-1]["before"]["spent_usd"]) == spent
    no_budget = await create(client, name="free")
    assert (
        await client.get(f"/admin/v1/keys/{no_budget['id']}/budget", headers=bearer(MASTER))
    ).status_code == 404


async def test_usage_routes_and_reload_are_served_under_their_scopes(client: httpx.AsyncClient) -> None:
    key = await create(client, name="counted")
    await client.post("/v1/chat/completions", json=chat(), headers=bearer(str(key["secret"])))
    usage = await client.get("/admin/v1/usage", params={"group_by": "key"}, headers=bearer(MASTER))
    assert usage.status_code == 200
    assert any(group["key"] == "counted" and group["requests"] == 1 for group in usage.json()["groups"])
    assert (await client.get("/admin/v1/usage", headers=bearer(READER))).status_code == 403
    routes = await client.get("/admin/v1/routes", headers=bearer(MASTER))
    assert routes.status_code == 200 and "echo" in json.dumps(routes.json())
    assert (await client.get("/admin/v1/routes", headers=bearer(READER))).status_code == 403
    features = await client.get("/admin/v1/features", headers=bearer(READER))  # any admin credential
    assert features.status_code == 200 and "admin-api" in features.json()["features"]
    # This gateway was not started from a file: nothing to reload (409), but the scope let the call through.
    assert (await client.post("/admin/v1/config/reload", headers=bearer(MASTER))).status_code == 409
    assert (await client.post("/admin/v1/config/reload", headers=bearer(WRITER))).status_code == 403
