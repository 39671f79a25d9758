"""What the usage ledger costs per request, in process: the production gateway with no ledger, the SQLite sink
and the PostgreSQL sink, as CPU microseconds per request and as ratios.

    python bench/ledger.py                              # 3 rounds of 5,000 requests per sink
    python bench/ledger.py --requests 500 --rounds 1    # a quick look
    python bench/ledger.py --postgres-url postgresql://user:pw@host/db   # an existing server

Same harness as ``bench/stages.py`` (the ASGI app called directly, the upstream an in-memory mock), on the
``gateway-production`` config. "no ledger" builds every request's record (the usage stage needs its
accounting for the cost header anyway) but never queues or writes it, so the difference to a sink is the
ledger's whole cost: the queue, the background writer and the driver, worker threads included. Each round
ends with a flush inside the measured time, so every record is written. The PostgreSQL server's own CPU is
another process and is not counted; without ``--postgres-url`` a private server is started from Debian's
packages (``tests/postgres_server.py``), or the row is skipped when none is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench import exclusive  # noqa: E402
from bench.stages import UPSTREAM, body_factory, drive, mock_transport  # noqa: E402
from bench.systems import gateway_config  # noqa: E402


async def measure(config: dict[str, Any], requests: int, *, record: bool) -> dict[str, Any]:
    import yaml

    from gateway.app import create_app
    from gateway.config import parse_config
    from gateway.ledger import Ledger

    app = create_app(parse_config(yaml.safe_dump(config), "<bench>"), transport=mock_transport())
    gateway = app.state.gateway
    await gateway.start()
    ledger: Ledger = gateway.shared.ledger
    if not record:
        ledger.record = lambda record: None  # type: ignore[method-assign]
    try:
        bodies = body_factory(True, f"p{time.monotonic_ns()}")
        cpu = time.process_time()
        row = await drive(app, bodies, requests, "/v1/chat/completions")
        await ledger.flush()
        row["cpu_us"] = (time.process_time() - cpu) * 1e6 / requests
        row["written"] = ledger.pending == 0 and not ledger.health.failing
        return row
    finally:
        await gateway.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU cost per request of the usage ledger's sinks.")
    parser.add_argument("--requests", type=int, default=5000, help="requests per sink and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each sink's cheapest is kept")
    parser.add_argument("--postgres-url", default=None, help="an existing database (default: start one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    exclusive.hold("bench/ledger.py")
    import logging

    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    base = gateway_config("gateway-production", UPSTREAM, 0, workdir)
    with ExitStack() as stack:
        postgres_url = args.postgres_url
        if postgres_url is None:
            sys.path.insert(0, str(HERE.parent / "tests"))
            from postgres_server import PostgresServer, available

            if available():
                postgres_url = stack.enter_context(PostgresServer()).url
            else:
                print("PostgreSQL is not installed: the postgres row is skipped", file=sys.stderr)
        sinks: dict[str, dict[str, Any]] = {
            "no ledger": {"database": str(workdir / "none.sqlite3")},
            "sqlite": {"database": str(workdir / "usage.sqlite3")},
        }
        if postgres_url:
            sinks["postgres"] = {"sink": "postgres", "postgres_url": postgres_url}
        results: dict[str, dict[str, Any]] = {}
        for _ in range(args.rounds):
            for name, usage in sinks.items():
                config = copy.deepcopy(base)
                config["usage"] = usage
                row = asyncio.run(measure(config, args.requests, record=name != "no ledger"))
                if name not in results or row["cpu_us"] < results[name]["cpu_us"]:
                    results[name] = row
    none = results["no ledger"]["cpu_us"]
    print(f"\n{'sink':<12}{'CPU us/req':>11}{'+ us':>8}{'ratio':>8}{'p50 us':>9}  written  statuses")
    for name, row in results.items():
        row["ratio"] = row["cpu_us"] / none
        row["extra_us"] = row["cpu_us"] - none
        print(
            f"{name:<12}{row['cpu_us']:>11.0f}{row['extra_us']:>+8.0f}{row['ratio']:>7.3f}x"
            f"{row['p50_us']:>9.0f}  {row['written']!s:<7}  {row['statuses']}"
        )
    out = args.json or HERE / "results" / f"ledger-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
