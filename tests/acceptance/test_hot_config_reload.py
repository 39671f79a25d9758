"""Acceptance: hot config reload (POST /admin/reload, GET /admin/config), black-box over HTTP.

Tests that edit a config file start their own in-process gateway from a copy of `gateway.yaml` (the shared
file and the module's gateway stay untouched) and skip against a live gateway, whose file they cannot
edit. The rest run against the `gateway` fixture, live or in process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config

pytestmark = pytest.mark.feature("hot-config-reload")

SHARED_CONFIG = Path(__file__).with_name("gateway.yaml")
MASTER_KEY = "sk-acceptance-master"
KEY = "sk-acceptance"


@dataclass
class ReloadableGateway:
    """An in-process gateway started from `path`, which the test may rewrite."""

    path: Path
    client: httpx.Client

    def edit(self, change: Any) -> None:
        """Apply `change(data)` to the YAML and replace the file whole (new file, then rename)."""
        data = yaml.safe_load(self.path.read_text())
        change(data)
        self.write(yaml.safe_dump(data, sort_keys=False))

    def write(self, text: str) -> None:
        """Replace the file with `text`, the way an editor or a ConfigMap update does."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def reload(self) -> httpx.Response:
        """POST /admin/reload with the master key."""
        return self.client.post("/admin/reload", headers=admin())

    def chat(self, key: str) -> httpx.Response:
        """A chat completion on mock-echo with `key`."""
        body = {"model": "mock-echo", "messages": [{"role": "user", "content": f"reload {uuid.uuid4()}"}]}
        return self.client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def reloadable(gateway: Any, tmp_path: Path) -> Iterator[ReloadableGateway]:
    """A gateway of its own serving a copy of gateway.yaml; skipped against a live gateway."""
    if gateway.live:
        pytest.skip("rewrites its gateway's config file: cannot edit a live gateway's file")
    path = tmp_path / "gateway.yaml"
    path.write_text(SHARED_CONFIG.read_text())
    app = create_app(load_config(path), config_path=path)
    with run_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield ReloadableGateway(path, client)


def add_key(name: str, key: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["auth"]["keys"].append({"name": name, "key": key, "models": ["mock-echo"]})

    return change


@pytest.mark.feature("hot-config-reload", step=(1, 3, 4, 7))
def test_a_key_added_to_the_file_works_after_a_reload(reloadable: ReloadableGateway) -> None:
    new_key = f"sk-acceptance-reload-{uuid.uuid4().hex[:12]}"
    assert reloadable.chat(new_key).status_code == 401
    reloadable.edit(add_key("reload-added", new_key))

    reply = reloadable.reload()

    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "reloaded"
    assert reply.json()["changes"]["keys"]["added"] == ["reload-added"]
    assert new_key not in reply.text  # the diff names keys, never their values
    assert reloadable.chat(new_key).status_code == 200
    assert reloadable.chat(KEY).status_code == 200


@pytest.mark.feature("hot-config-reload", step=(3, 4, 7))
def test_a_key_removed_from_the_file_stops_working_after_a_reload(reloadable: ReloadableGateway) -> None:
    doomed = f"sk-acceptance-reload-{uuid.uuid4().hex[:12]}"
    reloadable.edit(add_key("reload-doomed", doomed))
    assert reloadable.reload().status_code == 200
    assert reloadable.chat(doomed).status_code == 200

    def remove(data: dict[str, Any]) -> None:
        data["auth"]["keys"] = [k for k in data["auth"]["keys"] if k["name"] != "reload-doomed"]

    reloadable.edit(remove)
    reply = reloadable.reload()

    assert reply.json()["changes"]["keys"]["removed"] == ["reload-doomed"]
    assert reloadable.chat(doomed).status_code == 401


@pytest.mark.feature("hot-config-reload", step=(3, 7))
def test_an_invalid_file_is_rejected_with_every_error_and_the_old_config_keeps_serving(
    reloadable: ReloadableGateway,
) -> None:
    version = reloadable.client.get("/admin/config", headers=admin()).json()["version"]
    broken = reloadable.path.read_text().replace("provider: mock,", "provider: mokc,", 1)
    broken += "\nsurprise: true\n"
    reloadable.write(broken)

    reply = reloadable.reload()

    assert reply.status_code == 422
    problems = reply.json()["error"]["problems"]
    assert any("unknown provider 'mokc'" in p for p in problems), problems
    assert any("unknown key 'surprise'" in p for p in problems), problems
    assert reloadable.client.get("/admin/config", headers=admin()).json()["version"] == version
    assert reloadable.chat(KEY).status_code == 200


@pytest.mark.feature("hot-config-reload", step=(5, 7))
def test_admin_config_reports_the_running_version_with_secrets_redacted(gateway: Any) -> None:
    reply = gateway.client.get("/admin/config", headers=gateway.admin_headers())

    assert reply.status_code == 200
    body = reply.json()
    assert body["version"] and body["loaded_at"] and body["source"]
    assert body["config"]["auth"]["keys"]
    assert gateway.key not in reply.text
    assert gateway.master_key not in reply.text


@pytest.mark.feature("hot-config-reload", step=(4, 5, 7))
def test_reload_and_config_need_the_master_key(gateway: Any) -> None:
    for method, path in (("POST", "/admin/reload"), ("GET", "/admin/config")):
        reply = gateway.client.request(method, path, headers=gateway.headers())
        assert reply.status_code == 401, (method, path)


@pytest.mark.feature("hot-config-reload", step=(2, 6, 7))
def test_a_stream_started_before_a_reload_finishes_on_the_old_route(reloadable: ReloadableGateway) -> None:
    """In-flight requests keep the runtime they started with; new ones get the reloaded one."""
    prompt = "the old route streams this sentence two characters at a time " * 2
    body = {"model": "ws-slow", "messages": [{"role": "user", "content": prompt}], "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}

    def reroute(data: dict[str, Any]) -> None:
        model = next(m for m in data["models"] if m["name"] == "ws-slow")
        model["routes"] = [{"provider": "mock-fixed", "model": "mock-hello"}]

    with reloadable.client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as old:
        lines = old.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))  # the stream is under way
        reloadable.edit(reroute)
        assert reloadable.reload().status_code == 200
        fresh = reloadable.client.post(
            "/v1/chat/completions", json={**body, "stream": False}, headers=headers
        )
        rest = [first, *(line for line in lines if line)]
    assert old.headers["x-gateway-route"] == "ws-slow/mock-echo"
    assert rest[-1] == "data: [DONE]"
    chunks = [yaml.safe_load(line.removeprefix("data: ")) for line in rest[:-1] if line.startswith("data: ")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip() == prompt.strip()  # the whole answer, from the route it started on
    assert fresh.status_code == 200 and fresh.headers["x-gateway-route"] == "mock-fixed/mock-hello"


@pytest.mark.feature("hot-config-reload", step=(6, 7))
def test_rate_limit_state_survives_a_reload(reloadable: ReloadableGateway) -> None:
    body = {"model": "mock-limited", "messages": [{"role": "user", "content": f"limit {uuid.uuid4()}"}]}
    headers = {"Authorization": "Bearer sk-acceptance-rl-rpm"}  # rpm: 3
    statuses = [reloadable.client.post("/v1/chat/completions", json=body, headers=headers).status_code]
    while statuses[-1] == 200 and len(statuses) < 10:
        statuses.append(
            reloadable.client.post("/v1/chat/completions", json=body, headers=headers).status_code
        )
    assert statuses[-1] == 429, statuses

    reloadable.edit(add_key("reload-unrelated", f"sk-acceptance-reload-{uuid.uuid4().hex[:12]}"))
    assert reloadable.reload().status_code == 200

    again = reloadable.client.post("/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 429  # the key's used-up limit was not reset by the reload
