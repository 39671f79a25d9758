"""How much of the overhead header at one connection is the host's idle states, not the gateway's code.

At one connection the gateway's core is idle between requests (the client and the upstream take the rest of
each round trip). An idle CPU halts, and on a virtual machine a halted vCPU gives its physical core back to
the host; the next request then starts on a CPU that has to be woken and whose caches other work has
cooled. This measures ``gateway-production``'s median ``x-gateway-overhead-ms`` (true cache misses, one
connection, the same client as ``bench/gateway.py``) in interleaved rounds, as the host runs and with every
CPU held out of its idle states by a PM QoS request (``/dev/cpu_dma_latency`` set to 0 while the file is held
open, what latency-tuned hosts set: tuned's ``latency-performance`` profile, HAProxy's ``busy-polling`` for
VMs). The ratio between the two is the part of the figure that belongs to the host, not the gateway.

    python bench/idle.py                     # 6 rounds of 2,000 requests each way (about a minute)
    python bench/idle.py --rounds 2 --requests 200

The published overhead target is measured as the host runs (``bench/gateway.py``); this is a diagnostic of
what limits it. Opening ``/dev/cpu_dma_latency`` needs root; without it only the first figure is measured
and the script says why. Writes JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import clients, exclusive  # noqa: E402
from bench import gateway as bench  # noqa: E402
from bench.systems import build  # noqa: E402

PM_QOS = Path("/dev/cpu_dma_latency")
SYSTEM = "gateway-production"


@contextlib.contextmanager
def cpus_awake() -> Iterator[None]:
    """Hold every CPU out of its idle states (a PM QoS latency of 0 µs) until the block ends."""
    fd = os.open(PM_QOS, os.O_WRONLY)
    try:
        os.write(fd, struct.pack("i", 0))
        yield
    finally:
        os.close(fd)  # the kernel drops the request with the file


def awake_unavailable() -> str | None:
    """Why the CPUs cannot be held awake here, or None when they can."""
    if not PM_QOS.exists():
        return f"{PM_QOS} does not exist on this kernel"
    try:
        with cpus_awake():
            pass
    except OSError as exc:
        return f"cannot open {PM_QOS}: {exc.strerror}"
    return None


def measure(load: Any, requests: int, budget_s: float) -> float:
    """The median overhead header of ``requests`` sequential requests."""
    result = clients.overhead(load, requests, budget_s=budget_s)
    value = result["overhead_ms_p50"]
    if value is None:
        raise RuntimeError(f"{SYSTEM} sent no x-gateway-overhead-ms header")
    if set(result["statuses"]) != {"200"}:
        raise RuntimeError(f"{SYSTEM} answered {result['statuses']}")
    return float(value)


def run(rounds: int, requests: int) -> dict[str, Any]:
    load_cpu, system_cpu = bench.cores()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})  # the client shares the load core, as in bench/gateway.py
    why = awake_unavailable()
    workdir = Path(tempfile.mkdtemp(prefix="idle-bench-"))
    upstream, handle = bench.start_upstream(load_cpu, workdir)
    figures: dict[str, list[float]] = {"as_is": [], "awake": []}
    try:
        system = build(SYSTEM, upstream, bench.free_port(), workdir, system_cpu)
        running = bench.start(system, workdir / "log")
        try:
            warm = dataclasses.replace(system.chat, nonce=f"{system.chat.nonce}-warm")
            measure(warm, min(requests, 300), 60)
            for k in range(rounds):
                # Each round's prompts are new (true misses), and the order turns every round.
                modes = ["as_is", "awake"] if k % 2 == 0 else ["awake", "as_is"]
                for mode in modes:
                    if mode == "awake" and why is not None:
                        continue
                    load = dataclasses.replace(system.chat, nonce=f"{system.chat.nonce}-{mode}-{k}")
                    hold = cpus_awake() if mode == "awake" else contextlib.nullcontext()
                    with hold:
                        figures[mode].append(measure(load, requests, 120))
        finally:
            bench.stop_process(running.process)
    finally:
        bench.stop_upstream(handle)
        shutil.rmtree(workdir, ignore_errors=True)
    as_is = statistics.median(figures["as_is"])
    awake = statistics.median(figures["awake"]) if figures["awake"] else None
    return {
        "benchmark": "idle",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": bench.machine(),
        "system": SYSTEM,
        "rounds": rounds,
        "requests": requests,
        "upstream": upstream.kind,
        "overhead_ms": {"as_is": figures["as_is"], "awake": figures["awake"]},
        "median_ms": {"as_is": as_is, "awake": awake},
        "host_share": None if awake is None else (as_is - awake) / as_is,
        "awake_unavailable": why,
    }


def report(result: dict[str, Any]) -> str:
    median = result["median_ms"]
    lines = [
        f"{result['system']}, one connection, median x-gateway-overhead-ms over {result['rounds']} rounds "
        f"of {result['requests']} requests:",
        f"  as the host runs:            {median['as_is']:.3f} ms",
    ]
    if median["awake"] is None:
        lines.append(f"  CPUs held awake:             not measured ({result['awake_unavailable']})")
    else:
        lines.append(f"  CPUs held awake (PM QoS 0):  {median['awake']:.3f} ms")
        lines.append(
            f"  ratio as-is / awake {median['as_is'] / median['awake']:.2f}x: "
            f"{result['host_share'] * 100:.0f} % of the figure is the host's idle states"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds each way, interleaved (default 6)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round (default 2000)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    exclusive.hold("bench/idle.py")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run(args.rounds, args.requests)
    print(report(result))
    print(f"\nresults: {bench.save(result, 'idle', args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
