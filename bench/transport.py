"""Compare upstream HTTP transports: httpx's default vs httpx over aiohttp (``httpx-aiohttp``).

Starts ``gateway mock-upstream`` in a subprocess, then drives it from one event loop with 32 concurrent
requests per transport through ``httpx.AsyncClient``, and one request at a time calling the transport
directly (as the gateway's providers do). Prints requests/second, latency percentiles and that median.

    python bench/transport.py [--seconds 5] [--concurrency 32]
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

import httpx
from httpx_aiohttp import AiohttpTransport

BODY = {"model": "mock-echo", "messages": [{"role": "user", "content": "benchmark me"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def sequential(transport: httpx.AsyncBaseTransport, url: str, count: int = 1500) -> float:
    """Median milliseconds of one request at a time, calling the transport directly (as providers do)."""
    target = httpx.URL(f"{url}/v1/chat/completions")
    content = json.dumps(BODY).encode()
    timings: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        request = httpx.Request("POST", target, content=content, headers={"content-type": "application/json"})
        response = await transport.handle_async_request(request)
        await response.aread()
        await response.aclose()
        json.loads(response.content)
        timings.append(time.perf_counter() - began)
    await transport.aclose()
    return statistics.median(timings[count // 5 :]) * 1000


async def drive(
    transport: httpx.AsyncBaseTransport, url: str, seconds: float, concurrency: int
) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:
        for _ in range(50):  # warm up the pool
            await client.post("/v1/chat/completions", json=BODY)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=BODY)
                response.raise_for_status()
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
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
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        for name, factory in [
            ("httpx default", lambda: httpx.AsyncHTTPTransport(limits=limits)),
            ("httpx + aiohttp", lambda: AiohttpTransport(limits=limits)),
        ]:
            latencies = asyncio.run(drive(factory(), url, args.seconds, args.concurrency))
            quantiles = statistics.quantiles(latencies, n=100)
            direct = asyncio.run(sequential(factory(), url))
            print(
                f"{name:16} {len(latencies) / args.seconds:8.0f} req/s   "
                f"p50 {quantiles[49] * 1000:6.2f} ms   p99 {quantiles[98] * 1000:6.2f} ms   "
                f"one at a time, transport called directly: {direct:.3f} ms"
            )
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
