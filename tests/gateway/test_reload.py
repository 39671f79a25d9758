"""Hot config reload (gateway/reload.py, gateway/runtime.py): triggers, validation, snapshots, retirement."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway import reload as reload_module
from gateway.app import Gateway, create_app
from gateway.config import load_config, parse_config
from gateway.reload import config_diff, redact, restart_problems
from gateway.runtime import Runtime, build_runtime

MASTER = "sk-reload-master-0001"
ALICE = "sk-reload-alice-0002"
BOB = "sk-reload-bob-0003"
CAROL = "sk-reload-carol-0004"
PROVIDER_SECRET = "sk-upstream-secret-0005"

pytestmark = pytest.mark.anyio


def config_text(
    db: Path,
    *,
    keys: str = "",
    reply: str = "old answer",
    extra: str = "",
    alice: str = "",
    price: int = 1000,
) -> str:
    """A config with alice and bob (plus ``keys``), one mock model answering ``reply``."""
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}{alice}}}
    - {{name: bob, key: {BOB}}}{keys}
providers:
  - {{name: fixed, type: mock, options: {{reply: "{reply}", chunk_size: 4}}}}
  - {{name: remote, type: openai, base_url: "http://127.0.0.1:9", api_key: {PROVIDER_SECRET}}}
models:
  - name: echo
    routes: [{{provider: fixed}}]
    pricing: {{input_per_1m: {price}, output_per_1m: {price}}}
usage:
  database: {db}
{extra}"""


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(tmp_path / "usage.sqlite3"))
    return path


def rewrite(path: Path, **changes: Any) -> None:
    """Replace the config file the way an editor or a ConfigMap update would: new file, then rename."""
    tmp = path.with_suffix(".new")
    tmp.write_text(config_text(path.parent / "usage.sqlite3", **changes))
    os.replace(tmp, path)


@asynccontextmanager
async def running(
    path: Path | None, *, config_text_: str | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    config = load_config(path) if config_text_ is None else parse_config(config_text_)
    app = create_app(config, config_path=path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield app, client


def gateway_of(app: FastAPI) -> Gateway:
    gateway = app.state.gateway
    assert isinstance(gateway, Gateway)
    return gateway


async def test_a_valid_change_is_applied_and_reported_by_name(config_file: Path) -> None:
    async with running(config_file) as (_, client):
        before = (await client.get("/admin/config", headers=auth(MASTER))).json()
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth(CAROL))
        ).status_code == 401
        # carol added, bob removed, alice changed (a rate limit), the model's reply changed.
        carol = f"\n    - {{name: carol, key: {CAROL}}}"
        rewrite(config_file, keys=carol, reply="new answer", alice=", rpm: 100")
        text = config_file.read_text().replace(f"    - {{name: bob, key: {BOB}}}\n", "")
        config_file.write_text(text)

        reply = await client.post("/admin/reload", headers=auth(MASTER))

        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "reloaded"
        assert body["previous_version"] == before["version"] != body["version"]
        assert body["changes"]["keys"] == {"added": ["carol"], "removed": ["bob"], "changed": ["alice"]}
        assert body["changes"]["models"] == {"added": [], "removed": [], "changed": []}
        assert body["changes"]["providers"]["changed"] == ["fixed"]
        assert "rate-limiting" in body["changes"]["features"]["enabled"]
        for secret in (CAROL, BOB, ALICE, MASTER, PROVIDER_SECRET):
            assert secret not in reply.text
        ok = await client.post("/v1/chat/completions", json=chat(), headers=auth(CAROL))
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"]["content"] == "new answer"
        assert (await client.post("/v1/chat/completions", json=chat(), headers=auth(BOB))).status_code == 401
        after = (await client.get("/admin/config", headers=auth(MASTER))).json()
        assert after["version"] == body["version"] and after["reloads"] == 1


async def test_an_unchanged_file_reloads_as_unchanged(config_file: Path) -> None:
    async with running(config_file) as (_, client):
        reply = await client.post("/admin/reload", headers=auth(MASTER))
        assert reply.status_code == 200
        assert reply.json()["status"] == "unchanged"
        assert reply.json()["version"] == reply.json()["previous_version"]


async def test_an_invalid_file_is_rejected_with_every_problem_and_the_running_config_kept(
    config_file: Path,
) -> None:
    async with running(config_file) as (_, client):
        version = (await client.get("/admin/config", headers=auth(MASTER))).json()["version"]
        text = config_file.read_text()
        text = text.replace("provider: fixed", "provider: fixd").replace(
            "chunk_size: 4", "chunk_size: 4, bogus: 1"
        )
        text += "\nserver: {max_body_bytes: -1}\n"
        config_file.write_text(text)

        reply = await client.post("/admin/reload", headers=auth(MASTER))

        assert reply.status_code == 422
        error = reply.json()["error"]
        assert error["code"] == "invalid_config"
        problems = "\n".join(error["problems"])
        assert "unknown provider 'fixd', did you mean 'fixed'?" in problems
        assert "server.max_body_bytes" in problems
        assert len(error["problems"]) >= 2
        assert reply.json()["version"] == version
        ok = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "old answer"
        assert (await client.get("/admin/config", headers=auth(MASTER))).json()["version"] == version


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("server: {port: 9999}", "server.port: changed from 8080 to 9999"),
        ("state: {redis_url: 'redis://:hunter2-password@127.0.0.1:6390/0'}", "state: the shared state store"),
    ],
)
async def test_a_change_that_needs_a_restart_is_rejected(config_file: Path, extra: str, named: str) -> None:
    async with running(config_file) as (app, client):
        runtime = gateway_of(app).runtime
        rewrite(config_file, extra=extra, keys=f"\n    - {{name: carol, key: {CAROL}}}")

        reply = await client.post("/admin/reload", headers=auth(MASTER))

        assert reply.status_code == 422
        assert reply.json()["error"]["code"] == "restart_required"
        assert any(named in p for p in reply.json()["error"]["problems"]), reply.text
        assert "hunter2" not in reply.text
        assert gateway_of(app).runtime is runtime  # nothing half-applied: carol is not in either
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth(CAROL))
        ).status_code == 401


async def test_without_a_config_file_there_is_nothing_to_reload(tmp_path: Path) -> None:
    async with running(None, config_text_=config_text(tmp_path / "u.sqlite3")) as (_, client):
        reply = await client.post("/admin/reload", headers=auth(MASTER))
        assert reply.status_code == 409
        assert reply.json()["error"]["code"] == "no_config_file"
        assert "nothing to reload" in reply.json()["error"]["message"].lower()
        assert (await client.post("/admin/reload", headers=auth(ALICE))).status_code == 401


async def test_admin_config_shows_the_version_and_redacts_secrets(config_file: Path) -> None:
    async with running(config_file) as (_, client):
        assert (await client.get("/admin/config", headers=auth(ALICE))).status_code == 401
        reply = await client.get("/admin/config", headers=auth(MASTER))
        assert reply.status_code == 200
        body = reply.json()
        assert body["source"] == str(config_file)
        assert body["reloadable"] is True and body["reloads"] == 0
        assert len(body["version"]) == 16 and body["loaded_at"]
        assert [k["name"] for k in body["config"]["auth"]["keys"]] == ["alice", "bob"]
        for secret in (ALICE, BOB, MASTER, PROVIDER_SECRET):
            assert secret not in reply.text


def test_redact_hides_keys_passwords_tokens_and_url_credentials() -> None:
    dump = {
        "auth": {"master_key": "m", "keys": [{"name": "a", "key": "k", "models": ["x"]}]},
        "providers": [
            {"api_key": "p", "options": {"Authorization": "Bearer t", "auth_token": "t", "reply": "r"}}
        ],
        "state": {"redis_url": "redis://user:pw@host:6379/0"},
        "server": {"tls": {"key_file": "/etc/key.pem", "key_password": "kp"}},
    }
    out = json.dumps(redact(dump))
    for secret in ('"m"', '"k"', '"p"', "Bearer t", '"t"', "pw", '"kp"'):
        assert secret not in out
    assert '"reply": "r"' in out and "/etc/key.pem" in out and '"models": ["x"]' in out
    assert "redis://***@host:6379/0" in out


def test_config_diff_names_features_switched_on_and_off(tmp_path: Path) -> None:
    old = parse_config(config_text(tmp_path / "u.sqlite3"))
    new = parse_config(config_text(tmp_path / "u.sqlite3", extra="features: {cache: {ttl_seconds: 60}}"))
    changes = config_diff(old, new)
    assert changes["features"]["enabled"] == ["response-caching"]
    assert changes["features"]["changed"] == ["cache"]
    assert config_diff(new, old)["features"]["disabled"] == ["response-caching"]
    assert restart_problems(old, new) == []


async def _drive_stream(app: FastAPI, gate: asyncio.Event, first_chunk: asyncio.Event) -> list[bytes]:
    """A streamed chat request straight over ASGI that pauses after its first body chunk until ``gate``."""
    body = json.dumps(chat("stream me", stream=True)).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("gateway", 80),
        "headers": [(b"authorization", f"Bearer {ALICE}".encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    received: list[bytes] = []
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if not first_chunk.is_set():
                first_chunk.set()
                await gate.wait()

    await app(scope, receive, send)
    return received


def _content(events: bytes) -> str:
    text = ""
    for line in events.decode().split("\n"):
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: ") :]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


async def test_a_stream_started_before_a_reload_finishes_on_the_old_config(config_file: Path) -> None:
    async with running(config_file) as (app, client):
        gateway = gateway_of(app)
        old = gateway.runtime
        gate, first = asyncio.Event(), asyncio.Event()
        stream = asyncio.ensure_future(_drive_stream(app, gate, first))
        await first.wait()
        assert old.in_flight == 1

        rewrite(config_file, reply="new answer")
        reloaded = await client.post("/admin/reload", headers=auth(MASTER))
        assert reloaded.json()["status"] == "reloaded"

        # New requests see the new config while the stream still holds the old one, open.
        fresh = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert fresh.json()["choices"][0]["message"]["content"] == "new answer"
        assert gateway.runtime is not old and old.retired and not old.closed
        gate.set()
        events = await stream
        assert _content(b"".join(events)) == "old answer"
        assert b"data: [DONE]" in b"".join(events)
        await gateway.reloader.wait_retired()
        assert old.in_flight == 0 and old.closed


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError("no upstream call expected")

    async def aclose(self) -> None:
        self.closed = True


async def test_an_old_runtime_closes_its_own_transport_once_its_requests_are_done(config_file: Path) -> None:
    async with running(config_file) as (app, _):
        gateway = gateway_of(app)
        transport = RecordingTransport()
        old = Runtime(gateway.config, gateway.shared, transport, owns_transport=True, source="test")
        old.acquire()
        gateway.reloader.retire(old)
        await asyncio.sleep(0)
        assert not transport.closed  # a request still uses it
        old.release()
        await gateway.reloader.wait_retired()
        assert transport.closed


async def test_a_drain_timeout_closes_an_old_runtime_that_never_drains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        config_text(tmp_path / "u.sqlite3", extra="features: {reload: {drain_timeout_seconds: 0.01}}")
    )
    async with running(path) as (app, _):
        gateway = gateway_of(app)
        transport = RecordingTransport()
        stuck = Runtime(gateway.config, gateway.shared, transport, owns_transport=True, source="test")
        stuck.acquire()
        gateway.reloader.retire(stuck)
        await gateway.reloader.wait_retired()
        assert transport.closed
        assert "still running" in caplog.text


async def test_an_injected_transport_is_shared_and_closed_only_with_the_app(tmp_path: Path) -> None:
    transport = RecordingTransport()
    config = parse_config(config_text(tmp_path / "u.sqlite3"))
    app = create_app(config, transport=transport)
    gateway = gateway_of(app)
    runtime = build_runtime(config, gateway.shared, transport=transport)
    assert not runtime.owns_transport
    await runtime.aclose()
    assert not transport.closed
    await gateway.close()
    assert transport.closed


async def test_rate_limit_and_budget_state_survive_a_reload(config_file: Path) -> None:
    rewrite(config_file, alice=", rpm: 3, budget: {limit_usd: 1000, period: total}")
    async with running(config_file) as (_, client):
        first = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        spent = (await client.get("/admin/budgets", headers=auth(MASTER))).json()
        rewrite(
            config_file,
            alice=", rpm: 3, budget: {limit_usd: 1000, period: total}",
            keys=f"\n    - {{name: carol, key: {CAROL}}}",
        )
        assert (await client.post("/admin/reload", headers=auth(MASTER))).json()["status"] == "reloaded"
        assert (await client.get("/admin/budgets", headers=auth(MASTER))).json() == spent
        second = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert second.headers["x-ratelimit-remaining-requests"] == "1"
        await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        limited = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert limited.status_code == 429


async def test_changed_limits_budgets_and_prices_apply_from_the_next_request(config_file: Path) -> None:
    # The stages keep what does not change between requests of a key and model (the limits' buckets and
    # step shapes, the budgets' windows, the prices) on the runtime's objects: a reload must not leave a
    # request on the old ones.
    rewrite(config_file, alice=", rpm: 3, budget: {limit_usd: 1000, period: total}")
    async with running(config_file) as (_, client):
        before = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert before.headers["x-ratelimit-limit-requests"] == "3"
        left = Decimal(before.headers["x-gateway-budget-remaining-usd"])
        assert 990 < left < 1000  # less what this request reserved (its most possible cost)
        rewrite(config_file, alice=", rpm: 5, budget: {limit_usd: 500, period: total}", price=2000)
        assert (await client.post("/admin/reload", headers=auth(MASTER))).json()["status"] == "reloaded"
        after = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert after.headers["x-ratelimit-limit-requests"] == "5"
        assert 480 < Decimal(after.headers["x-gateway-budget-remaining-usd"]) < 500
        # The same answer at twice the price costs twice as much (within the nano-dollar rounding).
        cost, doubled = (Decimal(r.headers["x-gateway-cost-usd"]) for r in (before, after))
        assert cost > 0 and abs(doubled - 2 * cost) <= Decimal("0.000000001")


async def test_sighup_reloads_the_file(config_file: Path) -> None:
    config = load_config(config_file)
    app = create_app(config, config_path=config_file, sighup=True)
    gateway = gateway_of(app)
    async with app.router.lifespan_context(app):
        assert gateway.reloader.handles_sighup
        rewrite(config_file, reply="new answer")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(500):  # the signal arrives on the next turns of the event loop
            if gateway.reloader.reloads:
                break
            await asyncio.sleep(0.01)
        assert gateway.reloader.reloads == 1
    assert not gateway.reloader.handles_sighup


async def test_the_watcher_reloads_when_the_content_changes(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    watch = "features: {reload: {watch: true, interval_seconds: 0.02}}"
    path.write_text(config_text(tmp_path / "usage.sqlite3", extra=watch))
    async with running(path) as (app, client):
        gateway = gateway_of(app)
        rewrite(path, extra=watch, reply="new answer")
        for _ in range(500):
            if gateway.reloader.reloads:
                break
            await asyncio.sleep(0.02)
        assert gateway.reloader.reloads == 1
        reply = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert reply.json()["choices"][0]["message"]["content"] == "new answer"


async def test_the_watcher_follows_a_configmap_style_symlink_swap(tmp_path: Path, monkeypatch: Any) -> None:
    # Kubernetes mounts gateway.yaml -> ..data/gateway.yaml and re-points ..data at a new directory.
    watch = "features: {reload: {watch: true, interval_seconds: 0.02}}"
    for version, reply in (("v1", "old answer"), ("v2", "new answer")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "gateway.yaml").write_text(
            config_text(tmp_path / "usage.sqlite3", extra=watch, reply=reply)
        )
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "gateway.yaml").symlink_to("..data/gateway.yaml")
    monkeypatch.chdir(tmp_path)
    async with running(Path("gateway.yaml")) as (app, client):
        gateway = gateway_of(app)
        config = (await client.get("/admin/config", headers=auth(MASTER))).json()
        assert config["source"] == str(tmp_path / "gateway.yaml")  # absolute, the symlink kept
        (tmp_path / "..data_tmp").symlink_to("v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        for _ in range(500):
            if gateway.reloader.reloads:
                break
            await asyncio.sleep(0.02)
        reply = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert reply.json()["choices"][0]["message"]["content"] == "new answer"


def test_gateway_run_reloads_its_config_file_on_sighup(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(tmp_path / "usage.sqlite3"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(path), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30  # a busy machine can be slow to start a process
        while not _answers(f"{url}/health"):
            assert process.poll() is None and time.monotonic() < deadline, "gateway run did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/models", headers=auth(CAROL)).status_code == 401
        rewrite(path, keys=f"\n    - {{name: carol, key: {CAROL}}}")
        process.send_signal(signal.SIGHUP)
        while httpx.get(f"{url}/v1/models", headers=auth(CAROL)).status_code != 200:
            assert process.poll() is None and time.monotonic() < deadline + 30, "SIGHUP did not reload"
            time.sleep(0.1)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "SIGHUP: config reloaded" in output and "keys +[carol]" in output
    assert CAROL not in output


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_config_that_fails_to_build_leaves_the_running_one(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Runtime:
        raise OSError("cannot load the upstream CA bundle")

    async with running(config_file) as (app, client):
        runtime = gateway_of(app).runtime
        rewrite(config_file, reply="new answer")
        monkeypatch.setattr(reload_module, "build_runtime", broken)
        reply = await client.post("/admin/reload", headers=auth(MASTER))
        assert reply.status_code == 422
        assert "building the new config failed: OSError: cannot load" in reply.json()["error"]["problems"][0]
        assert gateway_of(app).runtime is runtime
        ok = await client.post("/v1/chat/completions", json=chat(), headers=auth(ALICE))
        assert ok.json()["choices"][0]["message"]["content"] == "old answer"


async def test_metrics_report_the_config_version_and_reload_outcomes(config_file: Path) -> None:
    async with running(config_file) as (app, client):
        version = gateway_of(app).runtime.version
        text = (await client.get("/metrics", headers=auth(MASTER))).text
        assert f'gateway_config_info{{version="{version}"}} 1.0' in text
        assert "gateway_config_reloads_total 0.0" in text
        rewrite(config_file, reply="new answer")
        await client.post("/admin/reload", headers=auth(MASTER))
        config_file.write_text("models: [")
        await client.post("/admin/reload", headers=auth(MASTER))
        text = (await client.get("/metrics", headers=auth(MASTER))).text
        assert f'gateway_config_info{{version="{gateway_of(app).runtime.version}"}} 1.0' in text
        assert f'gateway_config_info{{version="{version}"}} 0.0' in text  # the replaced config
        assert "gateway_config_reloads_total 1.0" in text
        assert "gateway_config_last_reload_successful 0.0" in text


def test_sighup_outside_the_main_thread_is_reported_not_fatal(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(load_config(config_file), config_path=config_file, sighup=True)
    gateway = gateway_of(app)
    errors: list[BaseException] = []

    async def start_and_close() -> None:
        await gateway.start()
        assert not gateway.reloader.handles_sighup
        await gateway.close()

    def run() -> None:
        try:
            asyncio.run(start_and_close())
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not errors and not thread.is_alive()
    assert "SIGHUP reload unavailable" in caplog.text
