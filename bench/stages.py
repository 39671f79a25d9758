"""What each pipeline feature costs, in process: CPU microseconds per request, no server, no network.

    python bench/stages.py                             # 3 rounds of 5,000 requests per configuration
    python bench/stages.py --requests 500 --rounds 1   # a quick look
    python bench/stages.py --metrics                   # the metrics' cost: production with them on vs off

Builds the gateway with ``create_app`` and an ``httpx.MockTransport`` answering the fixed completion, then
calls the ASGI app directly, one request at a time, and divides the process CPU time by the requests. The
configurations add one feature at a time to the bare gateway, so the differences are what each feature's
stage costs; the passthrough row is ``bench/passthrough.py``'s app on the same mock transport (the least a
FastAPI proxy with this HTTP client costs). Being CPU time in one process, the numbers hold on a busy
machine too, which the HTTP benchmark's requests/s do not.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402

from bench import exclusive  # noqa: E402
from bench.nginx import chat_body  # noqa: E402
from bench.systems import KEY, Upstream, gateway_config  # noqa: E402

UPSTREAM = Upstream(
    "mock", "http://upstream.invalid", "http://upstream.invalid/v1", "http://upstream.invalid/sse/v1"
)
ANSWER = chat_body()
NO_METRICS = "production, no metrics"


def mock_transport() -> httpx.MockTransport:
    """An upstream that answers every request with the fixed completion, instantly."""
    headers = {"content-type": "application/json"}
    return httpx.MockTransport(lambda request: httpx.Response(200, content=ANSWER, headers=headers))


def configs(workdir: Path) -> dict[str, dict[str, Any]]:
    """Bare, each feature alone on top of it, and production."""
    bare = gateway_config("gateway-bare", UPSTREAM, 0, workdir)
    production = gateway_config("gateway-production", UPSTREAM, 0, workdir)
    prod_key = production["auth"]["keys"][0]
    out: dict[str, dict[str, Any]] = {"bare": bare}

    with_limits = copy.deepcopy(bare)
    with_limits["auth"]["keys"][0].update(rpm=prod_key["rpm"], tpm=prod_key["tpm"])
    out["+ rate limit"] = with_limits

    with_budget = copy.deepcopy(bare)
    with_budget["auth"]["keys"][0]["budget"] = prod_key["budget"]
    with_budget["models"] = production["models"]
    out["+ budget"] = with_budget

    with_cache = copy.deepcopy(bare)
    with_cache["features"] = {"cache": production["features"]["cache"]}
    with_cache["state"] = production["state"]
    out["+ cache (miss)"] = with_cache

    # Tracing's own cost: spans made and batched but not exported (an exporter's network time is not the
    # gateway's), then with the opt-in content capture on top.
    with_tracing = copy.deepcopy(bare)
    with_tracing["features"] = {"tracing": {"exporter": "none"}}
    out["+ tracing"] = with_tracing
    with_content = copy.deepcopy(bare)
    with_content["features"] = {"tracing": {"exporter": "none", "capture_content": True}}
    out["+ tracing, content"] = with_content

    out["production (miss)"] = production
    out["production (hit)"] = production
    # The same production path with features.metrics off: the difference is what /metrics costs a request.
    without_metrics = copy.deepcopy(production)
    without_metrics.setdefault("features", {})["metrics"] = {"enabled": False}
    out[NO_METRICS] = without_metrics
    for name, config in out.items():
        config["usage"] = {"database": str(workdir / f"{name.replace(' ', '_')}.sqlite3")}
    return out


async def drive(app: Any, bodies: Callable[[int], bytes], requests: int, path: str) -> dict[str, Any]:
    """Call ``app`` sequentially ``requests`` times; CPU and wall time per request."""
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {KEY}".encode()),
    ]
    statuses: dict[int, int] = {}

    async def one(i: int) -> None:
        body = bodies(i)
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        await app(scope, receive, send)

    for i in range(min(200, requests)):
        await one(-1 - i)
    gc.collect()
    each: list[float] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(requests):
        started = time.perf_counter()
        await one(i)
        each.append(time.perf_counter() - started)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    each.sort()
    return {
        "requests": requests,
        "cpu_us": cpu * 1e6 / requests,
        "wall_us": wall * 1e6 / requests,
        "p50_us": each[len(each) // 2] * 1e6,
        "p99_us": each[int(len(each) * 0.99)] * 1e6,
        "max_us": each[-1] * 1e6,
        "statuses": statuses,
    }


def body_factory(vary: bool, tag: str) -> Callable[[int], bytes]:
    """Chat bodies: a new prompt per request (cache misses) or always the same one (hits)."""

    def make(i: int) -> bytes:
        prompt = f"{tag}-{i}" if vary else tag
        return json.dumps(
            {
                "model": "bench",
                "messages": [
                    {"role": "system", "content": "You are a benchmark."},
                    {"role": "user", "content": prompt},
                ],
                "max_tokens": 64,
            },
            separators=(",", ":"),
        ).encode()

    return make


async def measure_gateway(config: dict[str, Any], vary: bool, requests: int) -> dict[str, Any]:
    import yaml

    from gateway.app import create_app
    from gateway.config import parse_config

    app = create_app(parse_config(yaml.safe_dump(config), "<bench>"), transport=mock_transport())
    gateway = app.state.gateway
    await gateway.start()
    try:
        return await drive(
            app, body_factory(vary, f"p{time.monotonic_ns()}"), requests, "/v1/chat/completions"
        )
    finally:
        await gateway.close()


async def measure_passthrough(requests: int) -> dict[str, Any]:
    import bench.passthrough as passthrough

    original = passthrough.default_transport
    passthrough.default_transport = mock_transport  # type: ignore[assignment]
    try:
        app = passthrough.create_app(UPSTREAM.url)
    finally:
        passthrough.default_transport = original
    async with app.router.lifespan_context(app):
        return await drive(app, body_factory(True, "pass"), requests, "/v1/chat/completions")


def recording_us(calls: int = 100_000) -> float:
    """CPU microseconds the metrics' recording calls take per request, timed alone: what a request of the
    production path records (in flight up and down, the finished request, one answered upstream attempt).
    Far less noisy than the difference of two pipeline runs, which other work on the machine blurs."""
    from gateway.ledger import UsageRecord
    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    record = UsageRecord(
        ts=0.0, day="2026-01-01", request_id="r", key_name="bench", team=None, model="bench",
        route="up/bench", endpoint="chat", stream=False, prompt_tokens=20, completion_tokens=64,
        usage_source="reported", cost_nanos=75_000, latency_ms=1.5, status=200, cache_hit=False,
    )  # fmt: skip
    started = time.process_time()
    for _ in range(calls):
        metrics.in_flight.inc()
        metrics.upstream("bench", "up/bench", 0.0005)
        metrics.in_flight.dec()
        metrics.observe(record, "MISS", None)
    return (time.process_time() - started) * 1e6 / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU cost per request of each gateway feature, in process.")
    parser.add_argument("--requests", type=int, default=5000, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each configuration's cheapest is kept")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--metrics", action="store_true",
        help="only production (miss) with metrics on and off, alternating: the metrics' CPU cost per request",
    )  # fmt: skip
    args = parser.parse_args(argv)
    exclusive.hold("bench/stages.py")
    import logging

    logging.disable(logging.WARNING)  # "no price for route" and the like: not what is measured
    workdir = Path(tempfile.mkdtemp(prefix="stages-bench-"))
    results: dict[str, Any] = {}
    # Rounds over every configuration, keeping each one's cheapest round: other work on the machine only
    # ever adds CPU time (cache misses, migrations), so the minimum is the closest to the code's own cost.
    chosen = configs(workdir)
    if args.metrics:
        chosen = {name: chosen[name] for name in ("production (miss)", NO_METRICS)}
    for round_ in range(args.rounds):
        rows = {} if args.metrics else {"passthrough app": asyncio.run(measure_passthrough(args.requests))}
        # Alternate the order: measured, whichever configuration runs first in a round pays more (the
        # process's heap is still growing), which would bias a difference of two close configurations.
        order = list(chosen.items())
        for name, config in order if round_ % 2 == 0 else reversed(order):
            rows[name] = asyncio.run(
                measure_gateway(config, vary=name != "production (hit)", requests=args.requests)
            )
        for name, row in rows.items():
            if name not in results or row["cpu_us"] < results[name]["cpu_us"]:
                results[name] = row
    base = results["bare" if "bare" in results else NO_METRICS]["cpu_us"]
    print(
        f"\n{'configuration':<24}{'CPU us/req':>11}{'vs bare':>9}{'p50 us':>9}{'p99 us':>9}{'max us':>9}"
        "  statuses"
    )
    for name, row in results.items():
        delta = row["cpu_us"] - base
        print(
            f"{name:<24}{row['cpu_us']:>11.0f}{delta:>+9.0f}{row['p50_us']:>9.0f}{row['p99_us']:>9.0f}"
            f"{row['max_us']:>9.0f}  {row['statuses']}"
        )
    on, off = results["production (miss)"]["cpu_us"], results[NO_METRICS]["cpu_us"]
    recording = min(recording_us() for _ in range(3))
    # Not a configuration row (no "cpu_us"): bench/publish.py prints it as a sentence under the table.
    results["metrics_cost"] = {
        "us": on - off, "ratio": on / off, "share": (on - off) / on,
        "recording_us": recording, "recording_share": recording / on,
    }  # fmt: skip
    print(
        f"\nmetrics: {on - off:+.1f} CPU us per request; production with / without metrics = {on / off:.3f}"
        f" ({100 * (on - off) / on:.1f} % of the production path's CPU)"
        f"\nmetrics recording calls alone: {recording:.1f} CPU us per request"
        f" ({100 * recording / on:.1f} % of the production path's CPU)"
    )
    out = args.json or HERE / "results" / f"stages-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
