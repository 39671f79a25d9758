"""One benchmark at a time on this machine: two at once measure each other.

Every benchmark script calls :func:`hold` once its arguments are read. It takes an exclusive ``flock`` on
one file in the temporary directory, shared by every checkout on the machine (the cores are shared too),
and keeps it until the process ends. The kernel releases it however the process ends, so a crashed run
leaves no stale lock. When another benchmark holds it, the script says which and waits for it: a run
started beside another would have both pinned to the same cores, and each would publish the other's
load as its own cost (seen once: every start-up time in such a run doubled).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

LOCK_PATH = Path(tempfile.gettempdir()) / "gateway-bench.lock"


def hold(script: str, path: Path = LOCK_PATH) -> IO[str]:
    """Take the machine's benchmark lock for the rest of this process, waiting while another benchmark
    holds it; returns the open lock file (closed, which releases the lock, when the process exits)."""
    try:
        handle = path.open("a+")
    except PermissionError:
        # Another user's lock file: still lockable for reading, only this run's name is not recorded.
        handle = path.open("r")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another benchmark"
        print(
            f"{script}: waiting for {holder} to finish (two benchmarks at once measure each other)",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(handle, fcntl.LOCK_EX)
    if handle.writable():
        handle.seek(0)
        handle.truncate()
        handle.write(f"{script} (pid {os.getpid()}, since {time.strftime('%H:%M:%S')})")
        handle.flush()
    atexit.register(handle.close)
    return handle
