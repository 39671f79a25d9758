"""Acceptance: the admin API (``/admin/v1`` and its LiteLLM aliases), black box over HTTP.

Most tests use the module's gateway (or a live one with ``--gateway-master-key``). The replica test starts
its own two gateways on one real redis-server, as a deployment with replicas would run, and talks to them
with the ``openai`` SDK like any client.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from redis_server import RedisServer
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

CONFIG = Path(__file__).with_name("gateway.yaml")
MASTER = "sk-acceptance-master"
READER = "sk-acceptance-admin-reader"  # admin.keys in gateway.yaml: keys:read and audit:read only
REVOCATION_CONTRACT_S = 1.0  # the documented bound: a change on one replica holds on every other within 1 s


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(base_url: str, secret: str) -> str:
    """One chat completion through the openai SDK; its answer text."""
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0, timeout=30) as client:
        reply = client.chat.completions.create(
            model="mock-echo", messages=[{"role": "user", "content": f"admin {uuid.uuid4()}"}]
        )
    return reply.choices[0].message.content or ""


def in_process_only(gateway: Any) -> None:
    if gateway.live:
        pytest.skip("uses the admin key configured in tests/acceptance/gateway.yaml")


class Replicas:
    """Two gateways sharing one redis-server, each with a ledger of its own; restartable."""

    def __init__(self, configs: list[Path]) -> None:
        self.configs = configs
        self.urls: list[str] = []
        self._stack = ExitStack()

    def start(self) -> None:
        self.urls = [self._stack.enter_context(run_server(create_app(load_config(c)))) for c in self.configs]

    def stop(self) -> None:
        self._stack.close()
        self._stack = ExitStack()


@pytest.fixture(scope="module")
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts two replicas of its own on one Redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    folder = tmp_path_factory.mktemp("admin-replicas")
    with RedisServer() as redis:
        configs = []
        for name in ("a", "b"):
            data = yaml.safe_load(CONFIG.read_text())
            data["state"] = {"redis_url": redis.url}
            data["usage"] = {"database": str(folder / f"usage-{name}.sqlite3")}
            path = folder / f"gateway-{name}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            configs.append(path)
        group = Replicas(configs)
        group.start()
        try:
            yield group
        finally:
            group.stop()


@pytest.mark.feature("admin-api", step=(2, 3))
def test_a_key_made_on_one_replica_works_on_the_other_survives_restarts_and_its_revocation_reaches_both(
    replicas: Replicas,
) -> None:
    a, b = replicas.urls
    created = httpx.post(
        f"{a}/admin/v1/keys", json={"name": f"replicated-{uuid.uuid4()}"}, headers=bearer(MASTER), timeout=30
    )
    assert created.status_code == 201, created.text
    key = created.json()
    secret = key["secret"]
    assert ask(b, secret)  # made on A, used on B at once

    replicas.stop()  # both replicas down
    replicas.start()
    a, b = replicas.urls
    assert ask(a, secret) and ask(b, secret)
    assert httpx.get(f"{a}/admin/v1/keys/{key['id']}", headers=bearer(MASTER)).json()["name"] == key["name"]

    revoked = httpx.post(f"{b}/admin/v1/keys/{key['id']}/revoke", headers=bearer(MASTER), timeout=30)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    deadline = time.monotonic() + REVOCATION_CONTRACT_S
    while True:
        try:
            ask(a, secret)
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401
            break
        assert time.monotonic() < deadline, "replica A still accepted the key 1 s after B revoked it"
        time.sleep(0.05)
    with pytest.raises(openai.AuthenticationError):
        ask(b, secret)


@pytest.mark.feature("admin-api", step=1)
def test_an_admin_key_without_keys_write_may_read_but_not_create(gateway: Any) -> None:
    in_process_only(gateway)
    listed = gateway.client.get("/admin/v1/keys", headers=bearer(READER))
    assert listed.status_code == 200
    refused = gateway.client.post("/admin/v1/keys", json={"name": "not-allowed"}, headers=bearer(READER))
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert "keys:write" in refused.json()["error"]["message"]
    assert gateway.client.post("/admin/v1/keys", json={"name": "x"}).status_code == 401
    # A client key is known but no admin credential.
    assert gateway.client.get("/admin/v1/keys", headers=gateway.headers()).status_code == 403


@pytest.mark.feature("admin-api", step=3)
def test_keys_are_created_once_shown_updated_with_etags_rotated_and_revoked(
    gateway: Any,
) -> None:
    admin = gateway.admin_headers()
    name = f"lifecycle-{uuid.uuid4()}"
    idem = {**admin, "Idempotency-Key": str(uuid.uuid4())}
    first = gateway.client.post("/admin/v1/keys", json={"name": name, "models": ["mock-echo"]}, headers=idem)
    again = gateway.client.post("/admin/v1/keys", json={"name": name, "models": ["mock-echo"]}, headers=idem)
    assert first.status_code == again.status_code == 201
    key = first.json()
    assert again.json()["id"] == key["id"] and again.json()["secret"] == key["secret"]
    secret = key["secret"]
    assert ask(gateway.url, secret)

    shown = gateway.client.get(f"/admin/v1/keys/{key['id']}", headers=admin)
    assert secret not in shown.text and shown.json()["key"] == f"sk-gw-…{secret[-4:]}"
    bad = gateway.client.patch(f"/admin/v1/keys/{key['id']}", json={"rpm": "lots"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm"
    stale = gateway.client.patch(
        f"/admin/v1/keys/{key['id']}", json={"rpm": 100}, headers={**admin, "If-Match": '"stale"'}
    )
    assert stale.status_code == 412
    updated = gateway.client.patch(
        f"/admin/v1/keys/{key['id']}", json={"rpm": 100}, headers={**admin, "If-Match": shown.headers["etag"]}
    )
    assert updated.status_code == 200 and updated.json()["rpm"] == 100

    rotated = gateway.client.post(
        f"/admin/v1/keys/{key['id']}/rotate", json={"grace_period_s": 300}, headers=admin
    )
    new_secret = rotated.json()["secret"]
    assert ask(gateway.url, secret) and ask(gateway.url, new_secret)  # both work during the grace period
    assert gateway.client.delete(f"/admin/v1/keys/{key['id']}", headers=admin).status_code == 200
    for gone in (secret, new_secret):
        with pytest.raises(openai.AuthenticationError):
            ask(gateway.url, gone)


def audit_entries(gateway: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = gateway.client.get("/admin/v1/audit", params=params, headers=headers)
        assert page.status_code == 200, page.text
        entries.extend(page.json()["data"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return entries


@pytest.mark.feature("admin-api", step=4)
def test_the_audit_log_shows_each_change_and_never_a_secret(gateway: Any) -> None:
    admin = gateway.admin_headers()
    key = gateway.client.post(
        "/admin/v1/keys", json={"name": f"audited-{uuid.uuid4()}"}, headers=admin
    ).json()
    gateway.client.patch(f"/admin/v1/keys/{key['id']}", json={"tpm": 5000}, headers=admin)
    rotated = gateway.client.post(f"/admin/v1/keys/{key['id']}/rotate", headers=admin).json()
    gateway.client.post(f"/admin/v1/keys/{key['id']}/revoke", headers=admin)

    entries = audit_entries(gateway, admin)
    mine = [e for e in entries if e["target"] == key["id"]]
    assert [e["action"] for e in mine] == ["key.create", "key.update", "key.rotate", "key.revoke"]
    assert all(e["actor"]["id"] and e["at"] for e in mine)
    assert mine[1]["before"]["tpm"] is None and mine[1]["after"]["tpm"] == 5000
    everything = json.dumps(entries)
    for secret in (key["secret"], rotated["secret"]):
        assert secret not in everything
        assert hashlib.sha256(secret.encode()).hexdigest() not in everything
    if not gateway.live:
        assert audit_entries(gateway, bearer(READER)) == entries  # audit:read is enough


@pytest.mark.feature("admin-api", step=6)
def test_key_generate_works_the_way_a_litellm_client_script_calls_it(gateway: Any) -> None:
    master = gateway.admin_headers()["Authorization"].removeprefix("Bearer ")
    # What a LiteLLM management script sends: the master key as bearer, LiteLLM's field names.
    generated = httpx.post(
        f"{gateway.url}/key/generate",
        headers={"Authorization": f"Bearer {master}", "Content-Type": "application/json"},
        json={
            "key_alias": f"litellm-script-{uuid.uuid4()}",
            "models": ["mock-echo"],
            "duration": "30d",
            "max_budget": 10.0,
            "metadata": {"team": "migration"},
        },
        timeout=30,
    )
    assert generated.status_code == 200, generated.text
    body = generated.json()
    secret = body["key"]
    assert body["models"] == ["mock-echo"] and body["max_budget"] == 10.0 and body["expires"]
    assert ask(gateway.url, secret)
    info = httpx.get(f"{gateway.url}/key/info", params={"key": secret}, headers=bearer(master), timeout=30)
    assert info.status_code == 200 and info.json()["info"]["key_alias"] == body["key_alias"]
    assert secret not in json.dumps(info.json()["info"])
    updated = httpx.post(
        f"{gateway.url}/key/update", json={"key": secret, "rpm_limit": 50}, headers=bearer(master), timeout=30
    )
    assert updated.status_code == 200 and updated.json()["rpm_limit"] == 50
    deleted = httpx.post(
        f"{gateway.url}/key/delete", json={"keys": [secret]}, headers=bearer(master), timeout=30
    )
    assert deleted.json() == {"deleted_keys": [secret]}
    with pytest.raises(openai.AuthenticationError):
        ask(gateway.url, secret)


@pytest.mark.feature("admin-api", step=5)
def test_a_budget_reset_restores_service_to_a_key_that_spent_its_budget(gateway: Any) -> None:
    admin = gateway.admin_headers()
    key = gateway.client.post(
        "/admin/v1/keys",
        json={"name": f"spender-{uuid.uuid4()}", "models": ["budget-priced"],
              "budget": {"limit_usd": "0.01", "period": "total"}},
        headers=admin,
    ).json()  # fmt: skip
    body = {"model": "budget-priced", "max_tokens": 5, "messages": [{"role": "user", "content": "spend"}]}
    statuses = []
    for _ in range(100):
        reply = gateway.client.post("/v1/chat/completions", json=body, headers=bearer(key["secret"]))
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            assert reply.json()["error"]["code"] == "budget_exceeded"
            break
    assert statuses[0] == 200 and statuses[-1] == 429
    spent = gateway.client.get(f"/admin/v1/keys/{key['id']}/budget", headers=admin).json()
    assert float(spent["spent_usd"]) > 0 and float(spent["remaining_usd"]) < 0.01

    reset = gateway.client.post(f"/admin/v1/keys/{key['id']}/budget/reset", headers=admin)
    assert reset.status_code == 200 and float(reset.json()["spent_usd"]) == 0
    again = gateway.client.post("/v1/chat/completions", json=body, headers=bearer(key["secret"]))
    assert again.status_code == 200
    usage = gateway.client.get("/admin/v1/usage", params={"group_by": "key"}, headers=admin).json()
    assert any(
        group["key"] == key["name"] and group["requests"] == len(statuses) + 1 for group in usage["groups"]
    )


def gateway_keys(config: Path, *args: str) -> dict[str, Any]:
    """``gateway keys ...`` as an operator runs it, in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.feature("admin-api", step=7)
def test_the_gateway_keys_cli_manages_the_keys_a_running_gateway_serves(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if request.config.getoption("gateway_url"):
        pytest.skip("the CLI opens the admin store of a config file; this test starts the gateway using it")
    data = yaml.safe_load(CONFIG.read_text())
    data["usage"] = {"database": str(tmp_path / "usage.sqlite3")}  # the admin store sits beside it
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with run_server(create_app(load_config(config))) as url:
        created = gateway_keys(config, "create", "--name", f"cli-{uuid.uuid4()}", "--model", "mock-echo")
        assert ask(url, created["secret"])
        listed = gateway_keys(config, "list")
        assert created["id"] in [k["id"] for k in listed["data"]]
        assert created["secret"] not in json.dumps(listed)
        rotated = gateway_keys(config, "rotate", created["id"], "--grace-period-s", "0")
        assert ask(url, rotated["secret"])
        gateway_keys(config, "revoke", created["id"])
        deadline = time.monotonic() + REVOCATION_CONTRACT_S
        while True:
            try:
                ask(url, rotated["secret"])
            except openai.AuthenticationError:
                break
            assert time.monotonic() < deadline, (
                "the gateway still accepted the key 1 s after the CLI revoked it"
            )
            time.sleep(0.05)


class Operations:
    """Two gateways on one redis-server in front of an upstream the test can break and mend."""

    def __init__(self, urls: list[str], upstream: MockUpstream) -> None:
        self.urls = urls
        self.upstream = upstream


@pytest.fixture(scope="module")
def operations(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operations]:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts two replicas of its own on one Redis, with an upstream it can break")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    folder = tmp_path_factory.mktemp("admin-operations")
    upstream = MockUpstream(MockOptions())
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        upstream_url = stack.enter_context(run_server(upstream))
        data = yaml.safe_load(CONFIG.read_text())
        data["state"] = {"redis_url": redis.url}
        data["providers"].append(
            {"name": "mendable", "type": "openai", "base_url": f"{upstream_url}/v1", "api_key": "sk-up"}
        )
        data["models"] += [
            {"name": "mock-cached-other", "routes": [{"provider": "mock", "model": "mock-echo"}]},
            {"name": "mock-mendable", "routes": [{"provider": "mendable", "model": "mock-echo"}]},
        ]
        data["features"]["cache"]["models"]["mock-cached-other"] = {"enabled": True}
        # A cooldown far longer than the test: only the reset can end it.
        data["features"]["routing"] = {
            "max_attempts": 1,
            "cooldown": {"min_requests": 2, "window_seconds": 600, "seconds": 600, "max_seconds": 600},
        }
        configs = []
        for name in ("a", "b"):
            data["usage"] = {"database": str(folder / f"usage-{name}.sqlite3")}
            path = folder / f"gateway-{name}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            configs.append(path)
        urls = [stack.enter_context(run_server(create_app(load_config(c)))) for c in configs]
        yield Operations(urls, upstream)


def cache_status(base_url: str, secret: str, model: str, prompt: str) -> str:
    """``x-gateway-cache`` of one chat completion made with the openai SDK."""
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
    assert raw.parse().choices[0].message.content
    return raw.headers["x-gateway-cache"]


@pytest.mark.feature("admin-api", step=5)
def test_a_cache_purge_on_one_replica_misses_that_model_or_key_on_both_and_keeps_the_rest(
    operations: Operations,
) -> None:
    a, b = operations.urls
    keys = [
        httpx.post(f"{a}/admin/v1/keys", json={"name": f"cached-{n}-{uuid.uuid4()}"}, headers=bearer(MASTER))
        .json() for n in (1, 2)
    ]  # fmt: skip
    one, two = (k["secret"] for k in keys)
    prompt = f"purge me {uuid.uuid4()}"
    for model in ("mock-cached", "mock-cached-other"):
        for secret in (one, two):
            assert cache_status(a, secret, model, prompt) == "MISS"
            assert cache_status(b, secret, model, prompt) == "HIT"

    purged = httpx.post(f"{b}/admin/v1/cache/purge", json={"model": "mock-cached"}, headers=bearer(MASTER))
    assert purged.status_code == 200, purged.text
    assert cache_status(a, one, "mock-cached", prompt) == "MISS"
    assert cache_status(a, two, "mock-cached", prompt) == "MISS"
    assert cache_status(a, one, "mock-cached-other", prompt) == "HIT"

    by_key = {"key_id": keys[0]["id"]}
    assert httpx.post(f"{a}/admin/v1/cache/purge", json=by_key, headers=bearer(MASTER)).status_code == 200
    assert cache_status(b, one, "mock-cached-other", prompt) == "MISS"
    assert cache_status(b, two, "mock-cached-other", prompt) == "HIT"

    reader = httpx.post(f"{a}/admin/v1/cache/purge", json={"all": True}, headers=bearer(READER))
    assert reader.status_code == 403 and reader.json()["error"]["code"] == "insufficient_scope"
    audit = httpx.get(f"{b}/admin/v1/audit", params={"limit": 100}, headers=bearer(MASTER)).json()["data"]
    purges = [r["target"] for r in audit if r["action"] == "cache.purge"]
    assert purges[-2:] == [{"model": "mock-cached"}, by_key]


@pytest.mark.feature("admin-api", step=5)
def test_clearing_a_route_cooldown_on_one_replica_lets_the_route_answer_on_the_other_at_once(
    operations: Operations,
) -> None:
    a, b = operations.urls
    upstream = operations.upstream
    body = {"model": "mock-mendable", "messages": [{"role": "user", "content": "mend"}]}
    post = {"json": body, "headers": bearer(MASTER), "timeout": 30}
    upstream.options = MockOptions(fail_rate=1.0, fail_status=502)
    # Fail until the route is taken out: then a request is refused without reaching the upstream.
    for _ in range(20):
        before = upstream.stats["requests"]
        assert httpx.post(f"{a}/v1/chat/completions", **post).status_code >= 500
        if upstream.stats["requests"] == before:
            break
    assert upstream.stats["requests"] == before, "the failing route never cooled down"
    upstream.options = MockOptions()  # mended, but the route is out for 600 s
    assert httpx.post(f"{a}/v1/chat/completions", **post).status_code == 503
    assert upstream.stats["requests"] == before

    reset = httpx.post(f"{b}/admin/v1/routes/mendable/mock-echo/reset", headers=bearer(MASTER), timeout=30)
    assert reset.status_code == 200, reset.text
    assert reset.json()["state"] == "closed"
    answered = httpx.post(f"{a}/v1/chat/completions", **post)
    assert answered.status_code == 200, answered.text
    assert upstream.stats["requests"] == before + 1


@pytest.mark.feature("admin-api", step=9)
def test_a_runtime_teams_budget_and_model_list_hold_for_its_keys_and_its_status_shows_the_spend(
    gateway: Any,
) -> None:
    admin = gateway.admin_headers()
    team = f"acceptance-team-{uuid.uuid4().hex[:8]}"
    made = gateway.client.post(
        "/admin/v1/teams",
        json={"name": team, "models": ["budget-priced"], "budget": {"limit_usd": "0.01", "period": "total"}},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    key = gateway.client.post("/admin/v1/keys", json={"name": f"{team}-key", "team": team}, headers=admin)
    assert key.status_code == 201, key.text
    secret = key.json()["secret"]

    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0, timeout=30) as client:
        answered = 0
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(100):
                client.chat.completions.create(
                    model="budget-priced", max_tokens=5, messages=[{"role": "user", "content": "spend"}]
                )
                answered += 1
        assert answered > 0
        assert refused.value.code == "budget_exceeded" and f"team '{team}'" in refused.value.message
        # The key names no models of its own; the team's list is what it may call.
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="mock-echo", messages=[{"role": "user", "content": "hi"}])

    status = gateway.client.get(f"/admin/v1/teams/{team}/budget", headers=admin).json()
    assert status["scope"] == "team" and status["limit_usd"] == "0.01"
    assert float(status["spent_usd"]) > 0 and float(status["remaining_usd"]) < 0.01
    info = gateway.client.get("/team/info", params={"team_id": team}, headers=admin).json()
    assert info["team_info"]["max_budget"] == 0.01 and info["team_info"]["models"] == ["budget-priced"]
    assert [k["key_alias"] for k in info["keys"]] == [f"{team}-key"]


@pytest.mark.feature("admin-api", step=9)
def test_a_team_made_with_team_new_shares_one_rpm_allowance_across_keys_and_replicas_and_changes_reach_both(
    replicas: Replicas,
) -> None:
    a, b = replicas.urls
    team = f"replicated-team-{uuid.uuid4().hex[:8]}"
    # What a LiteLLM management script sends to make a team with a rate limit.
    made = httpx.post(
        f"{a}/team/new", json={"team_alias": team, "rpm_limit": 2}, headers=bearer(MASTER), timeout=30
    )
    assert made.status_code == 200 and made.json()["rpm_limit"] == 2, made.text
    secrets_ = []
    for url in (a, b):
        key = httpx.post(
            f"{url}/admin/v1/keys", json={"name": f"{team}-{len(secrets_)}", "team": team},
            headers=bearer(MASTER), timeout=30,
        )  # fmt: skip
        assert key.status_code == 201, key.text
        secrets_.append(key.json()["secret"])
    # One key on A, the other on B: the team's two requests a minute are spent, the third is refused.
    assert ask(a, secrets_[0]) and ask(b, secrets_[1])
    with pytest.raises(openai.RateLimitError) as refused:
        ask(a, secrets_[1])
    assert refused.value.code == "rate_limit_exceeded" and f"team '{team}'" in refused.value.message

    # The team's limit lifted on B holds on A within the sync interval, like a key change.
    lifted = httpx.patch(f"{b}/admin/v1/teams/{team}", json={"rpm": None}, headers=bearer(MASTER), timeout=30)
    assert lifted.status_code == 200 and lifted.json()["rpm"] is None
    deadline = time.monotonic() + REVOCATION_CONTRACT_S
    while True:
        try:
            assert ask(a, secrets_[0])
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "replica A still applied the team's rpm 1 s after B lifted it"
            time.sleep(0.05)
