"""Load from wrk: a Lua script that POSTs a chat body and prints its summary as one JSON line.

The script optionally varies the prompt on every request (``vary``: a run nonce plus a counter, so a
cache misses every time and no two runs share prompts).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "BENCH_JSON "

LUA = r"""
local head = [==[{head}]==]
local tail = [==[{tail}]==]
local nonce = "{nonce}"
local vary = {vary}
local counter = 0

wrk.method = "POST"
wrk.body = head .. nonce .. tail
wrk.headers["Content-Type"] = "application/json"
{auth}

if vary then
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, head .. nonce .. "-" .. counter .. tail)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Load:
    """What to send: ``body`` is the JSON with ``PROMPT`` where the varying text goes."""

    url: str
    body: str
    key: str | None = None
    vary: bool = False
    nonce: str = "bench"


PROMPT = "@PROMPT@"


def available() -> bool:
    """True when wrk is installed."""
    return shutil.which("wrk") is not None


def script(load: Load) -> str:
    """The Lua script for ``load``."""
    head, sep, tail = load.body.partition(PROMPT)
    if not sep:
        raise ValueError(f"body has no {PROMPT} marker: {load.body}")
    auth = f'wrk.headers["Authorization"] = "Bearer {load.key}"' if load.key else ""
    # wrk's counter starts again at 1 in every run: a varying load gets a nonce of its own per run too, or a
    # second run against the same gateway would repeat the first run's prompts and hit its cache.
    nonce = f"{load.nonce}-{secrets.token_hex(4)}" if load.vary else load.nonce
    return LUA.format(
        head=head,
        tail=tail,
        nonce=nonce,
        vary="true" if load.vary else "false",
        auth=auth,
        mark=MARK,
    )


def run(
    load: Load,
    *,
    connections: int,
    duration_s: float,
    cpu: int | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Run wrk with one thread; returns its summary with ``rps`` and error counts added."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script(load))
        path = Path(handle.name)
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(path),
        load.url,
    ]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 120)
    finally:
        path.unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-1000:]}{proc.stdout[-1000:]}")
    result: dict[str, Any] = json.loads(line[len(MARK) :])
    seconds = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds if seconds else 0.0
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    result["connections"] = connections
    return result
