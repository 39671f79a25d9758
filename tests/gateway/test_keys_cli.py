"""``gateway keys``: the CLI door onto the admin library, sharing the admin store a gateway uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from click.testing import CliRunner
from gateway_testing import chat, run_server

from gateway.app import create_app
from gateway.cli import main
from gateway.config import load_config

MASTER = "sk-keys-cli-master"


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""
auth: {{master_key: {MASTER}}}
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock}}]}}]
usage: {{database: "{tmp_path / "usage.sqlite3"}"}}
"""
    )
    return path


def keys(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["keys", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_key_made_by_the_cli_works_in_the_gateway_and_its_revocation_too(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    created = keys("create", "--config", str(config), "--name", "from-cli", "--model", "echo", "--rpm", "60")
    secret = str(created["secret"])
    assert created["models"] == ["echo"] and created["rpm"] == 60
    with run_server(create_app(load_config(config))) as url, httpx.Client(base_url=url) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        assert (client.post("/v1/chat/completions", json=chat(), headers=auth)).status_code == 200
        listed = keys("list", "--config", str(config))
        assert [k["name"] for k in listed["data"]] == ["from-cli"]  # type: ignore[index]
        assert secret not in json.dumps(listed)
        rotated = keys("rotate", "--config", str(config), str(created["id"]), "--grace-period-s", "0")
        assert rotated["secret"] != secret
        keys("revoke", "--config", str(config), str(created["id"]))
        # The gateway's cache is dropped within its sync interval (0.5 s): poll, bounded.
        refused = 0
        for _ in range(200):
            reply = client.post(
                "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {rotated['secret']}"}
            )
            if reply.status_code == 401:
                refused += 1
                break
            time.sleep(0.02)
        assert refused == 1
        audit = client.get("/admin/v1/audit", headers={"Authorization": f"Bearer {MASTER}"})
        actions = [(e["action"], e["actor"]["id"]) for e in audit.json()["data"]]
        assert actions == [("key.create", "cli"), ("key.rotate", "cli"), ("key.revoke", "cli")]


def test_bad_options_and_unknown_keys_are_errors_not_tracebacks(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bad = CliRunner().invoke(main, ["keys", "create", "--config", str(config), "--name", "x", "--rpm", "0"])
    assert bad.exit_code == 2 and "--rpm" in bad.output and "Traceback" not in bad.output
    unknown = CliRunner().invoke(main, ["keys", "revoke", "--config", str(config), "key_nope"])
    assert unknown.exit_code == 1 and "No key with id 'key_nope'" in unknown.output
