"""What a cross-region store costs per request: latency added and global round trips, per multi-region mode.

    python bench/multi_region.py                 # 100 requests per mode, 40 ms each way (80 ms RTT)
    python bench/multi_region.py --quick         # 10 requests per mode: does everything work?
    python bench/multi_region.py --delay-ms 20 --requests 300

Starts two private ``redis-server`` processes on loopback: the region's own and a "global" one reached only
through ``tests/delay_proxy.py``, which delays every byte by ``--delay-ms`` each way, the simulated link to
another region. The gateway runs in process (``create_app``, the production configuration of
``bench/gateway.py``: a key with rpm, tpm and a budget, the cache on and missing, every request a new
prompt) in front of an instant in-memory upstream, one request at a time, for each mode:

- **all regional**: ``state.redis_url`` only (the baseline: no cross-region call at all);
- **budgets global**: ``state.global_redis_url`` with ``global_features: [budgets]`` (the default);
- **everything global**: ``global_features: [budgets, rate_limit, cache]``;
- **rate limits partitioned**: ``partitioned_features: [rate_limit]`` with nothing else global, and again
  with budgets global. A gateway that refuses ``state.partitioned_features`` (not built on this checkout)
  skips these modes with a printed note.

For each: the latency of a request as the client sees it (the call until the last body byte; median and p99)
and what the mode adds over the baseline, and the round trips to each store per request. A *round trip* is
one redis-py ``send_packed_command`` (a pipeline is one); it is global when the connection is the proxy's.
Trips are counted for a request when they run in its context (the work it starts after answering, such as a
budget settlement, included); trips of background tasks (a rebalancer) are counted apart, per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import statistics
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

BASELINE = "all regional"
MODES: dict[str, dict[str, Any]] = {
    BASELINE: {},
    "budgets global": {"global_features": ["budgets"]},
    "everything global": {"global_features": ["budgets", "rate_limit", "cache"]},
    # Partitioned limits are shared by the regions `state.regions` lists (this replica's and another's).
    "rate limits partitioned": {
        "global_features": [],
        "partitioned_features": ["rate_limit"],
        "regions": ["eu-west", "us-east"],
    },
    "rl partitioned + budgets global": {
        "global_features": ["budgets"],
        "partitioned_features": ["rate_limit"],
        "regions": ["eu-west", "us-east"],
    },
}
WARMUP = 5  # connections opened (through the delay too) and scripts loaded before anything is measured

# Set while the bench drives a request: tasks the request starts inherit it, the gateway's own do not.
_IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("in_request", default=False)


class StoreTrips:
    """Counts redis-py round trips by store (global: the proxy's port) and by who made them."""

    def __init__(self, global_port: int) -> None:
        self.global_port = global_port
        self.trips: Counter[str] = Counter()

    def record(self, port: int) -> None:
        store = "global" if port == self.global_port else "regional"
        self.trips[f"{store} {'request' if _IN_REQUEST.get() else 'background'}"] += 1

    @contextmanager
    def installed(self) -> Iterator[None]:
        from redis.asyncio.connection import AbstractConnection

        original = AbstractConnection.send_packed_command

        async def counting(conn: Any, command: Any, check_health: bool = True) -> None:
            self.record(int(getattr(conn, "port", 0)))
            await original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def mode_config(mode: dict[str, Any], regional: str, global_url: str, workdir: Path) -> dict[str, Any]:
    """bench/gateway.py's production config in region eu-west, its state split as `mode` says."""
    config = gateway_config("gateway-production", UPSTREAM, 0, workdir)
    config["server"]["region"] = "eu-west"
    state: dict[str, Any] = {"redis_url": regional, "on_error": "fail_closed", "timeout_seconds": 5}
    if mode:
        state.update(global_redis_url=global_url, **mode)
    config["state"] = state
    return config


async def one(app: Any, body: bytes) -> tuple[int, float]:
    """One request through the ASGI app: its status and seconds until the last body byte."""
    status = 0
    done = asyncio.Event()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await done.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080), "state": {},
        "headers": [
            (b"host", b"bench"), (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {KEY}".encode()), (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    token = _IN_REQUEST.set(True)
    try:
        started = time.perf_counter()
        call = asyncio.ensure_future(app(scope, receive, send))
        await done.wait()
        elapsed = time.perf_counter() - started
        await call
    finally:
        _IN_REQUEST.reset(token)
    return status, elapsed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(
    name: str, config: dict[str, Any], bodies: Callable[[int], bytes], requests: int, global_port: int
) -> dict[str, Any]:
    import yaml

    from gateway.app import create_app
    from gateway.config import parse_config

    app = create_app(parse_config(yaml.safe_dump(config), f"<{name}>"), transport=mock_transport())
    gateway = app.state.gateway
    await gateway.start()
    counter = StoreTrips(global_port)
    try:
        for i in range(WARMUP):
            await one(app, bodies(-1 - i))
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        with counter.installed():
            for i in range(requests):
                status, seconds = await one(app, bodies(i))
                statuses[status] += 1
                latencies.append(seconds)
            await asyncio.sleep(0.5)  # writes after the answer (settlements) finish inside the count
    finally:
        await gateway.close()
    if statuses != {200: requests}:
        raise RuntimeError(f"{name}: expected {requests} answers 200, got {dict(statuses)}")
    per = {kind: n / requests for kind, n in counter.trips.items()}
    return {
        "requests": requests,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "global_trips": per.get("global request", 0.0),
        "regional_trips": per.get("regional request", 0.0),
        "background_global_trips": counter.trips.get("global background", 0),
    }


def refused_by_config(config: dict[str, Any]) -> str | None:
    """The config error if this gateway refuses the mode's config (a mode not built here), else None."""
    import yaml

    from gateway.config import ConfigError, parse_config

    try:
        parse_config(yaml.safe_dump(config), "<mode>")
    except ConfigError as exc:
        return " ".join(line.strip() for line in str(exc).splitlines()[1:]) or str(exc)
    return None


def report(results: dict[str, Any], delay_ms: float) -> str:
    lines = [
        f"\nsimulated link to the global store: {delay_ms:g} ms each way ({2 * delay_ms:g} ms round trip)",
        f"{'mode':<34}{'global trips/req':>17}{'regional':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'added p50':>11}{'added p99':>11}",
    ]
    base = results[BASELINE]
    for name, row in results.items():
        if "skipped" in row:
            lines.append(f"{name:<34}  skipped: {row['skipped']}")
            continue
        added_p50, added_p99 = row["p50_ms"] - base["p50_ms"], row["p99_ms"] - base["p99_ms"]
        lines.append(
            f"{name:<34}{row['global_trips']:>17g}{row['regional_trips']:>10g}{row['p50_ms']:>9.1f}"
            f"{row['p99_ms']:>9.1f}{added_p50:>+11.1f}{added_p99:>+11.1f}"
        )
    background = {
        n: r["background_global_trips"] for n, r in results.items() if r.get("background_global_trips")
    }
    if background:
        lines.append("global trips off the hot path (background tasks, whole run): " + json.dumps(background))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Latency and global round trips per multi-region mode.")
    parser.add_argument("--requests", type=int, default=100, help="requests per mode")
    parser.add_argument("--delay-ms", type=float, default=40.0, help="one-way delay to the global store")
    parser.add_argument("--quick", action="store_true", help="10 requests per mode")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    exclusive.hold("bench/multi_region.py")
    requests = 10 if args.quick else args.requests
    import logging

    logging.disable(logging.WARNING)  # "no price for route" and the like: not what is measured
    sys.path.insert(0, str(HERE.parent / "tests"))
    from delay_proxy import DelayProxy  # tests/delay_proxy.py: the simulated cross-region link
    from redis_server import RedisServer  # tests/redis_server.py: a private server on a free loopback port

    workdir = Path(tempfile.mkdtemp(prefix="multi-region-"))
    results: dict[str, Any] = {}
    with (
        RedisServer() as regional,
        RedisServer() as remote,
        DelayProxy(remote.port, delay_ms=args.delay_ms) as link,
    ):
        for number, (name, mode) in enumerate(MODES.items()):
            config = mode_config(mode, regional.url, link.url, workdir)
            refused = refused_by_config(config)
            if refused is not None:
                print(f"{name}: skipped, this gateway refuses the config ({refused})")
                results[name] = {"skipped": refused}
                continue
            bodies = body_factory(True, f"mr{number}-{time.monotonic_ns()}")
            results[name] = asyncio.run(measure(name, config, bodies, requests, link.port))
    print(report(results, args.delay_ms))
    out = args.json or HERE / "results" / f"multi-region-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"delay_ms": args.delay_ms, "modes": results}, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
