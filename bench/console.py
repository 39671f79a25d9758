"""CPU per production request with the admin console open versus closed, in one run.

    python bench/console.py                         # 3 rounds of 30 s per phase
    python bench/console.py --seconds 3 --rounds 1  # a quick look
    python bench/console.py --history 60000         # a ledger already holding 60,000 requests an hour

Builds the gateway with ``create_app`` (the production configuration of ``bench/gateway.py`` with
``features.console`` on) and an in-memory upstream, then calls the ASGI app directly, one request at a time
with a new prompt each (cache misses: the upstream answers, the ledger records), in alternating phases:

- **closed**: nobody looks at the console;
- **open**: an admin is logged in with the overview open: its live stream (``/console/events?page=overview``,
  which re-reads the ledger every second: traffic table and charts) is connected and read, and the whole
  overview page is fetched again every ``--poll`` seconds, as a reload would.

Everything runs in this process on one event loop, so the process's CPU time per production request in each
phase includes the console's work while it was open (its ledger reads and rendering, and the benchmark's
client side of them, counted against the console). The phases alternate (closed, open, closed, open...) so
drift on a shared machine affects both; the medians over rounds are compared. The ratio open/closed is the
console's cost to production requests (target at most 1.05, issue 16); it depends on the request rate,
since the console's reads are per second, not per request: the rate of each phase is printed beside it.
``--history N`` first writes N usage records spread over the last hour and N more over the 30 days before
(straight to the ledger, as a busy gateway's would be), so the console's reads meet a production-sized
ledger from the first phase. At the end, the CPU time of one overview read is measured twice on that
ledger: with an empty bucket cache (every bucket read, as before the console kept closed buckets) and again
with the cache the first filled (only the open buckets read), which is what each refresh costs.
Phases last a fixed time rather than a number of requests, so each open phase spans several of the live
stream's refreshes (whose interval grows with the cost of a read, see ``LIVE_SHARE`` in
gateway/routes/console.py) and of the page fetches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench import exclusive  # noqa: E402
from bench.stages import UPSTREAM, body_factory, mock_transport  # noqa: E402
from bench.store_trips import drive  # noqa: E402
from bench.systems import KEY, MASTER_KEY, gateway_config  # noqa: E402

TARGET = 1.05
CHUNK = 50  # requests between two looks at the clock
PHASES = ("closed", "open")


def console_config(workdir: Path) -> dict[str, Any]:
    """bench/gateway.py's production config with the console on."""
    config = gateway_config("gateway-production", UPSTREAM, 0, workdir)
    config.setdefault("features", {})["console"] = {"enabled": True}
    return config


async def log_in(client: Any) -> str:
    """Log in to the console with the master key; the session cookie's value."""
    form = await client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if csrf is None:
        raise RuntimeError("the console's login page has no CSRF token")
    answer = await client.post("/console/login", data={"csrf": csrf.group(1), "key": MASTER_KEY})
    if answer.status_code != 303:
        raise RuntimeError(f"console login answered {answer.status_code}")
    return str(client.cookies["gateway_console"])


class OpenConsole:
    """A logged-in overview: its live stream read by one task, the page re-fetched by another."""

    def __init__(self, app: Any, client: Any, session: str, poll_s: float) -> None:
        self.app = app
        self.client = client
        self.session = session
        self.poll_s = poll_s
        self.events: Counter[str] = Counter()  # "rows" events received, pages polled
        self.first_rows = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def stream(self) -> None:
        """``GET /console/events?page=overview`` over ASGI, read until cancelled."""
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # the browser never hangs up while the phase runs
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                raise RuntimeError(f"the live stream answered {message['status']}")
            if message["type"] == "http.response.body" and b"event: rows" in message.get("body", b""):
                self.events["rows"] += 1
                self.first_rows.set()

        query = b"page=overview&window=hour"
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/console/events", "raw_path": b"/console/events",
            "query_string": query, "root_path": "", "client": ("127.0.0.1", 50001),
            "server": ("127.0.0.1", 8080), "state": {},
            "headers": [(b"host", b"bench"), (b"cookie", f"gateway_console={self.session}".encode())],
        }  # fmt: skip
        await self.app(scope, receive, send)

    async def poll(self) -> None:
        while True:
            page = await self.client.get("/console")
            if page.status_code != 200:
                raise RuntimeError(f"the overview answered {page.status_code}")
            self.events["polls"] += 1
            await asyncio.sleep(self.poll_s)

    async def __aenter__(self) -> OpenConsole:
        self.tasks = [asyncio.create_task(self.stream()), asyncio.create_task(self.poll())]
        await asyncio.wait_for(self.first_rows.wait(), 30)  # the stream is up before requests start
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def fill_history(gateway: Any, count: int) -> None:
    """``count`` records over the last hour and ``count`` over the 30 days before, written to the ledger."""
    import dataclasses
    from datetime import UTC, datetime

    from gateway.console.data import usage_stage

    ledger = usage_stage(gateway).ledger
    [sample] = await ledger.records(limit=1)
    now = time.time()
    for index in range(2 * count):
        span = 3600.0 if index < count else 30 * 86400.0
        ts = now - span * ((index * 7919) % count + 0.5) / count
        day = datetime.fromtimestamp(ts, UTC).date().isoformat()
        ledger.record(dataclasses.replace(sample, ts=ts, day=day, request_id=f"history-{index}"))
        if index % 5000 == 4999:
            await ledger.flush()
    await ledger.flush()


async def overview_cpu(gateway: Any) -> dict[str, float] | None:
    """CPU ms of one overview read with an empty bucket cache, then with the one it filled (median of 5)."""
    try:
        from gateway.console.bucket_cache import FRESH_S, BucketCache
    except ImportError:  # a checkout from before the cache: nothing to compare
        return None
    from gateway.console import data

    cold, warm = [], []
    for _ in range(5):
        cache = BucketCache()
        for into in (cold, warm):
            await asyncio.sleep(FRESH_S)  # the warm read is not served by the cold one's open minutes
            cpu = time.process_time()
            await data.overview(gateway, cache=cache)
            into.append((time.process_time() - cpu) * 1000)
    return {"cold_ms": statistics.median(cold), "warm_ms": statistics.median(warm)}


async def drive_for(app: Any, tag: str, seconds: float) -> tuple[int, Counter[int]]:
    """Production requests, one at a time, each with a new prompt, for ``seconds``: how many and statuses."""
    bodies = body_factory(True, tag)
    sent, statuses = 0, Counter[int]()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        statuses += await drive(app, lambda i, start=sent: bodies(start + i), KEY, CHUNK)
        sent += CHUNK
    return sent, statuses


async def measure(
    seconds: float, rounds: int, poll_s: float, workdir: Path, history: int = 0
) -> dict[str, Any]:
    import httpx
    import yaml

    from gateway.app import create_app
    from gateway.config import parse_config

    config = console_config(workdir)
    app = create_app(parse_config(yaml.safe_dump(config), "<bench>"), transport=mock_transport())
    gateway = app.state.gateway
    await gateway.start()
    tag = f"c{time.monotonic_ns()}"
    runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            session = await log_in(client)
            await drive(app, body_factory(True, tag + "-warm"), KEY, 200)  # connections, ledger, caches warm
            if history:
                await fill_history(gateway, history)
            for round_ in range(rounds):
                for phase in PHASES:
                    console = OpenConsole(app, client, session, poll_s) if phase == "open" else None
                    async with console or contextlib.nullcontext():
                        cpu, wall = time.process_time(), time.perf_counter()
                        requests, statuses = await drive_for(app, f"{tag}-{phase}-{round_}", seconds)
                        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    if statuses != {200: requests}:
                        raise RuntimeError(f"{phase}: expected {requests} answers 200, got {dict(statuses)}")
                    runs[phase].append(
                        {
                            "requests": requests,
                            "cpu_us_per_request": cpu * 1e6 / requests,
                            "requests_per_s": requests / wall,
                            "live_events": console.events["rows"] if console else 0,
                            "overview_polls": console.events["polls"] if console else 0,
                        }
                    )
        overview = await overview_cpu(gateway)
    finally:
        await gateway.close()
    summary = {
        phase: {
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in rows),
            "requests_per_s": statistics.median(r["requests_per_s"] for r in rows),
            "runs": rows,
        }
        for phase, rows in runs.items()
    }
    ratio = summary["open"]["cpu_us_per_request"] / summary["closed"]["cpu_us_per_request"]
    return {
        "seconds_per_phase": seconds,
        "rounds": rounds,
        "poll_s": poll_s,
        "history": history,
        "overview_cpu": overview,
        "phases": summary,
        "ratio": ratio,
        "target": TARGET,
    }


def report(results: dict[str, Any]) -> str:
    lines = [f"\n{'console':<8}{'CPU us/req':>12}{'req/s':>10}{'live events':>13}{'overview polls':>16}"]
    for phase, row in results["phases"].items():
        events = sum(r["live_events"] for r in row["runs"])
        polls = sum(r["overview_polls"] for r in row["runs"])
        lines.append(
            f"{phase:<8}{row['cpu_us_per_request']:>12.0f}{row['requests_per_s']:>10.0f}{events:>13}{polls:>16}"
        )
    verdict = "ok" if results["ratio"] <= results["target"] else "OVER TARGET"
    ratio = results["ratio"]
    lines.append(f"\nratio open/closed (CPU per request): {ratio:.3f}  target <= {TARGET}  {verdict}")
    if results["overview_cpu"]:
        cold, warm = results["overview_cpu"]["cold_ms"], results["overview_cpu"]["warm_ms"]
        lines.append(
            f"one overview read: {cold:.1f} ms CPU with an empty bucket cache, {warm:.1f} ms with it"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU per production request, the console open vs closed.")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="closed/open pairs (medians are compared)")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between overview page fetches")
    parser.add_argument(
        "--history", type=int, default=0, help="records written first: N in the hour, N before"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    exclusive.hold("bench/console.py")
    import logging

    logging.disable(logging.WARNING)  # "no price for route" and the like: not what is measured
    workdir = Path(tempfile.mkdtemp(prefix="console-bench-"))
    results = asyncio.run(measure(args.seconds, args.rounds, args.poll, workdir, args.history))
    print(report(results))
    out = args.json or HERE / "results" / f"console-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
