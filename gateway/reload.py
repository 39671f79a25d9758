"""Hot config reload: apply a changed config file to a running gateway without a restart.

A reload re-reads the file the gateway was started with, validates it with the same ``load_config`` used
at start (every problem reported, the running config untouched), refuses changes that need a restart
(the listening socket, the state store, the usage ledger), builds a complete new
:class:`~gateway.runtime.Runtime` off to the side, starts its stages, and swaps it in with one assignment.
Requests already running keep the runtime they started with (streams included); the old runtime's
upstream transport is closed once its last request finished, or after ``drain_timeout_seconds``.

Triggers: ``POST /admin/reload``, ``SIGHUP`` (``gateway run``), and ``features.reload.watch`` which polls
the file's modification time and content hash (polling, not inotify: Kubernetes ConfigMap updates are
symlink swaps that inotify watchers often miss). ``GET /admin/config`` shows the running version.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.catalog import features_report
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.pipeline import run_hooks
from gateway.redact import Redactor
from gateway.reload_config import ReloadConfig
from gateway.runtime import Runtime, build_runtime, config_version

if TYPE_CHECKING:
    from gateway.app import Gateway

logger = logging.getLogger("gateway.reload")


@dataclass
class ReloadResult:
    """The outcome of one reload: ``status`` is ``reloaded``, ``unchanged``, ``invalid`` (config errors),
    ``rejected`` (a change that needs a restart), ``refused`` (it would lock the admin API out, see
    :func:`lockout_problems`) or ``no_source`` (started without a config file)."""

    status: str
    version: str
    previous_version: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the running config is the file's content now."""
        return self.status in ("reloaded", "unchanged")

    def summary(self) -> str:
        """One log line (names only, never a secret)."""
        if self.status == "reloaded":
            changes = describe(self.changes)
            return f"config reloaded: version {self.previous_version} -> {self.version}; {changes}"
        if self.status == "unchanged":
            return f"config reloaded: no changes (version {self.version})"
        return f"config not reloaded ({self.status}), running version {self.version} kept: " + "; ".join(
            self.problems
        )


def _by_name(items: list[Any]) -> dict[str, dict[str, Any]]:
    return {item.name: item.model_dump(mode="json") for item in items}


def _named_diff(old: list[Any], new: list[Any]) -> dict[str, list[str]]:
    before, after = _by_name(old), _by_name(new)
    return {
        "added": [name for name in after if name not in before],
        "removed": [name for name in before if name not in after],
        "changed": [name for name in after if name in before and before[name] != after[name]],
    }


def config_diff(old: GatewayConfig, new: GatewayConfig) -> dict[str, Any]:
    """What changed from ``old`` to ``new``, by name only (key values and other secrets never appear).

    ``keys``, ``models``, ``providers`` and ``teams`` list names added, removed and changed; ``features``
    lists the catalog features switched on or off and the ``features:`` sections whose settings changed;
    ``other`` names the remaining top-level settings that changed.
    """
    changes: dict[str, Any] = {
        "keys": _named_diff(old.auth.keys, new.auth.keys),
        "models": _named_diff(old.models, new.models),
        "providers": _named_diff(old.providers, new.providers),
        "teams": _named_diff(old.teams, new.teams),
    }
    before, after = features_report(old), features_report(new)
    old_features, new_features = old.features.model_dump(mode="json"), new.features.model_dump(mode="json")
    changes["features"] = {
        "enabled": [slug for slug, f in after.items() if f["enabled"] and not before[slug]["enabled"]],
        "disabled": [slug for slug, f in after.items() if not f["enabled"] and before[slug]["enabled"]],
        "changed": [name for name in new_features if old_features.get(name) != new_features[name]],
    }
    other = []
    if old.auth.master_key != new.auth.master_key:
        other.append("auth.master_key")
    for section in ("server", "state", "usage", "admin"):
        if getattr(old, section) != getattr(new, section):
            other.append(section)
    changes["other"] = other
    return changes


def describe(changes: dict[str, Any]) -> str:
    """``keys +[carol] -[bob]; models ~[echo]`` for the log; ``no changes`` when nothing changed."""
    parts = []
    for section in ("keys", "models", "providers", "teams"):
        diff = changes.get(section, {})
        marks = [f"{sign}[{', '.join(diff[kind])}]" for sign, kind in _SIGNS if diff.get(kind)]
        if marks:
            parts.append(f"{section} {' '.join(marks)}")
    features = changes.get("features", {})
    feature_marks = [
        f"{sign}[{', '.join(features[kind])}]"
        for sign, kind in (("+", "enabled"), ("-", "disabled"), ("~", "changed"))
        if features.get(kind)
    ]
    if feature_marks:
        parts.append(f"features {' '.join(feature_marks)}")
    if changes.get("other"):
        parts.append(f"other ~[{', '.join(changes['other'])}]")
    return "; ".join(parts) or "no changes"


_SIGNS = (("+", "added"), ("-", "removed"), ("~", "changed"))


def restart_problems(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Changes a reload cannot apply, one message each (values of secret settings are never shown)."""
    problems = []
    for name in ("host", "port"):
        before, after = getattr(old.server, name), getattr(new.server, name)
        if before != after:
            problems.append(
                f"server.{name}: changed from {before!r} to {after!r}; the listening socket cannot change "
                "while running, restart the gateway to apply it"
            )
    if old.server.tls != new.server.tls:
        problems.append(
            "server.tls: the listening TLS socket cannot change while running, "
            "restart the gateway to apply it"
        )
    if old.state != new.state:
        problems.append(
            "state: the shared state store cannot change while running (rate limits, budgets and cache "
            "live there), restart the gateway to apply it"
        )
    if old.usage != new.usage:
        problems.append(
            "usage: the usage ledger cannot change while running, restart the gateway to apply it"
        )
    if old.features.graphql != new.features.graphql:
        problems.append(
            "features.graphql: the /graphql route and its schema's limits are built at start, "
            "restart the gateway to apply it"
        )
    if old.admin.database != new.admin.database:
        problems.append(
            "admin.database: the runtime key store cannot change while running, "
            "restart the gateway to apply it"
        )
    # The console's routes are mounted at start (gateway/routes/console.py); turning it off needs no restart.
    if new.features.console.enabled and not old.features.console.enabled:
        problems.append(
            "features.console.enabled: the console is mounted at start, restart the gateway to turn it on"
        )
    return problems


def lockout_problems(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Changes that would lock the admin API out, unless the new file allows them explicitly."""
    if old.auth.master_key and not new.auth.master_key and not new.features.reload.allow_master_key_removal:
        return [
            "auth.master_key: the new file has no master key; applying it would lock the admin API (and "
            "POST /admin/reload) out. Restore it, or set features.reload.allow_master_key_removal: true "
            "in the new file to remove it on purpose"
        ]
    return []


_SECRET_NAME = re.compile(r"(^|[_-])(key|api_key|master_key|password|secret|token|authorization)$", re.I)
REDACTED = "***"


def redact(value: Any, name: str = "", secrets: Redactor | None = None) -> Any:
    """``value`` (a JSON-like config dump) with every secret replaced by ``***``.

    Secrets are, first, the configured secret values ``secrets`` knows (every upstream ``api_key``, every
    header value, passwords; see gateway/redact.py) wherever they appear and whatever their name; then, as
    a backstop, values under a name like ``key``, ``api_key``, ``master_key``, ``*_password``, ``*_secret``,
    ``*_token`` or ``authorization``, and the password in a URL such as ``state.redis_url``.
    """
    if isinstance(value, dict):
        if name == "tracing" and isinstance(value.get("headers"), dict):
            # A tracing backend's export headers are its credentials whatever their names or lengths.
            value = {**value, "headers": dict.fromkeys(value["headers"], REDACTED)}
        return {k: redact(v, str(k), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, name, secrets) for v in value]
    if isinstance(value, str) and _SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str) and secrets is not None and secrets.contains_secret(value):
        return REDACTED
    if isinstance(value, str) and "://" in value and "@" in value:
        return _redact_url(value)
    return value


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None and parts.username is None:
        return url
    # Everything after the credentials as written: a Sentinel or Cluster URL lists several host:port pairs,
    # which urlsplit's `port` cannot parse.
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{REDACTED}@{hosts}", parts.path, parts.query, parts.fragment))


def file_hash(path: Path) -> str | None:
    """SHA-256 of the file's bytes, or None when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Reloader:
    """Reloads one gateway's config file and retires the runtimes it replaces.

    One per app (no module-level state). ``source`` is the file the gateway was started with; None (the
    embedded default, or an app built from a config object) means there is nothing to reload.
    """

    def __init__(self, gateway: Gateway, source: Path | None) -> None:
        self.gateway = gateway
        # Absolute (a reload must not depend on the working directory) but with symlinks kept: a mounted
        # ConfigMap's file is a symlink re-pointed at a new directory on every update.
        self.source = Path(os.path.abspath(source)) if source is not None else None
        self.reloads = 0
        # Reload attempts, applied or not (tests and operators can see the watcher acted).
        self.attempts = 0
        # Whether the last reload attempt left the file's content running (for alerting on a bad edit).
        self.last_ok = True
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._retiring: dict[Runtime, asyncio.Future[Any]] = {}
        self._watcher: asyncio.Future[None] | None = None
        self._sighup_loop: asyncio.AbstractEventLoop | None = None
        # The content last loaded (or tried): the watcher reloads only when the file's content changes.
        self._seen_hash = file_hash(source) if source is not None else None

    @property
    def settings(self) -> ReloadConfig:
        """``features.reload`` of the running config."""
        return self.gateway.runtime.config.features.reload

    async def reload(self) -> ReloadResult:
        """Re-read the config file and swap it in if it is valid and reloadable (see the module docstring)."""
        async with self._lock:
            result = await self._reload()
        if result.status != "no_source":
            self.last_ok = result.ok
            self.attempts += 1
        return result

    async def _reload(self) -> ReloadResult:
        current = self.gateway.runtime
        if self.source is None:
            return ReloadResult(
                "no_source",
                current.version,
                problems=["this gateway was not started from a config file, so there is nothing to reload"],
            )
        self._seen_hash = await asyncio.to_thread(file_hash, self.source)
        try:
            config = await asyncio.to_thread(load_config, self.source)
        except ConfigError as exc:
            return ReloadResult("invalid", current.version, problems=list(exc.problems))
        problems = restart_problems(current.config, config)
        if problems:
            return ReloadResult("rejected", current.version, problems=problems)
        problems = lockout_problems(current.config, config)
        if problems:
            return ReloadResult("refused", current.version, problems=problems)
        if config_version(config) == current.version:
            return ReloadResult("unchanged", current.version, current.version)
        runtime: Runtime | None = None
        try:
            shared, transport = self.gateway.shared, self.gateway.injected_transport
            runtime = build_runtime(config, shared, transport=transport, source=str(self.source))
            if self.gateway.started:
                # Restores budget windows for new keys and teams; the shared ledger is already open.
                await run_hooks(runtime.stages, "start")
        except Exception as exc:
            # Validation passed but building failed (an unreadable certificate, a ledger error): the running
            # config stays; the type and message name the cause without a traceback.
            if runtime is not None:
                await runtime.aclose()
            # Redacted: the exception may quote a setting of the new file (a password, a header value).
            old = self.gateway.redactor
            reason = Redactor.from_config(config).extended(old.secrets, old.digests).text(str(exc))
            problem = f"{self.source}: building the new config failed: {type(exc).__name__}: {reason}"
            return ReloadResult("invalid", current.version, problems=[problem])
        self.gateway.runtime = runtime  # the swap: one assignment, atomic for every coroutine
        self.reloads += 1
        self.retire(current)
        self._sync_watcher()
        return ReloadResult("reloaded", runtime.version, current.version, config_diff(current.config, config))

    async def reload_and_log(self, trigger: str) -> ReloadResult:
        """Reload and log the outcome (for SIGHUP and the watcher, which have nobody to answer)."""
        result = await self.reload()
        if result.ok:
            logger.info("%s: %s", trigger, result.summary())
        else:
            logger.warning("%s: %s", trigger, result.summary())
        return result

    def retire(self, runtime: Runtime) -> None:
        """Close ``runtime``'s upstream transport once no request uses it (or after the drain timeout)."""
        runtime.retired = True
        self._retiring[runtime] = self._spawn(self._retire(runtime, self.settings.drain_timeout_seconds))

    async def _retire(self, runtime: Runtime, timeout: float) -> None:
        if not await runtime.drain(timeout):
            logger.warning(
                "config version %s: %d request(s) still running after %.0f s; closing its upstream clients",
                runtime.version, runtime.in_flight, timeout,
            )  # fmt: skip
        await runtime.aclose()
        self._retiring.pop(runtime, None)

    async def wait_retired(self) -> None:
        """Wait until every retired runtime has drained (or timed out) and closed."""
        await asyncio.gather(*self._retiring.values())

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coroutine)
        # Held until done: the event loop keeps only weak references to tasks.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def handles_sighup(self) -> bool:
        """Whether a SIGHUP handler is installed (``gateway run``, while serving)."""
        return self._sighup_loop is not None

    def start(self, *, sighup: bool = False) -> None:
        """Start the watcher if ``features.reload.watch`` is on; with ``sighup``, reload on SIGHUP."""
        self._sync_watcher()
        if sighup and self.source is not None and hasattr(signal, "SIGHUP"):
            loop = asyncio.get_running_loop()
            try:
                loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload_and_log("SIGHUP")))
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                # Only the main thread's event loop can handle signals; the other triggers still work.
                logger.warning("SIGHUP reload unavailable (%s); POST /admin/reload and the watcher work", exc)
                return
            self._sighup_loop = loop

    def _sync_watcher(self) -> None:
        wanted = self.source is not None and self.settings.watch and not self.gateway.closing
        if wanted and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        assert self.source is not None
        # None: the first tick hashes the file, catching a change made between loading it and now.
        stamp: tuple[int, int, int] | None = None
        while self.settings.watch and not self.gateway.closing:
            await asyncio.sleep(self.settings.interval_seconds)
            now = _mtime(self.source)
            if now == stamp:
                continue
            stamp = now
            # mtime moved (or the ConfigMap symlink was swapped): reload only if the content differs.
            if await asyncio.to_thread(file_hash, self.source) != self._seen_hash:
                try:
                    await self.reload_and_log(f"watch {self.source}")
                except Exception as exc:
                    # Fail open on purpose: the watcher outlives any one bad attempt and tries again on
                    # the next tick; the running config stays. Type and message only, no traceback.
                    self.last_ok = False
                    stamp = None
                    reason = self.gateway.redactor.text(str(exc))
                    logger.warning("watch %s: reload failed: %s: %s", self.source, type(exc).__name__, reason)

    async def close(self) -> None:
        """Stop the watcher and SIGHUP handler; close every retired runtime still draining."""
        if self._sighup_loop is not None:
            self._sighup_loop.remove_signal_handler(signal.SIGHUP)
            self._sighup_loop = None
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runtime in list(self._retiring):
            await runtime.aclose()
        self._retiring.clear()


def _mtime(path: Path) -> tuple[int, int, int] | None:
    try:
        # stat follows the ConfigMap's ..data symlink, so a swap shows up as a new inode or mtime.
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


_STATUS = {
    "reloaded": 200,
    "unchanged": 200,
    "invalid": 422,
    "rejected": 422,
    "refused": 422,
    "no_source": 409,
}
_CODES = {
    "invalid": "invalid_config",
    "rejected": "restart_required",
    "refused": "master_key_removal",
    "no_source": "no_config_file",
}


def reload_endpoint(gateway: Gateway) -> Callable[[], Awaitable[JSONResponse]]:
    """``POST /admin/reload``: 200 with the changes, 422 with every problem, 409 without a config file."""

    async def reload() -> JSONResponse:
        result = await gateway.reloader.reload_and_log("POST /admin/reload")
        if result.ok:
            body: dict[str, Any] = {
                "status": result.status,
                "version": result.version,
                "previous_version": result.previous_version,
                "changes": result.changes,
            }
            return JSONResponse(body)
        message = {
            "invalid": "The config file is invalid; the running config is unchanged.",
            "rejected": "The config file changes settings that need a restart; "
            "the running config is unchanged.",
            "refused": "The config file removes the master key without "
            "features.reload.allow_master_key_removal: true; the running config is unchanged.",
            "no_source": "Nothing to reload: this gateway was not started from a config file.",
        }[result.status]
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": _CODES[result.status],
            "problems": result.problems,
        }
        return JSONResponse({"error": error, "version": result.version}, status_code=_STATUS[result.status])

    return reload


def config_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """``GET /admin/config``: the running config's version, load time and source, secrets redacted."""

    async def config(request: Request) -> dict[str, Any]:
        return running_config(gateway)

    return config


def running_config(gateway: Gateway) -> dict[str, Any]:
    """The running config's version, load time and source, secrets redacted (``GET /admin/config``, the
    console's config page)."""
    runtime = gateway.runtime
    return {
        "version": runtime.version,
        "loaded_at": runtime.loaded_at.isoformat(),
        "source": runtime.source,
        "reloadable": gateway.reloader.source is not None,
        "reloads": gateway.reloader.reloads,
        "watch": runtime.config.features.reload.watch,
        "config": redact(runtime.config.model_dump(mode="json"), secrets=gateway.redactor),
    }
