"""How cheap a cache hit can be on the gateway's server stack: a hit written for that one purpose, against the
gateway's own.

The floor app does the work a hit cannot skip, and nothing else: find the key (SHA-256 of the bearer token,
a dict lookup), read and parse the body (orjson) and check its model and messages, compute the canonical cache
key (sorted JSON, SHA-256) and look the entry up, count the request against the key's requests-per-minute
bucket (GCRA), encode the answer with ``usage.cost_usd``, send it with the gateway's headers (request id,
cache, route, cost, six ``x-ratelimit-*``, overhead), write a usage record to the real SQLite ledger
(``gateway.ledger.Ledger``) and count it in Prometheus (a counter and a histogram). It runs on the gateway's
server stack (uvicorn, uvloop, httptools, the one-write protocol), pinned to the same core.

What it leaves out, each a few µs in the gateway: the body's full schema checks, budgets, the key's model
permissions, Cache-Control, cache generations and tenants, the runtime snapshot that makes a config reload
safe mid-request, the drain's in-flight count, tracing, the access log, error envelopes. So its figure is a
floor, not a design: the gap between it and ``gateway-cache-hit`` is what the gateway's general request path
costs a hit, and it says whether the 3× target of issue 20 is within reach of a purpose-built hit path.

A third figure is the gateway's hit on a config without the key's rate limits and budget and with metrics
off (the cache and the always-on usage ledger remain): what the gateway's general request path costs a hit
before any of the features a hit must also pay for, so the least any hit path sharing that request path
(envelope, authentication, body checks, usage record) could cost.

    python bench/hit_floor.py                    # 6 interleaved rounds of 4 s at 32 connections
    python bench/hit_floor.py --rounds 1 --duration 1
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import orjson  # noqa: E402
import uvicorn  # noqa: E402
import yaml  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402

from bench import exclusive, wrk  # noqa: E402
from bench import gateway as bench  # noqa: E402
from bench.systems import KEY, MODEL, build  # noqa: E402
from gateway.ids import IdSource  # noqa: E402
from gateway.ledger import Ledger  # noqa: E402
from gateway.ledger_sqlite import SQLiteSink  # noqa: E402
from gateway.server_protocol import OneWriteHttpToolsProtocol  # noqa: E402
from gateway.usage_record import UsageRecord  # noqa: E402

ANSWER = {
    "id": "chatcmpl-floor",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x" * 400}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
}
RPM = 1_000_000_000
BARE = "gateway-cache-hit, cache only"
SYSTEMS = ["floor", "gateway-cache-hit", BARE]


class FloorHit:
    """The ASGI app: every request a cache hit (the first one stores the entry it then serves)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.keys = {hashlib.sha256(KEY.encode()).digest(): ("bench", "bench")}
        self.ids = IdSource()
        registry = CollectorRegistry()
        self.requests = Counter("floor_requests", "Requests.", ["model", "cache"], registry=registry)
        self.duration = Histogram("floor_duration_seconds", "Latency.", ["model"], registry=registry)
        self.entries: dict[str, dict[str, Any]] = {}
        self.tat: dict[str, float] = {}  # GCRA: each bucket's theoretical arrival time
        self.ledger: Any = None

    def count(self, bucket: str, limit: int, now: float) -> tuple[bool, int, float]:
        """GCRA on a one-minute window: (admitted, remaining, seconds to reset)."""
        interval = 60.0 / limit
        arrival = max(self.tat.get(bucket, now), now) + interval
        if arrival - now > 60.0:
            return False, 0, arrival - now
        self.tat[bucket] = arrival
        return True, int((60.0 - (arrival - now)) / interval), arrival - now

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        started = time.perf_counter()
        token = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        who = self.keys.get(hashlib.sha256(token[7:]).digest()) if token.startswith(b"Bearer ") else None
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = orjson.loads(b"".join(chunks))
        if (
            who is None
            or not isinstance(body.get("model"), str)
            or not isinstance(body.get("messages"), list)
        ):
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        key = hashlib.sha256(orjson.dumps([who[0], body], option=orjson.OPT_SORT_KEYS)).hexdigest()
        entry = self.entries.setdefault(key, ANSWER)
        now = time.time()
        admitted, remaining, reset = self.count(f"rpm:{who[0]}", RPM, now)
        if not admitted:
            await send({"type": "http.response.start", "status": 429, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        payload = orjson.dumps({**entry, "usage": {**entry["usage"], "cost_usd": "0"}})
        request_id = self.ids.hex32()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-gateway-cache", b"HIT"),
            (b"x-gateway-route", b"upstream/bench"),
            (b"x-gateway-cost-usd", b"0"),
            (b"x-gateway-usage-source", b"reported"),
            (b"x-ratelimit-limit-requests", str(RPM).encode()),
            (b"x-ratelimit-remaining-requests", str(remaining).encode()),
            (b"x-ratelimit-reset-requests", f"{math.ceil(reset)}s".encode()),
            (b"x-ratelimit-limit-tokens", b"1000000000000"),
            (b"x-ratelimit-remaining-tokens", b"1000000000000"),
            (b"x-ratelimit-reset-tokens", b"0s"),
            (b"x-gateway-overhead-ms", f"{(time.perf_counter() - started) * 1000:.3f}".encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        latency = round((time.perf_counter() - started) * 1000, 3)
        self.ledger.record(
            UsageRecord(
                ts=now, day=time.strftime("%Y-%m-%d", time.gmtime(now)), request_id=request_id,
                key_name=who[0], team=who[1], model=body["model"], route=None, endpoint="chat", stream=False,
                prompt_tokens=10, completion_tokens=20, usage_source="reported", cost_nanos=0,
                latency_ms=latency, status=200, cache_hit=True, attempts=0, ttft_ms=None, cached_tokens=0,
                avoided_cost_nanos=0, cache_status="HIT", error_code=None, overhead_ms=latency, region=None,
                reservation_id=None, trace_id=request_id,
            )
        )  # fmt: skip
        self.requests.labels(body["model"], "hit").inc()
        self.duration.labels(body["model"]).observe(latency / 1000)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.ledger = Ledger(SQLiteSink(self.database))
                await self.ledger.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.ledger.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait (at most 30 s) until the floor app accepts connections on ``port``."""
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"the floor app exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the floor app never listened")


def serve(port: int, database: str) -> None:
    """Run the floor app on the gateway's server stack (this script's child process)."""
    uvicorn.run(
        FloorHit(database), host="127.0.0.1", port=port, loop="uvloop", http=OneWriteHttpToolsProtocol,
        log_level="warning", access_log=False, lifespan="on",
    )  # fmt: skip


def strip_features(config_path: Path) -> None:
    """Rewrite the gateway config at ``config_path`` without the key's rate limits and budget and with
    metrics off: the cache and the always-on usage ledger remain (what the gateway's hit costs before any
    of the features a hit also pays for)."""
    config = yaml.safe_load(config_path.read_text())
    for key in config["auth"]["keys"]:
        for field in ("rpm", "tpm", "budget"):
            key.pop(field, None)
    config.setdefault("features", {})["metrics"] = {"enabled": False}
    config_path.write_text(yaml.safe_dump(config))


def run(rounds: int, duration: float) -> dict[str, Any]:
    load_cpu, system_cpu = bench.cores()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    workdir = Path(tempfile.mkdtemp(prefix="hit-floor-"))
    upstream, handle = bench.start_upstream(load_cpu, workdir)
    figures: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    floor = None
    gateways: list[Any] = []
    try:
        system = build("gateway-cache-hit", upstream, bench.free_port(), workdir, system_cpu)
        gateways.append(bench.start(system, workdir / "log"))
        # The same hit on a second gateway whose config drops the features a hit pays for besides the cache.
        bare_dir = workdir / "bare"
        bare_dir.mkdir()
        bare = build("gateway-cache-hit", upstream, bench.free_port(), bare_dir, system_cpu)
        strip_features(Path(bare.command[bare.command.index("--config") + 1]))
        gateways.append(bench.start(bare, bare_dir / "log"))
        port = bench.free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port), "--database",
                   str(workdir / "floor.sqlite3")]  # fmt: skip
        if system_cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(system_cpu), *command]
        floor = subprocess.Popen(command)
        floor_load = wrk.Load(
            f"http://127.0.0.1:{port}/v1/chat/completions", system.chat.body, key=KEY, nonce="floor"
        )
        listening(port, floor)
        pids = {"floor": floor.pid, "gateway-cache-hit": gateways[0].pid, BARE: gateways[1].pid}
        loads = {"floor": floor_load, "gateway-cache-hit": system.chat, BARE: bare.chat}
        for k in range(rounds):
            # Each system first, last and in between in turn: a stretch of the machine's time lands on all.
            order = SYSTEMS[k % 3 :] + SYSTEMS[: k % 3]
            for name in order:
                wrk.run(loads[name], connections=32, duration_s=1, cpu=load_cpu)  # warm, and the first hit
                before = bench.tree_cpu_s(pids[name])
                result = wrk.run(loads[name], connections=32, duration_s=duration, cpu=load_cpu)
                spent = bench.tree_cpu_s(pids[name]) - before
                if result["errors"] or not result["requests"]:
                    raise RuntimeError(f"{name}: {result}")
                figures[name].append(spent / result["requests"] * 1e6)
    finally:
        for running in gateways:
            bench.stop_process(running.process)
        if floor is not None:
            floor.terminate()
            floor.wait(30)
        bench.stop_upstream(handle)
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    return {
        "benchmark": "hit_floor",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": bench.machine(),
        "rounds": rounds,
        "duration_s": duration,
        "cpu_us_per_request": figures,
        "median_cpu_us": medians,
        "gateway_vs_floor": medians["gateway-cache-hit"] / medians["floor"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--duration", type=float, default=4, help="seconds per load run (default 4)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--database", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.database)
        return 0
    if not wrk.available():
        print("error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    exclusive.hold("bench/hit_floor.py")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run(args.rounds, args.duration)
    medians = result["median_cpu_us"]
    print(f"CPU µs per cache hit at 32 connections, median of {result['rounds']} interleaved rounds:")
    print(f"  a hit written for that one purpose:        {medians['floor']:7.1f}")
    print(f"  gateway-cache-hit:                         {medians['gateway-cache-hit']:7.1f}")
    print(f"  the same, no rate limit, budget, metrics:  {medians[BARE]:7.1f}")
    print(f"  ratio gateway / floor {result['gateway_vs_floor']:.2f}x")
    print(f"\nresults: {bench.save(result, 'hit-floor', args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
