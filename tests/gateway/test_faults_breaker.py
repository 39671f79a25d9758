"""Fault injection for the circuit breaker: real `gateway mock-upstream` processes that misbehave on loopback.

The gateway runs in process (the real app, its real upstream transport, default routing settings) in front
of one or two upstream processes, and the tests measure what clients see:

- **500s at a rate**: 1 % of upstream answers are 500 with one route, 10 % with two. The failures are drawn
  from the mock's seeded RNG (``seed: 0``), so every run injects the same sequence. Targets (issue 21): at
  least 99 % and 97 % of client requests succeed.
- **an upstream that goes away and comes back**: both upstreams are killed, the model is driven until its
  breaker has opened, one upstream is started again on its port; the model must serve again within 2 s and
  then serve every request.
- **a hang**: one upstream is stopped with SIGSTOP (it still accepts connections, it never answers); every
  client request still succeeds through the other route, the breaker takes the hung route out, and after
  SIGCONT a probe puts it back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from test_failover_integration import spawn_upstream, start_upstream, wait_ready

from gateway.app import create_app
from gateway.config import parse_config

KEY = "sk-breaker-test-0001"
MASTER = "sk-breaker-master-0001"
URL = "/v1/chat/completions"


def config_for(ports: list[int], *, timeout_s: float = 10.0, routing: str = "") -> str:
    providers = "\n".join(
        f'  - {{name: up{i}, type: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: sk-up,'
        f" timeout_s: {timeout_s}, connect_timeout_s: {timeout_s}}}"
        for i, port in enumerate(ports)
    )
    routes = ", ".join(f"{{provider: up{i}, model: mock-echo}}" for i in range(len(ports)))
    return f"""
auth:
  master_key: {MASTER}
  keys: [{{name: t, key: {KEY}}}]
providers:
{providers}
models:
  - {{name: chat, routes: [{routes}]}}
usage: {{database: ":memory:"}}
{routing}"""


@asynccontextmanager
async def gateway(text: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(parse_config(text, "breaker.yaml"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as client,
    ):
        yield client


async def ask(client: httpx.AsyncClient, i: int = 0) -> httpx.Response:
    body = {"model": "chat", "messages": [{"role": "user", "content": f"request {i}"}]}
    return await client.post(URL, json=body, headers={"authorization": f"Bearer {KEY}"})


async def load(client: httpx.AsyncClient, total: int, concurrency: int) -> list[httpx.Response]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> httpx.Response:
        async with gate:
            return await ask(client, i)

    return await asyncio.gather(*(one(i) for i in range(total)))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Upstream processes a test starts; each is killed at the end, whatever state it was left in."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(timeout=10)


def flaky(processes: list[subprocess.Popen[bytes]], rate: float, port: int | None = None) -> int:
    """An upstream answering 500 to a share ``rate`` of requests (seeded draws), ready; its port."""
    process, port = start_upstream("--fail-rate", str(rate), "--fail-status", "500", port=port)
    processes.append(process)
    return port


def two_flaky(processes: list[subprocess.Popen[bytes]], rate: float) -> list[int]:
    """Two upstreams as :func:`flaky`, started in parallel."""
    started = [spawn_upstream("--fail-rate", str(rate), "--fail-status", "500") for _ in range(2)]
    processes.extend(process for process, _ in started)
    for process, port in started:
        wait_ready(process, port)
    return [port for _, port in started]


def succeeded(responses: list[httpx.Response]) -> float:
    return sum(r.status_code == 200 for r in responses) / len(responses)


def faults_seen(responses: list[httpx.Response]) -> int:
    """Client requests that met an upstream fault: retried, or failed."""
    return sum(r.status_code != 200 or int(r.headers["x-gateway-attempts"]) > 1 for r in responses)


def test_one_route_with_1_percent_upstream_500s_serves_99_percent(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    port = flaky(processes, 0.01)

    async def scenario() -> list[httpx.Response]:
        async with gateway(config_for([port])) as client:
            return await load(client, 1000, 20)

    responses = asyncio.run(scenario())
    codes = Counter((r.status_code, r.headers.get("x-gateway-attempts")) for r in responses)
    assert succeeded(responses) >= 0.99, codes
    assert faults_seen(responses) >= 3, "the upstream injected no failures: the test would prove nothing"


def test_two_routes_with_10_percent_upstream_500s_serve_97_percent(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    ports = two_flaky(processes, 0.1)

    async def scenario() -> list[httpx.Response]:
        async with gateway(config_for(ports)) as client:
            return await load(client, 1000, 20)

    responses = asyncio.run(scenario())
    codes = Counter((r.status_code, r.headers.get("x-gateway-attempts")) for r in responses)
    assert succeeded(responses) >= 0.97, codes
    assert faults_seen(responses) >= 30
    # Both routes keep taking traffic: 10 % errors is no reason to take either out.
    assert set(r.headers["x-gateway-route"] for r in responses) == {"up0/mock-echo", "up1/mock-echo"}


def wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.02)
    raise RuntimeError("upstream did not come back")


def test_full_service_within_2_s_of_an_upstream_coming_back(processes: list[subprocess.Popen[bytes]]) -> None:
    ports = two_flaky(processes, 0.0)

    async def scenario() -> None:
        async with gateway(config_for(ports)) as client:
            assert succeeded(await load(client, 20, 5)) == 1.0
            for process in processes:
                process.kill()
                process.wait(timeout=10)
            # The outage: drive the model until its breaker has taken both routes out.
            opened = False
            for _ in range(50):
                responses = await load(client, 10, 10)
                assert all(r.status_code in (502, 503) for r in responses)
                if any(r.json()["error"]["code"] == "all_routes_cooling_down" for r in responses):
                    opened = True
                    break
            assert opened, "the breaker never opened during the outage"
            # One upstream comes back on its port.
            flaky(processes, 0.0, port=ports[0])
            await asyncio.to_thread(wait_healthy, ports[0])
            back = time.monotonic()
            while (await ask(client)).status_code != 200:
                assert time.monotonic() - back < 15, "the model never served again"
                await asyncio.sleep(0.01)
            recovered_s = time.monotonic() - back
            assert recovered_s < 2.0, f"served again only after {recovered_s:.1f} s"
            # Full service: every request succeeds from then on, without waiting for the dead route.
            after = await load(client, 100, 10)
            assert [r.status_code for r in after] == [200] * 100
            assert set(r.headers["x-gateway-route"] for r in after) == {"up0/mock-echo"}

    asyncio.run(scenario())


def test_a_hung_upstream_is_taken_out_and_put_back(processes: list[subprocess.Popen[bytes]]) -> None:
    ports = two_flaky(processes, 0.0)
    hung = processes[1]

    # A hang is seen only when the timeout fires: a small volume trips the breaker sooner, and a short
    # longest cooldown bounds the wait for the probe after SIGCONT (defaults: 20 requests, 30 s).
    routing = "features: {routing: {cooldown: {min_requests: 5, max_seconds: 2}}}"

    async def scenario() -> None:
        async with gateway(config_for(ports, timeout_s=1.0, routing=routing)) as client:
            os.kill(hung.pid, signal.SIGSTOP)
            responses = await load(client, 200, 10)
            assert [r.status_code for r in responses] == [200] * 200
            assert all(r.headers["x-gateway-route"] == "up0/mock-echo" for r in responses)
            timeouts = sum(int(r.headers["x-gateway-attempts"]) > 1 for r in responses)
            assert timeouts >= 1
            # Once open, the breaker keeps requests away from the hung route (a probe or two aside).
            later = await load(client, 100, 10)
            assert sum(int(r.headers["x-gateway-attempts"]) > 1 for r in later) <= 5
            os.kill(hung.pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while (await ask(client)).headers["x-gateway-route"] != "up1/mock-echo":
                assert time.monotonic() < deadline, "the route that came back never took traffic again"
                await asyncio.sleep(0.02)

    asyncio.run(scenario())
