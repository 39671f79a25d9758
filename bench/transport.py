"""CPU per upstream call of the gateway's own client against aiohttp and httpx over aiohttp.

Starts ``gateway mock-upstream`` in a subprocess, then from one event loop in this process sends the same POST
(the body a provider sends, with its headers) through each client in alternating rounds, one request at a
time and 32 at once, on uvloop as ``gateway run`` (asyncio's loop without it), and prints this process's CPU
microseconds per call (``time.process_time``: the mock's work is in the other process, so only the client
side is counted) and each client's ratio to the gateway's.

    gateway client      the providers' path: gateway/upstream_client.py (``sender(default_transport(), ...)``)
    aiohttp direct      ``session.request(...)`` + ``read()``: the providers' path before it
    httpx + aiohttp     the transport's httpx interface (``handle_async_request``): the passthrough baseline's

    python bench/transport.py [--requests 2000] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# bench/gateway.py would shadow the gateway package when this runs as a script.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import aiohttp  # noqa: E402
import httpx  # noqa: E402

from bench import exclusive  # noqa: E402
from gateway.providers.base import USER_AGENT  # noqa: E402
from gateway.transport import GatewayTransport, default_transport, sender  # noqa: E402

BODY = json.dumps({"model": "mock-echo", "messages": [{"role": "user", "content": "benchmark me"}]}).encode()
HEADERS = {"content-type": "application/json", "user-agent": USER_AGENT, "authorization": "Bearer sk-bench"}
TIMEOUT = {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 5.0}
PATH = "/v1/chat/completions"

Call = Callable[[], Awaitable[bytes]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def clients(url: str) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    """One call per client, each returning the answer's body, and a function closing them all."""
    transport = default_transport()
    assert isinstance(transport, GatewayTransport)
    own = sender(transport, url, TIMEOUT)

    async def gateway_client() -> bytes:
        return await (await own.post(PATH, HEADERS, BODY)).body()

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    target = f"{url}{PATH}"
    timeout = aiohttp.ClientTimeout(sock_connect=5.0, sock_read=60.0, connect=5.0)

    async def aiohttp_direct() -> bytes:
        response = await session.request("POST", target, headers=HEADERS, data=BODY, timeout=timeout)
        try:
            return await response.read()
        finally:
            response.release()

    via_httpx = default_transport()
    httpx_url = httpx.URL(target)

    async def httpx_aiohttp() -> bytes:
        extensions = {"timeout": TIMEOUT}
        request = httpx.Request("POST", httpx_url, content=BODY, headers=HEADERS, extensions=extensions)
        response = await via_httpx.handle_async_request(request)
        try:
            return await response.aread()
        finally:
            await response.aclose()

    async def close() -> None:
        await transport.aclose()
        await session.close()
        await via_httpx.aclose()

    calls: dict[str, Call] = {
        "gateway client": gateway_client,
        "aiohttp direct": aiohttp_direct,
        "httpx + aiohttp": httpx_aiohttp,
    }
    return calls, close


async def cpu_per_call(call: Call, requests: int, concurrency: int) -> float:
    """This process's CPU microseconds per call, ``concurrency`` calls in flight."""
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            json.loads(await call())

    began = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - began) / (per_worker * concurrency) * 1e6


async def measure(url: str, requests: int, rounds: int, concurrency: int) -> None:
    calls, close = await clients(url)
    try:
        for call in calls.values():  # warm up: connections open, code paths taken
            await asyncio.gather(*(call() for _ in range(concurrency)))
        for label, width in (("one at a time", 1), (f"{concurrency} at once", concurrency)):
            results: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(rounds):
                for name, call in calls.items():  # alternating, so load on the machine hits all alike
                    results[name].append(await cpu_per_call(call, requests, width))
            own = statistics.median(results["gateway client"])
            print(f"{label}: CPU us per call (median of {rounds} rounds of {requests})")
            for name, values in results.items():
                median = statistics.median(values)
                print(f"  {name:16} {median:7.1f} us   {median / own:5.2f}x the gateway client")
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    exclusive.hold("bench/transport.py")
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/health")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        try:
            import uvloop  # what ``gateway run`` serves on (gateway/server_stack.py)

            uvloop.run(measure(url, args.requests, args.rounds, args.concurrency))
        except ImportError:
            asyncio.run(measure(url, args.requests, args.rounds, args.concurrency))
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
