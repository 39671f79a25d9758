"""Real Redis topologies for tests on loopback: a 3-master Cluster; a primary, a replica and 3 sentinels.

Each is a context manager that starts `redis-server` processes (free ports, no persistence, a temporary
directory each), waits until the topology is usable and stops everything on exit. Every wait is bounded.
`scripts/test` installs redis-server (which also serves as the sentinel with `--sentinel`).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from redis_server import free_port

SERVICE = "gwprimary"


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed; scripts/test installs redis-server with apt-get")
    return exe


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    """`redis-cli -p port args...` on loopback; its stdout."""
    done = subprocess.run(
        [_exe("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout


def wait_for(what: str, check: object, timeout: float) -> None:
    """Call `check()` until it returns true; RuntimeError naming `what` after `timeout` seconds."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """One redis-server (or sentinel) process on 127.0.0.1 in a directory of its own."""

    def __init__(self, args: list[str], port: int, workdir: Path) -> None:
        self.port = port
        self._log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [_exe("redis-server"), *args],
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                f"redis on port {port}",
                lambda: self.proc.poll() is None and cli(port, "PING").strip() == "PONG",
                15,
            )
        except RuntimeError:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL: the process dies as a crashed host would, without a clean shutdown."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate (kill after 10 s) and close the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class _Topology:
    def __init__(self) -> None:
        self._stack = ExitStack()
        self._dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="redis-topology-")))
        self.processes: list[Process] = []

    def _start(self, name: str, args: list[str], port: int) -> Process:
        workdir = self._dir / name
        workdir.mkdir()
        process = Process(args, port, workdir)
        self.processes.append(process)
        self._stack.callback(process.stop)
        return process

    def __enter__(self) -> _Topology:
        try:
            self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def start(self) -> None:
        raise NotImplementedError

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()


def _server_args(port: int) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "notice",
    ]


def cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is a valid port and free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterTopology(_Topology):
    """Three masters (each with `replicas` replicas), the 16384 slots split between them.

    `url` is the `redis+cluster://` URL. With replicas, `kill_master_of(key)` SIGKILLs the master owning the
    key's slot and `wait_for_failover(key)` waits until its replica has taken the slot over.
    """

    def __init__(self, replicas: int = 0) -> None:
        super().__init__()
        self.replicas = replicas

    def start(self) -> None:
        self.ports = [cluster_port() for _ in range(3 * (1 + self.replicas))]
        self.by_port: dict[int, Process] = {}
        for number, port in enumerate(self.ports):
            args = [*_server_args(port), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            self.by_port[port] = self._start(f"node{number}", [*args, "--cluster-node-timeout", "2000"], port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        replicas = ["--cluster-replicas", str(self.replicas)]
        subprocess.run(
            [_exe("redis-cli"), "--cluster", "create", *nodes, *replicas, "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        wait_for("the cluster to settle", lambda: all(self._ok(port) for port in self.ports), 30)

    def _ok(self, port: int) -> bool:
        if "cluster_state:ok" not in cli(port, "CLUSTER", "INFO"):
            return False
        # Every node agrees on the masters, and every master's replicas are linked.
        roles = [line.split()[2] for line in cli(port, "CLUSTER", "NODES").splitlines() if line.strip()]
        return sum("master" in role for role in roles) == 3 and sum("slave" in role for role in roles) == (
            3 * self.replicas
        )

    def owner_of(self, key: str, asking: int | None = None) -> int:
        """The port of the master owning `key`'s slot, as node `asking` (default: the first alive) sees it."""
        port = self._owner(key, asking)
        if port is None:
            raise RuntimeError(f"no live master owns the slot of {key!r}")
        return port

    def _owner(self, key: str, asking: int | None) -> int | None:
        alive = [port for port in self.ports if self.by_port[port].proc.poll() is None]
        port = asking if asking is not None else alive[0]
        slot = int(cli(port, "CLUSTER", "KEYSLOT", key).strip())
        for line in cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                first, _, last = span.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        return None

    def wait_for_replication(self, key: str) -> None:
        """Block until the replica of `key`'s master has every write the master acknowledged (WAIT 1)."""
        acked = cli(self.owner_of(key), "WAIT", "1", "5000").strip()
        if acked != "1":
            raise RuntimeError(f"the replica did not acknowledge the master's writes (WAIT said {acked!r})")

    def kill_master_of(self, key: str) -> int:
        """SIGKILL the master owning `key`'s slot; returns its port."""
        port = self.owner_of(key)
        self.by_port[port].kill()
        return port

    def wait_for_failover(self, key: str, dead: int, timeout: float = 60) -> None:
        """Wait until a live node other than `dead` owns `key`'s slot and the cluster is ok again."""
        alive = [port for port in self.ports if port != dead]
        wait_for(
            "a replica to take over the dead master's slots",
            lambda: (
                self._owner(key, alive[0]) not in (None, dead)
                and "cluster_state:ok" in cli(alive[0], "CLUSTER", "INFO")
            ),
            timeout,
        )

    @property
    def url(self) -> str:
        """The cluster URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)


class SentinelTopology(_Topology):
    """A primary, one replica and three sentinels watching them as `gwprimary` (quorum 2).

    Sentinels judge the primary down after 1 s without an answer; `kill_primary()` SIGKILLs it and
    `wait_for_promotion()` waits until the sentinels name the replica as the new primary.
    """

    def start(self) -> None:
        self.primary_port, self.replica_port = free_port(), free_port()
        self.primary = self._start("primary", _server_args(self.primary_port), self.primary_port)
        replica_args = [*_server_args(self.replica_port), "--replicaof", "127.0.0.1", str(self.primary_port)]
        self.replica = self._start("replica", replica_args, self.replica_port)
        wait_for(
            "the replica to sync",
            lambda: "master_link_status:up" in cli(self.replica_port, "INFO", "replication"),
            30,
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        for number, port in enumerate(self.sentinel_ports):
            workdir = self._dir / f"sentinel{number}"
            workdir.mkdir()
            # Sentinel rewrites its config file as it learns the topology, so each needs a writable one.
            (workdir / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            process = Process([str(workdir / "sentinel.conf"), "--sentinel"], port, workdir)
            self.processes.append(process)
            self._stack.callback(process.stop)
        wait_for(
            "every sentinel to see the replica and the other sentinels",
            lambda: all(self._sees_everyone(port) for port in self.sentinel_ports),
            30,
        )

    def _sees_everyone(self, port: int) -> bool:
        info = cli(port, "SENTINEL", "MASTER", SERVICE).split("\n")
        fields = dict(zip(info[::2], info[1::2], strict=False))
        return fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2"

    @property
    def url(self) -> str:
        """The Sentinel URL naming all three sentinels and the service, database 0."""
        return (
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
            + f"/{SERVICE}/0"
        )

    def primary_port_now(self, sentinel: int | None = None) -> int:
        """The port the sentinel on port `sentinel` (default: the first) names as the primary."""
        port = sentinel if sentinel is not None else self.sentinel_ports[0]
        host_port = cli(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE).split()
        return int(host_port[1])

    def wait_for_replication(self) -> None:
        """Block until the replica has every write the primary acknowledged (WAIT 1)."""
        acked = cli(self.primary_port, "WAIT", "1", "5000").strip()
        if acked != "1":
            raise RuntimeError(f"the replica did not acknowledge the primary's writes (WAIT said {acked!r})")

    def kill_primary(self) -> None:
        """SIGKILL the original primary."""
        self.primary.kill()

    def wait_for_promotion(self, timeout: float = 60) -> None:
        """Wait until every sentinel names the replica as primary and it accepts writes."""
        wait_for(
            "the sentinels to promote the replica",
            lambda: (
                all(self.primary_port_now(port) == self.replica_port for port in self.sentinel_ports)
                and "role:master" in cli(self.replica_port, "INFO", "replication")
            ),
            timeout,
        )
