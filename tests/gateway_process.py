"""``gateway run`` as a real process on a free loopback port, for tests in any folder (signals, drains).

A module with a unique name next to ``tests/conftest.py`` (which puts ``tests/`` on ``sys.path``), like
``uvicorn_server.py``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

STARTUP_SECONDS = 30  # a busy machine can be slow to start a process
EXIT_SECONDS = 60  # generous: only a hang comes near it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def gateway_process(
    tmp_path: Path, config_text: str, output: list[str]
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``gateway run`` serving ``config_text``; yields its URL and process. ``output`` receives its stdout and
    stderr once it ended (killed at the end of the block if still running)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text)
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(path), "--port", str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not answers(f"{url}/health"):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "gateway run did not start"
            time.sleep(0.05)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        output.append(process.communicate(timeout=EXIT_SECONDS)[0])
