"""Failover end to end: two `gateway mock-upstream` processes behind one alias, one killed mid-run.

The gateway (in process, the real app and its real upstream transport) sends 500 non-streaming requests,
20 at a time, through an alias whose two routes are the two processes (``openai`` provider type, loopback).
After 150 answers one process is killed with SIGKILL: requests in flight to it and new requests routed to
it must fail over to the survivor, so every one of the 500 requests succeeds.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from gateway.app import create_app
from gateway.config import parse_config

KEY = "sk-failover-test-0001"
TOTAL = 500
CONCURRENCY = 20
KILL_AFTER = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_upstream(*options: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start a `gateway mock-upstream` process (with CLI ``options``) on ``port`` or a free loopback port."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    """Wait until the process answers ``/health`` (processes started together start in parallel)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("mock-upstream exited at start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("mock-upstream did not start")


def start_upstream(*options: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A `gateway mock-upstream` process on ``port`` or a free loopback port, ready to answer."""
    process, port = spawn_upstream(*options, port=port)
    wait_ready(process, port)
    return process, port


@pytest.fixture
def upstreams() -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    started = [start_upstream(), start_upstream()]
    try:
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def test_killing_one_upstream_mid_run_fails_no_request(
    upstreams: list[tuple[subprocess.Popen[bytes], int]],
) -> None:
    (_, port_a), (victim, port_b) = upstreams
    config = parse_config(
        f"""
auth:
  keys: [{{name: t, key: {KEY}}}]
providers:
  - {{name: up-a, type: openai, base_url: "http://127.0.0.1:{port_a}/v1", api_key: sk-a}}
  - {{name: up-b, type: openai, base_url: "http://127.0.0.1:{port_b}/v1", api_key: sk-b}}
models:
  - name: chat
    routes:
      - {{provider: up-a, model: mock-echo}}
      - {{provider: up-b, model: mock-echo}}
usage: {{database: ":memory:"}}
""",
        "failover.yaml",
    )

    async def scenario() -> list[httpx.Response]:
        app = create_app(config)
        done = 0
        killed = asyncio.Event()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
            nonlocal done
            async with gate:
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "chat", "messages": [{"role": "user", "content": f"request {i}"}]},
                    headers={"authorization": f"Bearer {KEY}"},
                )
            done += 1
            if done == KILL_AFTER:
                victim.kill()
                killed.set()
            response.extensions["after_kill"] = killed.is_set()
            return response

        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60
            ) as client,
        ):
            return await asyncio.gather(*(one(client, i) for i in range(TOTAL)))

    responses = asyncio.run(scenario())
    failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert failures == []
    assert all(
        r.json()["choices"][0]["message"]["content"] == f"request {i}" for i, r in enumerate(responses)
    )
    routes_before = Counter(r.headers["x-gateway-route"] for r in responses if not r.extensions["after_kill"])
    assert set(routes_before) == {"up-a/mock-echo", "up-b/mock-echo"}  # both took traffic before the kill
    # After the kill some requests chose the dead route first and were failed over.
    after = [r for r in responses if r.extensions["after_kill"]]
    assert any(int(r.headers["x-gateway-attempts"]) >= 2 for r in after)
    # Once the kill had been noticed (a few retries), only the survivor answered.
    assert after[-1].headers["x-gateway-route"] == "up-a/mock-echo"
