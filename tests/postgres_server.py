"""A real PostgreSQL server for tests: a private cluster in a temp dir on a free loopback port, then stopped.

`scripts/test` installs Debian's `postgresql` package; this module runs its `initdb` and `postgres` binaries
(``/usr/lib/postgresql/<version>/bin``) directly, without the package's system cluster. PostgreSQL refuses to
run as root, so when the tests run as root the cluster belongs to the `postgres` user the package creates (or
`nobody`), and its commands run through `runuser`. The `postgres` role has a password and TCP connections
must give it (scram-sha-256), so tests can check that the password never leaks. Durability is off (`fsync`):
the data is thrown away with the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from redis_server import free_port

PASSWORD = "pg-test-secret-5f1c9"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory, or None when none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _run_as() -> str | None:
    """The user the cluster runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """One `postgres` process on 127.0.0.1; `start()` waits until it accepts connections, `stop()` ends it."""

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed; scripts/test installs it with apt-get")
        self.bin = bin_dir
        self.port = port or free_port()
        self.user = _run_as()
        self._dir = tempfile.TemporaryDirectory(prefix="postgres-test-")
        self.data = Path(self._dir.name) / "data"
        self.sockets = Path(self._dir.name) / "sockets"
        self._proc: subprocess.Popen[bytes] | None = None
        self._initialised = False

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of the cluster's ``postgres`` database (with the password)."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def _initdb(self) -> None:
        root = Path(self._dir.name)
        self.sockets.mkdir()
        pwfile = root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (root, self.sockets, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            self._command(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
            ),
            capture_output=True,
            check=False,
        )  # fmt: skip
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace').strip()}")
        self._initialised = True

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (on the same port and data again after `stop()`) and wait until it is ready."""
        if not self._initialised:
            self._initdb()
        self._proc = subprocess.Popen(
            self._command(
                str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockets}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"postgres exited with {self._proc.returncode}: {err.strip()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections on port {self.port} within {timeout}s")

    def ready(self) -> bool:
        """True when the server accepts connections now."""
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            check=False,
        )
        return result.returncode == 0

    def create_database(self) -> str:
        """A new empty database of its own (for one test); returns its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        result = subprocess.run(
            [str(self.bin / "psql"), "-q", "-d", self.url, "-c", f'CREATE DATABASE "{name}"'],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {result.stderr.decode(errors='replace').strip()}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        """Stop the server (a fast shutdown) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # A fast shutdown: open connections (a test's pool) are ended instead of waited for.
        subprocess.run(
            self._command(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"),
            capture_output=True,
            check=False,
        )
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def close(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def available() -> bool:
    """Whether a PostgreSQL server can be started here (its binaries and `runuser` when root)."""
    return postgres_bin() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)
