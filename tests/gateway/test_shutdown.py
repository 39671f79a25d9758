"""Graceful shutdown of a real ``gateway run`` process on a loopback port: SIGTERM makes ``/ready`` report
draining, streams in flight (HTTP and WebSocket) finish, WebSocket clients get 1012, then the process exits;
``server.drain_timeout_s`` bounds the wait."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_process import EXIT_SECONDS, gateway_process
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

KEY = "sk-shutdown-alice-0001"


def config_text(drain_timeout_s: float) -> str:
    return f"""
server: {{drain_timeout_s: {drain_timeout_s}}}
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: slow, type: mock, options: {{chunk_size: 1, chunk_delay_ms: 50}}}}
models:
  - {{name: slow, routes: [{{provider: slow, model: mock-echo}}]}}
usage: {{database: ":memory:"}}
"""


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "slow", "messages": [{"role": "user", "content": content}], **extra}


def ws_request(rid: str, content: str) -> str:
    return json.dumps({"type": "chat.request", "id": rid, "body": chat(content)})


def ws_frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=EXIT_SECONDS))  # type: ignore[no-any-return]


def wait_until_draining(url: str) -> httpx.Response:
    """Poll /ready on fresh connections until it answers 503 (the signal is handled asynchronously)."""
    deadline = time.monotonic() + EXIT_SECONDS
    while True:
        try:
            ready = httpx.get(f"{url}/ready", timeout=5)
        except httpx.HTTPError as exc:
            raise AssertionError(f"/ready stopped answering before it reported draining: {exc!r}") from None
        if ready.status_code == 503:
            return ready
        assert time.monotonic() < deadline, "/ready never reported draining"
        time.sleep(0.02)


def test_sigterm_drains_http_and_websocket_streams_then_exits(tmp_path: Path) -> None:
    content = "d" * 200  # 200 chunks, 50 ms apart: still streaming while the test checks the drain
    output: list[str] = []
    with (
        gateway_process(tmp_path, config_text(60), output) as (url, process),
        httpx.Client(
            base_url=url, headers={"authorization": f"Bearer {KEY}"}, timeout=EXIT_SECONDS
        ) as client,
        client.stream("POST", "/v1/chat/completions", json=chat(content, stream=True)) as http_stream,
        connect(url.replace("http", "ws", 1) + "/v1/ws/chat", additional_headers={"x-api-key": KEY}) as ws,
    ):
        lines = http_stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # the HTTP stream is running
        ws.send(ws_request("a", content))
        frames = [ws_frame(ws)]
        assert frames[0]["type"] == "chat.chunk"  # and so is the WebSocket one

        process.send_signal(signal.SIGTERM)

        ready = wait_until_draining(url)
        assert ready.json()["status"] == "draining" and "shutting down" in ready.json()["detail"]
        # A new socket is closed with 1012 at once, a new request on an open socket is refused with a 503;
        # the stream in flight goes on.
        ws_url = url.replace("http", "ws", 1) + "/v1/ws/chat"
        with (
            connect(ws_url, additional_headers={"x-api-key": KEY}) as late,
            pytest.raises(ConnectionClosed) as shut,
        ):
            late.recv(timeout=EXIT_SECONDS)
        assert shut.value.rcvd is not None and shut.value.rcvd.code == 1012
        ws.send(ws_request("late", "x"))
        while (frame := ws_frame(ws))["type"] != "chat.done":
            frames.append(frame)
        refused = [f for f in frames if f["type"] == "chat.error"]
        assert [(f["id"], f["status"], f["error"]["error"]["code"]) for f in refused] == [
            ("late", 503, "shutting_down")
        ]
        text = "".join(
            c["delta"].get("content") or ""
            for f in frames
            if f["type"] == "chat.chunk"
            for c in f["chunk"]["choices"]
        )
        assert text == content  # the WebSocket stream finished whole
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=EXIT_SECONDS)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

        events = [line for line in lines if line]
        assert events[-1] == "data: [DONE]"  # the HTTP stream finished whole
        assert len(events) >= len(content)  # one event per character, none lost
        assert process.wait(timeout=EXIT_SECONDS) == 0
    assert "Traceback" not in output[0]


def test_the_drain_deadline_bounds_a_long_stream(tmp_path: Path) -> None:
    content = "l" * 600  # 30 s of stream, against a 1 s drain deadline
    output: list[str] = []
    with (
        gateway_process(tmp_path, config_text(1), output) as (url, process),
        httpx.Client(
            base_url=url, headers={"authorization": f"Bearer {KEY}"}, timeout=EXIT_SECONDS
        ) as client,
        client.stream("POST", "/v1/chat/completions", json=chat(content, stream=True)) as http_stream,
        connect(url.replace("http", "ws", 1) + "/v1/ws/chat", additional_headers={"x-api-key": KEY}) as ws,
    ):
        lines = http_stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        ws.send(ws_request("long", content))
        assert ws_frame(ws)["type"] == "chat.chunk"

        process.send_signal(signal.SIGTERM)

        # The WebSocket stream is stopped at the deadline and the socket closed with 1012.
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(ws_frame(ws))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert not any(f["type"] == "chat.done" for f in frames)
        # The HTTP stream is cut too: no [DONE] after 30 s of content.
        rest: list[str] = []
        with contextlib.suppress(httpx.HTTPError):  # the connection may close mid-stream
            rest.extend(lines)
        assert "data: [DONE]" not in rest
        assert process.wait(timeout=EXIT_SECONDS) == 0
    assert "drain deadline" in output[0] and "Traceback" not in output[0]
