"""A real browser calls the gateway from another origin: allowed with ``server.cors``, refused otherwise.

A tiny page is served on one loopback port and the gateway (uvicorn, as ``gateway run`` serves it) on
another, so the page's ``fetch`` is cross-origin: Chromium sends the preflight (the ``authorization``
header makes it one) and enforces the answer, which is what no HTTP-level test can show.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cdp import chromium_page, find_chromium
from test_browser import unavailable
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import parse_config

CHROMIUM = find_chromium()
KEY = "sk-test-browser-0001"

PAGE = """<!doctype html><title>cors</title><script>
window.outcome = fetch(GATEWAY + "/v1/chat/completions", {
  method: "POST",
  headers: {"authorization": "Bearer KEY", "content-type": "application/json"},
  body: JSON.stringify({model: "echo", messages: [{role: "user", content: "hi from the page"}]}),
}).then(async (r) => ({status: r.status, requestId: r.headers.get("x-request-id"), body: await r.json()}),
        (e) => ({error: String(e)}));
</script>"""


def gateway_config(origin: str) -> str:
    return f"""
server:
  cors: {{allow_origins: ["{origin}"]}}
auth:
  keys: [{{name: page, key: {KEY}}}]
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock, model: mock-echo-v1}}]}}]
usage: {{database: ":memory:"}}
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def page_server(directory: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("allowed", [True, False])
def test_a_page_on_another_origin_calls_the_gateway(tmp_path: Path, allowed: bool) -> None:
    if CHROMIUM is None:
        unavailable("needs Debian's chromium (scripts/test installs it)")
    with page_server(tmp_path) as page_origin:
        origin = page_origin if allowed else "http://127.0.0.1:1"
        app = create_app(parse_config(gateway_config(origin), "browser.yaml"))
        with run_server(app) as gateway_url, chromium_page(CHROMIUM) as page:
            html = PAGE.replace("GATEWAY", repr(gateway_url)).replace("KEY", KEY)
            (tmp_path / "index.html").write_text(html)
            page.goto(page_origin + "/index.html")
            outcome = page.evaluate("window.outcome")
    if allowed:
        assert outcome["status"] == 200, outcome
        assert outcome["requestId"], outcome  # readable only because it is exposed
        assert "hi from the page" in outcome["body"]["choices"][0]["message"]["content"]
    else:
        # The browser refused the answer: the script sees a network error, not the response.
        assert "error" in outcome and "Failed to fetch" in outcome["error"], outcome
