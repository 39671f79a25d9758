"""``features.websocket``: the transport's switch, ``Origin`` allow-list and per-connection limits, taken from
the config running when a socket opens (a hot reload applies to the next connection)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testing import MASTER_KEY, run_server
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.ws_config import WebSocketConfig

KEY = "sk-wscfg-alice-0001"


def config(websocket: str) -> str:
    return f"""
auth:
  master_key: {MASTER_KEY}
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: mock, type: mock, options: {{chunk_size: 4}}}}
  - {{name: slow, type: mock, options: {{chunk_size: 2, chunk_delay_ms: 100}}}}
models:
  - {{name: echo, routes: [{{provider: mock, model: mock-echo}}]}}
  - {{name: slow, routes: [{{provider: slow, model: mock-echo}}]}}
features:
  websocket: {websocket}
usage: {{database: ":memory:"}}
"""


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/v1/ws/chat"


def socket(base: str, origin: str | None = None) -> ClientConnection:
    headers = {"authorization": f"Bearer {KEY}"}
    return connect(ws_url(base), additional_headers=headers, origin=origin, open_timeout=10)  # type: ignore[arg-type]


def request(rid: str, content: str, model: str = "echo") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return json.dumps({"type": "chat.request", "id": rid, "body": body})


def frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=10))  # type: ignore[no-any-return]


def completes(ws: ClientConnection, rid: str = "r1") -> bool:
    ws.send(request(rid, "hello"))
    while (f := frame(ws))["type"] == "chat.chunk":
        pass
    return bool(f["type"] == "chat.done")


def test_only_listed_origins_may_open_a_socket_and_clients_without_origin_always_may() -> None:
    app = create_app(parse_config(config("{allowed_origins: ['https://app.example']}"), "ws.yaml"))
    with run_server(app, ws="auto") as base:
        with socket(base, origin="https://app.example") as ws:
            assert completes(ws)
        with socket(base, origin="HTTPS://APP.EXAMPLE") as ws:  # origins compare case-insensitively
            assert completes(ws)
        with socket(base) as ws:  # an SDK or server: no Origin header
            assert completes(ws)
        with pytest.raises(InvalidStatus) as refused:
            socket(base, origin="https://evil.example")
    answer = refused.value.response
    assert answer.status_code == 403
    error = json.loads(answer.body or b"{}")["error"]
    assert error["code"] == "origin_not_allowed" and "features.websocket.allowed_origins" in error["message"]


def test_a_disabled_transport_refuses_the_handshake_with_404() -> None:
    app = create_app(parse_config(config("{enabled: false}"), "ws.yaml"))
    with run_server(app, ws="auto") as base, pytest.raises(InvalidStatus) as refused:
        socket(base)
    assert refused.value.response.status_code == 404
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "websocket_disabled"


def test_the_limits_come_from_the_config() -> None:
    text = config("{max_concurrent: 1, max_message_bytes: 2048}")
    with run_server(create_app(parse_config(text, "ws.yaml")), ws="auto") as base, socket(base) as ws:
        ws.send(request("first", "slow enough to overlap " * 3, model="slow"))
        ws.send(request("second", "refused"))
        refused = next(f for f in iter(lambda: frame(ws), None) if f["type"] == "chat.error")
        assert (refused["id"], refused["status"]) == ("second", 429)
        assert "At most 1 requests" in refused["error"]["error"]["message"]
        ws.send(request("big", "x" * 4096))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert "2048 bytes" in closed.value.rcvd.reason


def test_a_reload_applies_to_the_next_connection(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config("{}"))
    app = create_app(parse_config(path.read_text(), str(path)), config_path=path)
    admin = {"authorization": f"Bearer {MASTER_KEY}"}
    with run_server(app, ws="auto") as base, socket(base, origin="https://other.example") as before:
        path.write_text(config("{allowed_origins: ['https://app.example']}"))
        reload = httpx.post(f"{base}/admin/reload", headers=admin, timeout=10).json()
        assert reload["status"] == "reloaded"
        with pytest.raises(InvalidStatus):
            socket(base, origin="https://other.example")
        assert completes(before)  # a socket already open keeps the settings it was accepted with


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{allowed_origins: ['https://app.example/']}", "ws.yaml:12: features.websocket.allowed_origins[0]"),
        ("{max_concurrent: 0}", "features.websocket.max_concurrent"),
        ("{idle_timeout: 5}", "features.websocket.idle_timeout"),
    ],
)
def test_config_errors_name_the_key(section: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(config(section), "ws.yaml")
    assert expected in str(error.value)


def test_admits() -> None:
    assert WebSocketConfig().admits("https://anything.example")
    listed = WebSocketConfig(allowed_origins=["https://a.example"])
    assert listed.admits(None) and listed.admits("https://a.example")
    assert not listed.admits("https://b.example") and not listed.admits("null")
    assert WebSocketConfig(allowed_origins=["*"]).admits("https://b.example")
