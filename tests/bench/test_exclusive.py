"""One benchmark at a time (bench/exclusive.py): a second waits for the first, says for whom, and a killed
holder leaves no stale lock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def holder(lock: Path, name: str, then: str = "time.sleep(60)") -> subprocess.Popen[str]:
    """A process that takes ``lock`` as benchmark ``name``, prints "held", then runs ``then``."""
    code = (
        "import sys, time; from pathlib import Path; from bench import exclusive; "
        f"exclusive.hold({name!r}, Path({str(lock)!r})); print('held', flush=True); {then}"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_held(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held", process.stderr.read() if process.stderr else ""


def test_a_second_benchmark_waits_for_the_first_and_says_which(tmp_path: Path) -> None:
    lock = tmp_path / "bench.lock"
    first = holder(lock, "bench/gateway.py", then="time.sleep(1.5); print(time.time(), flush=True)")
    wait_held(first)
    second = holder(lock, "bench/stages.py", then="print(time.time(), flush=True)")
    out, err = second.communicate(timeout=30)
    first_out, _ = first.communicate(timeout=30)
    assert second.returncode == 0, err
    assert f"bench/stages.py: waiting for bench/gateway.py (pid {first.pid}" in err
    assert "measure each other" in err
    # It went on only once the first had finished its work (the first's last act, before exiting).
    assert out.splitlines()[0] == "held"
    assert float(out.splitlines()[1]) >= float(first_out.strip())
    assert lock.read_text().startswith(f"bench/stages.py (pid {second.pid}")


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    lock = tmp_path / "bench.lock"
    first = holder(lock, "bench/gateway.py")
    wait_held(first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)  # reaped, its pipes closed
    started = time.monotonic()
    second = holder(lock, "bench/idle.py", then="pass")
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0 and out.strip() == "held"
    assert "waiting" not in err
    assert time.monotonic() - started < 20


def test_benchmark_scripts_take_the_machine_lock() -> None:
    from bench.exclusive import LOCK_PATH

    with LOCK_PATH.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.skip("a benchmark is running on this machine")
        handle.seek(0)
        handle.truncate()
        handle.write("the lock test")
        handle.flush()
        script = subprocess.Popen(
            [sys.executable, "bench/json_codecs.py", "--number", "10", "--rounds", "1", "--json", os.devnull],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        # Still waiting while the lock is held: it has measured nothing yet.
        assert script.poll() is None
        fcntl.flock(handle, fcntl.LOCK_UN)
    out, err = script.communicate(timeout=120)
    assert script.returncode == 0, err
    assert "bench/json_codecs.py: waiting for the lock test to finish" in err
    assert "results:" in out
