"""The WebSocket transport (/v1/ws/chat) on uvicorn on a loopback port, driven by the websockets client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testing import MASTER_KEY, run_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gateway.app import create_app
from gateway.config import parse_config

KEY = "sk-ws-alice-0001"
TIGHT = "sk-ws-tight-0002"

CONFIG = f"""
auth:
  master_key: {MASTER_KEY}
  keys:
    - {{name: alice, key: {KEY}}}
    - {{name: tight, key: {TIGHT}, max_concurrent: 1, budget: {{limit_usd: 1000, period: total}}}}
providers:
  - {{name: mock, type: mock, options: {{chunk_size: 4}}}}
  - {{name: slow, type: mock, options: {{chunk_size: 2, chunk_delay_ms: 100}}}}
models:
  - {{name: echo, routes: [{{provider: mock, model: mock-echo}}]}}
  - name: slow
    routes: [{{provider: slow, model: mock-echo, pricing: {{input_per_1m: 100, output_per_1m: 200}}}}]
usage: {{database: ":memory:"}}
"""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_server(create_app(parse_config(CONFIG, "ws.yaml")), ws="auto") as base:
        yield base


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/v1/ws/chat"


def socket(base: str, key: str = KEY, **options: Any) -> ClientConnection:
    headers = {"authorization": f"Bearer {key}"} if key else None
    return connect(ws_url(base), additional_headers=headers, open_timeout=10, **options)


def request(rid: str, content: str, model: str = "echo", **extra: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps({"type": "chat.request", "id": rid, "body": body})


def frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=10))  # type: ignore[no-any-return]


def until_end(ws: ClientConnection, rid: str | None = None) -> list[dict[str, Any]]:
    """Frames up to and including the first done/error/cancelled frame (of ``rid`` when given)."""
    frames = []
    while True:
        f = frame(ws)
        frames.append(f)
        if f["type"] in ("chat.done", "chat.error", "chat.cancelled") and (rid is None or f.get("id") == rid):
            return frames


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(
        c["delta"].get("content") or ""
        for f in frames
        if f["type"] == "chat.chunk"
        for c in f["chunk"]["choices"]
    )


def test_a_bad_key_closes_with_4401(url: str) -> None:
    with socket(url, key="sk-nope") as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


def test_no_key_closes_with_4401_and_query_keys_are_not_accepted(url: str) -> None:
    with (
        connect(ws_url(url) + f"?key={KEY}", open_timeout=10) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_the_subprotocol_carries_the_key_and_only_gateway_v1_is_echoed(url: str) -> None:
    protocols = ["gateway.v1", f"gateway.bearer.{KEY}"]
    with connect(ws_url(url), subprotocols=protocols, open_timeout=10) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "gateway.v1"
        ws.send(request("r1", "via subprotocol"))
        frames = until_end(ws)
    assert frames[-1]["type"] == "chat.done"
    assert text_of(frames) == "via subprotocol"


def test_frames_concatenate_to_the_http_stream_text(url: str) -> None:
    content = "the same words over both transports"
    with httpx.Client(base_url=url, timeout=10) as client:
        body = {"model": "echo", "messages": [{"role": "user", "content": content}], "stream": True}
        response = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    events = [json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]
    http_text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    with socket(url) as ws:
        ws.send(request("r1", content))
        frames = until_end(ws)
    assert text_of(frames) == http_text == content
    assert all(f["id"] == "r1" for f in frames)
    done = frames[-1]
    assert done["type"] == "chat.done"
    assert done["usage"]["completion_tokens"] > 0
    assert done["headers"]["x-request-id"]


def test_two_requests_are_multiplexed_on_one_socket(url: str) -> None:
    with socket(url) as ws:
        ws.send(request("a", "first answer is slow", model="slow"))
        ws.send(request("b", "second"))
        frames = until_end(ws, "a")
        while not any(f["type"] == "chat.done" and f["id"] == "b" for f in frames):
            frames.append(frame(ws))
    by_id = {rid: [f for f in frames if f["id"] == rid] for rid in ("a", "b")}
    assert text_of(by_id["a"]) == "first answer is slow"
    assert text_of(by_id["b"]) == "second"
    # b (fast) finished while a (slow) was still streaming.
    done_b = frames.index(next(f for f in frames if f["type"] == "chat.done" and f["id"] == "b"))
    done_a = frames.index(next(f for f in frames if f["type"] == "chat.done" and f["id"] == "a"))
    assert done_b < done_a


def test_cancel_stops_the_stream_and_releases_lease_and_reservation(url: str) -> None:
    long_text = "word " * 60
    with socket(url, key=TIGHT) as ws:
        ws.send(request("long", long_text, model="slow", max_tokens=500))
        first = frame(ws)
        assert first["type"] == "chat.chunk"
        ws.send(json.dumps({"type": "chat.cancel", "id": "long"}))
        frames = until_end(ws, "long")
        assert frames[-1] == {"type": "chat.cancelled", "id": "long"}
        assert len(text_of([first, *frames])) < len(long_text)
        # max_concurrent 1: the lease is free again, so the next request is not refused.
        ws.send(request("next2", "after cancel", model="slow"))
        after = until_end(ws, "next2")
    assert after[-1]["type"] == "chat.done", after[-1]
    assert text_of(after) == "after cancel"
    with httpx.Client(base_url=url, timeout=10) as client:
        rows = client.get("/admin/budgets", headers={"authorization": f"Bearer {MASTER_KEY}"}).json()[
            "budgets"
        ]
    tight = next(r for r in rows if r["name"] == "tight")
    assert tight["reserved_usd"] == "0"
    assert tight["spent_usd"] != "0"


def test_errors_are_frames_and_keep_the_socket_open(url: str) -> None:
    with socket(url) as ws:
        ws.send("{not json")
        bad = frame(ws)
        assert bad["type"] == "chat.error" and bad["id"] is None and bad["status"] == 400
        assert bad["error"]["error"]["type"] == "invalid_request_error"
        ws.send(request("unknown", "hi", model="no-such-model"))
        missing = frame(ws)
        assert (missing["type"], missing["id"], missing["status"]) == ("chat.error", "unknown", 404)
        ws.send(json.dumps({"type": "chat.request", "id": "nobody"}))
        assert frame(ws)["status"] == 400
        ws.send(json.dumps({"type": "ping"}))
        assert frame(ws) == {"type": "pong"}
        ws.send(request("ok", "still open"))
        assert text_of(until_end(ws)) == "still open"


def test_an_oversized_message_closes_with_1009(url: str) -> None:
    with socket(url) as ws:
        ws.send(request("big", "x" * (1 << 20)))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_requests_beyond_the_in_flight_bound_are_refused(url: str) -> None:
    with socket(url) as ws:
        for i in range(5):
            ws.send(request(f"r{i}", "slow enough to overlap " * 3, model="slow"))
        frames: list[dict[str, Any]] = []
        started = time.monotonic()
        while (
            sum(f["type"] in ("chat.done", "chat.error") for f in frames) < 5
            and time.monotonic() - started < 30
        ):
            frames.append(frame(ws))
    refused = [f for f in frames if f["type"] == "chat.error"]
    assert [f["id"] for f in refused] == ["r4"]
    assert refused[0]["status"] == 429 and refused[0]["error"]["error"]["code"] == "too_many_in_flight"


def test_a_key_revoked_by_a_reload_closes_its_open_socket_with_4401(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(parse_config(CONFIG, str(path)), config_path=path)
    admin = {"authorization": f"Bearer {MASTER_KEY}"}
    with run_server(app, ws="auto") as base, socket(base, key=TIGHT) as ws:
        ws.send(request("before", "still valid", model="slow"))
        assert until_end(ws)[-1]["type"] == "chat.done"
        path.write_text(
            CONFIG.replace(f"    - {{name: tight, key: {TIGHT}", "    - {name: gone, key: sk-ws-other")
        )
        assert httpx.post(f"{base}/admin/reload", headers=admin, timeout=10).json()["status"] == "reloaded"
        ws.send(request("after", "no longer", model="slow"))
        refused = frame(ws)
        assert (refused["type"], refused["id"], refused["status"]) == ("chat.error", "after", 401)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
