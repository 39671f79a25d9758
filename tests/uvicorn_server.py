"""An ASGI app served by uvicorn on a free loopback port, in a thread, for tests in any folder.

A module with a unique name next to ``tests/conftest.py`` (which puts ``tests/`` on ``sys.path``), like
``redis_server.py``: ``from conftest import`` would pick whichever conftest.py was imported first.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from gateway.server_protocol import OneWriteHttpToolsProtocol

STARTUP_SECONDS = 30  # a busy machine running the whole suite can be slow to start a server


@contextmanager
def run_server(app: ASGIApp, **options: Any) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields the base URL (``https://`` with TLS ``options``).

    ``options`` are extra ``uvicorn.Config`` arguments (``gateway.tls.uvicorn_ssl_options`` for HTTPS). The
    socket is bound here, not by uvicorn, so no other process can take the port between choosing and serving.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # WebSocket tests pass ws="auto"; servers run on the protocol `gateway run` serves with, so every test
    # over a socket goes through it.
    options = {"ws": "none", "http": OneWriteHttpToolsProtocol, **options}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        scheme = "https" if options.get("ssl_certfile") else "http"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
        sock.close()
