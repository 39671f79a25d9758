"""Compare upstream HTTP transports: httpx's default vs httpx over aiohttp (``httpx-aiohttp``).

Starts ``gateway mock-upstream`` in a subprocess, then drives it from one event loop with 32 concurrent
requests per transport, as the gateway's provider would. Prints requests/second and latency percentiles.

    python bench/transport.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
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
            print(
                f"{name:16} {len(latencies) / args.seconds:8.0f} req/s   "
                f"p50 {quantiles[49] * 1000:6.2f} ms   p99 {quantiles[98] * 1000:6.2f} ms"
            )
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
