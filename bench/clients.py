"""Client loops that wrk cannot do: streaming (time to first byte, chunks/s) and the overhead header.

Both run one request at a time over one keep-alive connection, so they see latency, not throughput.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.wrk import PROMPT, Load

DELTA = b'"delta"'


def _body(load: Load, counter: int) -> bytes:
    # "c" keeps these prompts apart from wrk's (``nonce-<run>-<n>``), which would be cache hits here.
    prompt = f"{load.nonce}-c{counter}" if load.vary else load.nonce
    return load.body.replace(PROMPT, prompt).encode()


def _headers(load: Load) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if load.key:
        headers["authorization"] = f"Bearer {load.key}"
    return headers


def _loop(requests: int, budget_s: float, one: Callable[[int], None]) -> int:
    """Call ``one(i)`` up to ``requests`` times or until ``budget_s`` has passed; returns how many ran."""
    deadline = time.perf_counter() + budget_s
    done = 0
    while done < requests and (done == 0 or time.perf_counter() < deadline):
        one(done)
        done += 1
    return done


def streaming(load: Load, requests: int, budget_s: float, warmup: int = 2) -> dict[str, Any]:
    """Stream ``load`` sequentially: median time to first content chunk, and content chunks per second.

    A content chunk is an SSE event with a ``delta`` (the usage chunk and ``[DONE]`` are not counted);
    chunks/s is every content chunk received over the whole time spent streaming.
    """
    ttfb: list[float] = []
    durations: list[float] = []
    chunks_total = 0
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=60.0) as client:

        def one(i: int, record: bool = True) -> None:
            nonlocal chunks_total
            started = time.perf_counter()
            first = None
            chunks = 0
            tail = b""
            with client.stream("POST", load.url, content=_body(load, i), headers=_headers(load)) as response:
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                for data in response.iter_raw():
                    # A marker may straddle two reads: count on the joined edge, once.
                    window = tail + data
                    found = window.count(DELTA) - tail.count(DELTA)
                    if found and first is None:
                        first = time.perf_counter() - started
                    chunks += found
                    tail = window[-(len(DELTA) - 1) :]
            if record:
                durations.append(time.perf_counter() - started)
                if first is not None:
                    ttfb.append(first)
                chunks_total += chunks

        for i in range(warmup):
            one(-1 - i, record=False)
        statuses.clear()
        count = _loop(requests, budget_s, one)
    total = sum(durations)
    return {
        "requests": count,
        "statuses": {str(k): v for k, v in statuses.items()},
        "chunks_per_stream": chunks_total / count if count else 0,
        "ttfb_ms_p50": statistics.median(ttfb) * 1000 if ttfb else None,
        "stream_ms_p50": statistics.median(durations) * 1000 if durations else None,
        "chunks_per_s": chunks_total / total if total else 0.0,
    }


def overhead(load: Load, requests: int, budget_s: float, warmup: int = 20) -> dict[str, Any]:
    """Sequential requests: median ``x-gateway-overhead-ms`` (when sent) and median client latency."""
    values: list[float] = []
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cache: dict[str, int] = {}
    with httpx.Client(timeout=30.0) as client:

        def one(i: int, record: bool = True) -> None:
            started = time.perf_counter()
            response = client.post(load.url, content=_body(load, i), headers=_headers(load))
            elapsed = time.perf_counter() - started
            if not record:
                return
            latencies.append(elapsed)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            header = response.headers.get("x-gateway-overhead-ms")
            if header is not None:
                values.append(float(header))
            state = response.headers.get("x-gateway-cache")
            if state:
                cache[state] = cache.get(state, 0) + 1

        for i in range(warmup):
            one(-1 - i, record=False)
        count = _loop(requests, budget_s, one)
    return {
        "requests": count,
        "statuses": {str(k): v for k, v in statuses.items()},
        "overhead_ms_p50": statistics.median(values) if values else None,
        "overhead_ms_p99": _percentile(values, 99) if values else None,
        "latency_ms_p50": statistics.median(latencies) * 1000 if latencies else None,
        "cache": cache,
    }


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
