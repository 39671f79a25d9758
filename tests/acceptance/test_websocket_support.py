"""Acceptance: the WebSocket transport GET /v1/ws/chat, black-box against the gateway under test.

Uses the `websockets` client on the ws:// (or wss://) URL derived from the gateway's base URL; works against
a live gateway serving tests/acceptance/gateway.yaml (the ws-tight key and the ws-slow model are its own).
"""

from __future__ import annotations

import json
import signal
import ssl
import uuid
from typing import Any

import pytest
from gateway_process import gateway_process
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.feature("websocket-support")

TIGHT_KEY = "sk-acceptance-ws-tight"


def ws_url(gateway: Any) -> str:
    base = str(gateway.url).rstrip("/")
    scheme, _, rest = base.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/v1/ws/chat"


def open_socket(gateway: Any, key: str | None = None, **options: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key or gateway.key}"}
    if ws_url(gateway).startswith("wss://"):
        options.setdefault("ssl", ssl.create_default_context())
    return connect(ws_url(gateway), additional_headers=headers, open_timeout=15, **options)


def request(rid: str, content: str, model: str = "mock-echo", **extra: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps({"type": "chat.request", "id": rid, "body": body})


def frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=15))  # type: ignore[no-any-return]


def until_end(ws: ClientConnection, rid: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        f = frame(ws)
        frames.append(f)
        if f.get("id") == rid and f["type"] in ("chat.done", "chat.error", "chat.cancelled"):
            return frames


def text_of(frames: list[dict[str, Any]], rid: str) -> str:
    return "".join(
        c["delta"].get("content") or ""
        for f in frames
        if f["type"] == "chat.chunk" and f["id"] == rid
        for c in f["chunk"]["choices"]
    )


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


@pytest.mark.feature("websocket-support", step=(6, 7))
def test_a_bad_key_is_closed_with_4401(gateway: Any) -> None:
    with open_socket(gateway, key="sk-not-a-key") as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=15)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


@pytest.mark.feature("websocket-support", step=7)
def test_the_streamed_frames_carry_the_same_text_as_the_http_stream(gateway: Any) -> None:
    content = unique("websocket and sse agree")
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": content}], "stream": True}
    response = gateway.client.post("/v1/chat/completions", json=body, headers=gateway.headers())
    assert response.status_code == 200
    events = [json.loads(e[6:]) for e in response.text.split("\n\n") if e.startswith("data: {")]
    http_text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    with open_socket(gateway) as ws:
        ws.send(request("q1", content))
        frames = until_end(ws, "q1")
    assert text_of(frames, "q1") == http_text == content
    assert frames[-1]["type"] == "chat.done"
    assert frames[-1]["usage"]["total_tokens"] > 0


@pytest.mark.feature("websocket-support", step=(4, 7))
def test_two_requests_share_one_socket(gateway: Any) -> None:
    first, second = unique("first"), unique("second")
    with open_socket(gateway) as ws:
        ws.send(request("one", first))
        ws.send(request("two", second))
        frames: list[dict[str, Any]] = []
        while {f["id"] for f in frames if f["type"] == "chat.done"} != {"one", "two"}:
            f = frame(ws)
            assert f["type"] != "chat.error", f
            frames.append(f)
    assert text_of(frames, "one") == first
    assert text_of(frames, "two") == second


@pytest.mark.feature("websocket-support", step=(6, 7))
def test_errors_are_frames_and_the_socket_stays_open(gateway: Any) -> None:
    with open_socket(gateway) as ws:
        ws.send("this is not json")
        bad = frame(ws)
        assert (bad["type"], bad["id"], bad["status"]) == ("chat.error", None, 400)
        assert bad["error"]["error"]["type"] == "invalid_request_error"
        ws.send(request("nope", "hi", model="no-such-model-anywhere"))
        missing = frame(ws)
        assert (missing["type"], missing["id"], missing["status"]) == ("chat.error", "nope", 404)
        content = unique("still answering")
        ws.send(request("after", content))
        assert text_of(until_end(ws, "after"), "after") == content


@pytest.mark.feature("websocket-support", step=(4, 6, 7))
def test_cancel_mid_stream_frees_the_concurrency_slot_and_the_budget_reservation(gateway: Any) -> None:
    long_text = unique("many words " * 40)
    with open_socket(gateway, key=TIGHT_KEY) as ws:
        ws.send(request("long", long_text, model="ws-slow", max_tokens=400))
        first = frame(ws)
        assert first["type"] == "chat.chunk", first
        ws.send(json.dumps({"type": "chat.cancel", "id": "long"}))
        frames = until_end(ws, "long")
        assert frames[-1] == {"type": "chat.cancelled", "id": "long"}
        assert len(text_of([first, *frames], "long")) < len(long_text)
        # The key allows one request in flight: this one is admitted only if the cancel released the lease.
        content = unique("after the cancel")
        ws.send(request("next", content, model="ws-slow"))
        after = until_end(ws, "next")
    assert after[-1]["type"] == "chat.done", after[-1]
    assert text_of(after, "next") == content
    if gateway.master_key is not None:  # a live gateway given no master key: the lease check above stands
        rows = gateway.client.get("/admin/budgets", headers=gateway.admin_headers()).json()["budgets"]
        tight = next(r for r in rows if r["name"] == "ws-tight")
        assert tight["reserved_usd"] == "0"


@pytest.mark.feature("websocket-support", step=(6, 7))
def test_an_oversized_message_closes_with_1009(gateway: Any) -> None:
    with open_socket(gateway, max_size=None) as ws:
        ws.send(request("big", "x" * (1 << 20)))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=15)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


ALLOWED_ORIGIN = "https://console.acceptance.example"  # features.websocket.allowed_origins in gateway.yaml


@pytest.mark.feature("websocket-support", step=(1, 2, 7))
def test_only_the_configured_browser_origins_may_open_a_socket(gateway: Any) -> None:
    with open_socket(gateway, origin=ALLOWED_ORIGIN) as ws:
        content = unique("from the allowed origin")
        ws.send(request("ok", content))
        assert text_of(until_end(ws, "ok"), "ok") == content
    with pytest.raises(InvalidStatus) as refused:
        open_socket(gateway, origin="https://elsewhere.example")
    assert refused.value.response.status_code == 403
    error = json.loads(refused.value.response.body or b"{}")["error"]
    assert error["code"] == "origin_not_allowed"


@pytest.mark.feature("websocket-support", step=(3, 7))
def test_both_transports_send_the_usage_chunk_only_when_asked(gateway: Any) -> None:
    def http_usage_chunks(**extra: Any) -> int:
        body = {"model": "mock-echo", "messages": [{"role": "user", "content": unique("u")}], **extra}
        text = gateway.client.post(
            "/v1/chat/completions", json={**body, "stream": True}, headers=gateway.headers()
        ).text
        events = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
        return sum(1 for e in events if not e["choices"] and e.get("usage"))

    def ws_usage_chunks(**extra: Any) -> int:
        with open_socket(gateway) as ws:
            ws.send(request("u", unique("u"), **extra))
            frames = until_end(ws, "u")
        return sum(1 for f in frames if f["type"] == "chat.chunk" and not f["chunk"]["choices"])

    asked = {"stream_options": {"include_usage": True}}
    assert http_usage_chunks() == ws_usage_chunks() == 0
    assert http_usage_chunks(**asked) == ws_usage_chunks(**asked) == 1


SHUTDOWN_KEY = "sk-acceptance-ws-shutdown"
SHUTDOWN_CONFIG = f"""
server: {{drain_timeout_s: 60}}
auth:
  keys: [{{name: alice, key: {SHUTDOWN_KEY}}}]
providers:
  - {{name: slow, type: mock, options: {{chunk_size: 1, chunk_delay_ms: 40}}}}
models:
  - {{name: slow, routes: [{{provider: slow, model: mock-echo}}]}}
features:
  websocket: {{idle_timeout_s: 1}}
usage: {{database: ":memory:"}}
"""


@pytest.mark.feature("websocket-support", step=5)
def test_pings_are_answered_idle_sockets_close_and_a_shutdown_drains_then_closes_1012(
    gateway: Any, tmp_path: Any
) -> None:
    if gateway.live:
        pytest.skip("needs a gateway process of its own to stop")
    output: list[str] = []
    with gateway_process(tmp_path, SHUTDOWN_CONFIG, output) as (url, process):
        socket_url = url.replace("http://", "ws://", 1) + "/v1/ws/chat"
        headers = {"Authorization": f"Bearer {SHUTDOWN_KEY}"}
        with connect(socket_url, additional_headers=headers, open_timeout=15) as idle:
            idle.send(json.dumps({"type": "ping"}))
            assert frame(idle) == {"type": "pong"}
            with pytest.raises(ConnectionClosed) as timed_out:
                idle.recv(timeout=30)  # nothing in flight, nothing received for 1 s
        assert timed_out.value.rcvd is not None and timed_out.value.rcvd.code == 1001
        content = unique("finishes although the gateway is stopping")
        with connect(socket_url, additional_headers=headers, open_timeout=15) as ws:
            ws.send(request("long", content, model="slow"))
            first = frame(ws)
            assert first["type"] == "chat.chunk", first
            process.send_signal(signal.SIGTERM)
            frames = until_end(ws, "long")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=60)
        assert frames[-1]["type"] == "chat.done"
        assert text_of([first, *frames], "long") == content
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert process.wait(timeout=60) == 0
