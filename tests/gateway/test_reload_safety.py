"""Reloads that cannot lock the gateway out: empty, comment-only and truncated files are refused, the
watcher keeps watching after a bad file, and removing the master key needs an explicit flag."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from gateway.app import Gateway, create_app
from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config

MASTER = "sk-safety-master-0001"
ALICE = "sk-safety-alice-0002"

pytestmark = pytest.mark.anyio


def config_text(db: Path, *, reply: str = "old answer", extra: str = "", master: bool = True) -> str:
    master_line = f"  master_key: {MASTER}\n" if master else ""
    return f"""# the gateway's config
auth:
{master_line}  keys:
    - {{name: alice, key: {ALICE}}}
providers:
  - {{name: fixed, type: mock, options: {{reply: "{reply}"}}}}
models:
  - name: echo
    routes: [{{provider: fixed}}]
usage:
  database: {db}
features:
  reload: {{watch: true, interval_seconds: 0.01{extra}}}
"""


def replace(path: Path, text: str) -> None:
    """Replace the file the way an editor or a ConfigMap update would: new file, then rename."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(tmp_path / "usage.sqlite3"))
    return path


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(load_config(path), config_path=path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield app, client


async def attempted(gateway: Gateway, count: int) -> None:
    """Wait until the watcher has tried ``count`` reloads (an event-like wait on its counter)."""
    async with asyncio.timeout(60):
        while gateway.reloader.attempts < count:
            await asyncio.sleep(0.01)


EMPTY_FILES = {
    "empty": "",
    "blank": "\n\n   \n",
    "comments only": "# everything was commented out\n# auth:\n#   master_key: x\n",
}


@pytest.mark.parametrize("text", EMPTY_FILES.values(), ids=EMPTY_FILES.keys())
def test_an_empty_or_comment_only_file_is_a_config_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "empty" in str(caught.value)


def test_gateway_check_and_run_refuse_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    for command in (["check", str(path)], ["run", "--config", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and "empty" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("text", EMPTY_FILES.values(), ids=EMPTY_FILES.keys())
async def test_the_watcher_refuses_an_empty_file_and_keeps_watching(config_file: Path, text: str) -> None:
    async with running(config_file) as (app, client):
        gateway: Gateway = app.state.gateway
        await attempted(gateway, 0)
        replace(config_file, text)
        await attempted(gateway, 1)

        assert not gateway.reloader.last_ok
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(ALICE))).status_code == 200
        assert (await client.get("/admin/config", headers=auth(MASTER))).status_code == 200

        # The watcher still runs: a good file afterwards is applied without SIGHUP.
        replace(config_file, config_text(config_file.parent / "usage.sqlite3", reply="new answer"))
        await attempted(gateway, 2)
        assert gateway.reloader.last_ok and gateway.reloader.reloads == 1
        reply = await client.post("/v1/chat/completions", json=CHAT, headers=auth(ALICE))
        assert reply.json()["choices"][0]["message"]["content"] == "new answer"


async def test_a_truncated_file_never_locks_the_admin_api_out(config_file: Path) -> None:
    full = config_file.read_text()
    async with running(config_file) as (app, client):
        gateway: Gateway = app.state.gateway
        tries = 0
        # Cut the file at every line and inside lines, the way a half-written copy looks. A valid prefix
        # that still has a master key is indistinguishable from an ordinary edit (a rotated master key).
        for cut in sorted({i + 1 for i, c in enumerate(full) if c == "\n"} | set(range(0, len(full), 5))):
            text = full[:cut]
            if "master_key" in text and parse_ok(text):
                continue
            replace(config_file, text)
            tries += 1
            await attempted(gateway, tries)
            assert not gateway.reloader.last_ok, f"a file cut at {cut} was applied: {text!r}"
            assert (await client.get("/admin/config", headers=auth(MASTER))).status_code == 200
        assert tries >= 5 and gateway.reloader.reloads == 0


def parse_ok(text: str) -> bool:
    try:
        parse_config(text)
    except ConfigError:
        return False
    return True


async def test_removing_the_master_key_by_reload_needs_the_explicit_flag(config_file: Path) -> None:
    db = config_file.parent / "usage.sqlite3"
    async with running(config_file) as (app, client):
        gateway: Gateway = app.state.gateway
        replace(config_file, config_text(db, master=False))
        reply = await client.post("/admin/reload", headers=auth(MASTER))
        assert reply.status_code == 422, reply.text
        error = reply.json()["error"]
        assert error["code"] == "master_key_removal"
        assert any("auth.master_key" in p and "allow_master_key_removal" in p for p in error["problems"]), (
            error
        )
        assert MASTER not in reply.text
        assert (await client.get("/admin/config", headers=auth(MASTER))).status_code == 200

        # Said on purpose in the new file: applied, and the admin API is closed from then on.
        replace(config_file, config_text(db, master=False, extra=", allow_master_key_removal: true"))
        reply = await client.post("/admin/reload", headers=auth(MASTER))
        assert reply.status_code == 200, reply.text
        assert "auth.master_key" in reply.json()["changes"]["other"]
        assert (await client.get("/admin/config", headers=auth(MASTER))).status_code == 401
        assert gateway.reloader.reloads == 1


async def test_the_watcher_survives_an_unexpected_error_while_reloading(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(config_file) as (app, client):
        gateway: Gateway = app.state.gateway
        calls = 0
        original = gateway.reloader.reload

        async def flaky() -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("disk went away")
            return await original()

        monkeypatch.setattr(gateway.reloader, "reload", flaky)
        replace(config_file, config_text(config_file.parent / "usage.sqlite3", reply="new answer"))
        # The first try fails unexpectedly; the watcher logs it, stays up and tries again.
        async with asyncio.timeout(60):
            while gateway.reloader.reloads < 1:
                await asyncio.sleep(0.01)
        assert calls >= 2
        reply = await client.post("/v1/chat/completions", json=CHAT, headers=auth(ALICE))
        assert reply.json()["choices"][0]["message"]["content"] == "new answer"
