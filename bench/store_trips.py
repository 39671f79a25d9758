"""Redis round trips and Redis CPU per request, by feature, for the production configuration on Redis.

    python bench/store_trips.py                        # 2,000 requests per path
    python bench/store_trips.py --requests 50          # a quick look
    python bench/store_trips.py --concurrency 32       # 32 clients at once: trips asked for together share
                                                       # a write (gateway/stores/redis_trip.py)

Starts a private ``redis-server`` on loopback, builds the gateway with ``create_app`` (the production
configuration of ``bench/gateway.py`` with ``state.redis_url`` set and a concurrency limit added, so every
stateful feature runs: rate limit rpm + tpm + concurrency, budget, cache) and an in-memory upstream, then
calls the ASGI app directly, one request at a time (or ``--concurrency`` at a time), for three paths:

- **cache miss**: a new prompt per request, the upstream answers and the answer is cached;
- **cache hit**: the same prompt every time;
- **refused**: a key whose requests-per-minute limit is spent, answered 429 by the rate limit.

A *round trip* is one write of commands to a Redis connection followed by reading their replies: redis-py's
``send_packed_command`` is counted (a pipeline of several commands is one call, one trip). Each trip is
attributed to the features whose keys it names (``gw:<feature>:...``), so a script touching rate-limit and
budget keys at once counts as ``budget+rl``. With several requests at once, trips asked for together go in
one write, so a request costs less than a whole trip. Redis's own CPU per request is the difference of
``INFO cpu`` (``used_cpu_sys + used_cpu_user``) around each path's requests, and ``1 / CPU per request`` the
request rate one Redis core sustains for that path; the gateway's own CPU per request (this process) is
printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench import exclusive  # noqa: E402
from bench.stages import UPSTREAM, body_factory, mock_transport  # noqa: E402
from bench.systems import KEY, gateway_config  # noqa: E402

REFUSED_KEY = "sk-bench-refused-0123456789abcdef"
FEATURE = re.compile(rb"gw:\{?([a-z_]+)\}?:")  # `gw:{rl}:` when hash-tagged for Redis Cluster
PATHS = ("cache miss", "cache hit", "refused")


class TripCounter:
    """Counts round trips to Redis, by the features whose keys each trip names."""

    def __init__(self) -> None:
        self.trips: Counter[str] = Counter()

    def record(self, command: Any) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)
        raw = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        features = sorted({m.decode() for m in FEATURE.findall(raw)}) or ["other"]
        self.trips["+".join(features)] += 1

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Count every ``send_packed_command`` of redis-py's asyncio connections while inside."""
        from redis.asyncio.connection import AbstractConnection

        original = AbstractConnection.send_packed_command

        async def counting(conn: Any, command: Any, check_health: bool = True) -> None:
            self.record(command)
            await original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def production_on_redis(redis_url: str, workdir: Path) -> dict[str, Any]:
    """bench/gateway.py's production config on Redis, with a concurrency limit and a key whose rpm is 1."""
    config = gateway_config("gateway-production", UPSTREAM, 0, workdir)
    config["state"] = {"redis_url": redis_url, "on_error": "fail_closed"}
    key = config["auth"]["keys"][0]
    key["max_concurrent"] = 1000
    refused = copy.deepcopy(key)
    refused.update(name="refused", key=REFUSED_KEY, rpm=1)
    config["auth"]["keys"].append(refused)
    return config


def redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def drive(
    app: Any, bodies: Callable[[int], bytes], key: str, requests: int, concurrency: int = 1
) -> Counter[int]:
    """Call ``app`` with ``concurrency`` clients, each sending its requests one after the other; the statuses
    it answered."""
    statuses: Counter[int] = Counter()

    async def one(body: bytes) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080), "state": {},
            "headers": [
                (b"host", b"bench"), (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(body)).encode()),
            ],
        }  # fmt: skip
        await app(scope, receive, send)

    async def client(first: int) -> None:
        for i in range(first, requests, concurrency):
            await one(bodies(i))

    await asyncio.gather(*(client(first) for first in range(concurrency)))
    return statuses


async def measure(redis_url: str, requests: int, workdir: Path, concurrency: int = 1) -> dict[str, Any]:
    import redis
    import yaml

    from gateway.app import create_app
    from gateway.config import parse_config

    config = production_on_redis(redis_url, workdir)
    app = create_app(parse_config(yaml.safe_dump(config), "<bench>"), transport=mock_transport())
    gateway = app.state.gateway
    await gateway.start()
    admin = redis.Redis.from_url(redis_url)
    tag = f"p{time.monotonic_ns()}"
    paths: dict[str, tuple[Callable[[int], bytes], str, int]] = {
        "cache miss": (body_factory(True, tag), KEY, 200),
        "cache hit": (body_factory(False, tag + "-hit"), KEY, 200),
        "refused": (body_factory(True, tag + "-refused"), REFUSED_KEY, 429),
    }
    out: dict[str, Any] = {}
    try:
        for name, (bodies, key, expected) in paths.items():
            # Warm-up: scripts loaded, connections open, the hit cached, the refused key's minute spent.
            await drive(app, lambda i, b=bodies: b(-1 - i), key, 20)
            counter = TripCounter()
            cpu = redis_cpu_s(admin)
            own = time.process_time()
            with counter.installed():
                statuses = await drive(app, bodies, key, requests, concurrency)
            own = time.process_time() - own
            cpu = redis_cpu_s(admin) - cpu
            if statuses != {expected: requests}:
                raise RuntimeError(f"{name}: expected {requests} answers {expected}, got {dict(statuses)}")
            total = sum(counter.trips.values())
            cpu_us = cpu * 1e6 / requests
            out[name] = {
                "requests": requests,
                "concurrency": concurrency,
                "status": expected,
                "round_trips": total // requests,
                "round_trips_exact": total / requests,
                "by_feature": {f: n / requests for f, n in sorted(counter.trips.items())},
                "redis_cpu_us": cpu_us,
                # The gateway's own CPU (this process: redis-py included, the counting wrapper too).
                "gateway_cpu_us": own * 1e6 / requests,
                "per_redis_core": (1e6 / cpu_us) if cpu_us > 0 else None,
            }
    finally:
        admin.close()
        await gateway.close()
    return out


def report(results: dict[str, Any]) -> str:
    lines = [
        f"\n{'path':<12}{'trips/req':>10}{'Redis CPU us/req':>18}{'req/s per Redis core':>22}"
        f"{'gateway CPU us/req':>20}  by feature",
    ]
    for name, row in results.items():
        per_core = f"{row['per_redis_core']:,.0f}" if row["per_redis_core"] else "-"
        features = ", ".join(f"{f} {n:g}" for f, n in row["by_feature"].items())
        lines.append(
            f"{name:<12}{row['round_trips_exact']:>10g}{row['redis_cpu_us']:>18.1f}{per_core:>22}"
            f"{row['gateway_cpu_us']:>20.0f}  {features}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redis round trips and Redis CPU per request, by feature.")
    parser.add_argument("--requests", type=int, default=2000, help="requests per path")
    parser.add_argument("--concurrency", type=int, default=1, help="clients sending at once")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    exclusive.hold("bench/store_trips.py")
    import logging

    logging.disable(logging.WARNING)  # "no price for route" and the like: not what is measured
    sys.path.insert(0, str(HERE.parent / "tests"))
    from redis_server import RedisServer  # tests/redis_server.py: a private server on a free loopback port

    workdir = Path(tempfile.mkdtemp(prefix="store-trips-"))
    with RedisServer() as server:
        results = asyncio.run(measure(server.url, args.requests, workdir, args.concurrency))
    print(report(results))
    out = args.json or HERE / "results" / f"store-trips-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
