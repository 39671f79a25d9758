"""Multi-process building blocks for multi-region tests, all on loopback, all stopped by their owner.

- `RegionStores`: one `redis-server` per region plus a global one reached only through a `DelayProxy`
  (tests/delay_proxy.py), so every command a replica sends to the global store pays the simulated
  cross-region round trip;
- `UpstreamProcess`: `gateway mock-upstream` as a child process that a test can SIGKILL mid-load, as a
  provider region going down would (connections in flight reset, new ones refused);
- `start_replicas`: several `gateway run` processes, one per (region, config text), started at once and
  each waited for on `/ready` (which checks both stores).

Every wait is bounded and every process is killed when its context ends, whatever the test did. A module
with a unique name next to tests/conftest.py (which puts tests/ on sys.path), like redis_server.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
from delay_proxy import DelayProxy
from redis_server import RedisServer, free_port

STARTUP_SECONDS = 60  # four Python processes starting at once on a busy 2-core machine


def _wait_ok(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {STARTUP_SECONDS}s: {log.read_text()[-2000:]}")


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


class UpstreamProcess:
    """`gateway mock-upstream` on a free loopback port, as a process of its own that `kill()` SIGKILLs."""

    def __init__(self, folder: Path, name: str, *, latency_ms: float = 0, reply: str | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.log = folder / f"upstream-{name}.log"
        command = [
            sys.executable, "-m", "gateway.cli", "mock-upstream",
            "--port", str(self.port), "--latency-ms", str(latency_ms),
        ]  # fmt: skip
        if reply is not None:
            command += ["--reply", reply]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ok(f"http://127.0.0.1:{self.port}/health", self.process, self.log, f"upstream {name}")
        except BaseException:
            _end(self.process)
            raise

    @property
    def base_url(self) -> str:
        """The `base_url` of an `openai` provider pointing here."""
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        """SIGKILL: requests in flight lose their connection, new connections are refused."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        _end(self.process)


@dataclass
class Replica:
    """One `gateway run` process serving one region's config."""

    region: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def start_replicas(folder: Path, configs: Sequence[tuple[str, str]]) -> Iterator[list[Replica]]:
    """`gateway run` for each (region, config text), all spawned before any is waited for (they start in
    parallel); yields them once every one answers `/ready`, and kills them all when the block ends."""
    replicas: list[Replica] = []
    try:
        for number, (region, text) in enumerate(configs):
            path = folder / f"replica-{number}-{region}.yaml"
            path.write_text(text)
            port = free_port()
            log = folder / f"replica-{number}-{region}.log"
            command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(path), "--port", str(port)]
            with log.open("wb") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
            replicas.append(Replica(region, f"http://127.0.0.1:{port}", process, log))
        for replica in replicas:
            _wait_ok(
                f"{replica.url}/ready", replica.process, replica.log, f"gateway replica in {replica.region}"
            )
        yield replicas
    finally:
        for replica in replicas:
            _end(replica.process)


class RegionStores:
    """A `redis-server` per region and a global one behind a `DelayProxy` of `delay_ms` each way.

    `regional[region]` is a region's `redis://` URL; `global_url` is the proxied (delayed) URL replicas use,
    `global_direct` the server itself (for a test to read what was stored without paying the delay).
    """

    def __init__(self, regions: Sequence[str], *, delay_ms: float = 40) -> None:
        self.regions = list(regions)
        self.delay_ms = delay_ms
        self._stack = ExitStack()

    def __enter__(self) -> RegionStores:
        try:
            self.regional = {region: self._stack.enter_context(RedisServer()).url for region in self.regions}
            server = self._stack.enter_context(RedisServer())
            self.global_direct = server.url
            self.proxy = self._stack.enter_context(DelayProxy(server.port, delay_ms=self.delay_ms))
            self.global_url = self.proxy.url
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()
