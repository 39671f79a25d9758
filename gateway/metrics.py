"""Prometheus metrics of one gateway, with the standard client (``prometheus_client``).

:class:`GatewayMetrics` owns a :class:`CollectorRegistry` per app (tests build several apps in one process)
and the families an SRE dashboards and alerts on. Labels are bounded on purpose: model alias, route
(``provider/model``), HTTP status, cache result, refusal reason, upstream error kind; never a key, a team
or free text (thousands of keys would make thousands of series).

Hot path: the pipeline records through children bound once per label combination and kept in plain dicts
(:meth:`GatewayMetrics.observe`), so a request costs a few dict lookups and increments, no label dict.

Values that live elsewhere (the ledger's queue and health counters, route cooldowns held in the state
store, the config version) are *sampled* into the registry: at every scrape, and once a second per worker
when a scrape may not reach the worker that holds them (``--workers N``, or the separate listener).

**Several workers** (``gateway run --workers N``): ``gateway/cli.py`` creates a private
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, so the client keeps each worker's values in its own
memory-mapped file there; a scrape of any worker (or of the listener, which the supervisor then serves)
merges every file (:func:`multiprocess_registry`), so totals cover all workers, dead ones included; the
gauges of workers that are gone are dropped. One app per process in that mode (the worker's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from gateway.ledger import UsageRecord

logger = logging.getLogger("gateway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; from a cache hit to a long completion.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Time to first token: a streamed answer's first chunk, from a few ms (cache) to a slow model's queue.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# How often each worker copies sampled values into the shared files (multiprocess mode or listener).
SAMPLE_INTERVAL_S = 1.0

# Gateway refusals by the error code the refusing stage raises; anything else is not a refusal.
REFUSALS = {"rate_limit_exceeded": "rate_limit", "budget_exceeded": "budget"}
# Upstream error kinds: the providers' specific error codes without their ``upstream_`` prefix. Any other
# code an attempt fails with (the generic ``upstream_error``, a client error the upstream answered) is
# labelled by its status class (``status_5xx``), so the label set stays bounded.
UPSTREAM_KINDS = frozenset(
    {
        *("timeout", "unreachable", "unavailable", "overloaded", "rate_limited"),
        *("auth", "invalid", "stream", "read"),
    }
)

Sampler = Callable[["GatewayMetrics"], Awaitable[None]]


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process records into it (the client decides at import)."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and getattr(values.ValueClass, "_multiprocess", False) else None


def error_kind(code: str | None, status: int) -> str:
    """The bounded ``kind`` label of an upstream failure with error ``code`` and HTTP ``status``."""
    if code is not None and code.startswith("upstream_") and code[9:] in UPSTREAM_KINDS:
        return code[9:]
    return f"status_{status // 100}xx"


class _ModelChildren:
    """The children of one model alias, bound once."""

    __slots__ = ("budget_warnings", "cache", "completion", "cost", "duration", "prompt", "refusals", "ttft")

    def __init__(self, metrics: GatewayMetrics, model: str) -> None:
        self.duration = metrics.request_duration.labels(model)
        self.prompt = metrics.tokens.labels(model, "prompt")
        self.completion = metrics.tokens.labels(model, "completion")
        self.cost = metrics.cost.labels(model)
        self.ttft = metrics.ttft.labels(model)
        self.budget_warnings = metrics.budget_warnings.labels(model)
        # Bound when first seen: a config without features.cache shows no cache series at all.
        self.cache: dict[str, Counter] = {}
        # Bound at once: a refusal rate then starts from a zero series, which alerts can rate().
        self.refusals = {reason: metrics.refusals.labels(model, reason) for reason in REFUSALS.values()}


class GatewayMetrics:
    """Every metric family the gateway exports, in one registry of its own (see the module docstring)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir()
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests", "Requests handled by the pipeline, by model, route, status and cache hit.",
            ("model", "route", "status", "cache"), registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time from request to answer (or end of stream).",
            ("model",), buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Upstream time of each answered attempt, to the answer or a stream's first chunk.",
            ("model", "route"), buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "gateway_ttft_seconds", "Time to first token of streamed answers.",
            ("model",), buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "gateway_tokens", "Tokens used (reported by upstreams or estimated).", ("model", "direction"),
            registry=r,
        )  # fmt: skip
        self.cost = Counter("gateway_cost_usd", "Cost of the requests in USD.", ("model",), registry=r)
        self.cache = Counter(
            "gateway_cache_requests", "Cache lookups by result (hit, miss, bypass), with features.cache on.",
            ("model", "result"), registry=r,
        )  # fmt: skip
        self.refusals = Counter(
            "gateway_refusals", "Requests the gateway refused itself: rate_limit or budget (429).",
            ("model", "reason"), registry=r,
        )  # fmt: skip
        self.budget_warnings = Counter(
            "gateway_budget_warnings",
            "Requests served while a budget they spend from is past its soft limit (near its limit).",
            ("model",), registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Failed upstream attempts by route and kind (timeout, status_5xx...).",
            ("route", "kind"), registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests in the pipeline now (streams until they end).",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.cooldown = Gauge(
            "gateway_route_cooldown_open", "1 while a route's circuit is open or half-open after failures.",
            ("model", "route"), registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.pending = Gauge(
            "gateway_usage_records_pending", "Usage records waiting to be written to the ledger.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.ledger = {
            name: Counter(f"gateway_{name}", what, registry=r)
            for name, what in (
                ("usage_dropped", "Usage records lost: database, spill file and buffer all full."),
                ("ledger_write_errors", "Failed ledger writes."),
                ("ledger_records_spilled", "Records written to the spill file instead of the database."),
                ("ledger_records_replayed", "Spilled records replayed into the database."),
                ("ledger_writer_restarts", "Times the ledger writer was restarted."),
            )
        }
        self.config_info = Gauge(
            "gateway_config_info", "The running config (1); compare version across replicas.", ("version",),
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        # The replica's region as an info metric rather than a label on every family: a region never varies
        # within one replica, so Prometheus users join it where they need it
        # (`... * on(instance) group_left(region) gateway_info`), and no existing series changes shape.
        self.info = Gauge(
            "gateway_info", "1 for this replica: the gateway's version and its region (server.region).",
            ("version", "region"), registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.route_info = Gauge(
            "gateway_route_info", "1 per configured route: the region its deployment runs in (route.region).",
            ("model", "route", "region"), registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.config_reloads = Counter(
            "gateway_config_reloads", "Config reloads applied since the gateway started.", registry=r
        )
        self.config_ok = Gauge(
            "gateway_config_last_reload_successful", "1 when the last reload attempt was applied.",
            registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self._models: dict[str, _ModelChildren] = {}
        self._requests: dict[tuple[str, str | None, int, bool], Counter] = {}
        self._upstream: dict[tuple[str, str], Histogram] = {}
        self._errors: dict[tuple[str, str], Counter] = {}
        # What the sampled counters held at the last sample: counters only move by the difference.
        self._seen: dict[str, float] = {}
        self._version: str | None = None
        self._identity: tuple[str, str] | None = None
        self._routes: set[tuple[str, str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop_listener: Callable[[], None] | None = None

    # -- recording (hot path) -------------------------------------------------------------------------

    def observe(
        self, record: UsageRecord, cache: str | None, error_code: str | None, *, budget_warning: bool = False
    ) -> None:
        """Count one finished request: its ledger ``record``, the cache's answer (``x-gateway-cache``), the
        error code it ended with, and whether a budget it spends from is past its soft limit."""
        model = self._models.get(record.model)
        if model is None:
            model = self._models[record.model] = _ModelChildren(self, record.model)
        key = (record.model, record.route, record.status, record.cache_hit)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self.requests.labels(
                record.model, record.route or "", str(record.status), "true" if record.cache_hit else "false"
            )
        requests.inc()
        model.duration.observe(record.latency_ms / 1000.0)
        if record.prompt_tokens:
            model.prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            model.completion.inc(record.completion_tokens)
        if record.cost_nanos:
            model.cost.inc(record.cost_nanos / 1e9)
        if record.ttft_ms is not None:
            model.ttft.observe(record.ttft_ms / 1000.0)
        if error_code is not None and (reason := REFUSALS.get(error_code)) is not None:
            model.refusals[reason].inc()
        if budget_warning:
            model.budget_warnings.inc()
        if cache is not None:
            child = model.cache.get(cache)
            if child is None:
                result = cache.lower()
                if result not in ("hit", "miss", "bypass"):
                    return
                child = model.cache[cache] = self.cache.labels(record.model, result)
            child.inc()

    def upstream(self, model: str, route: str, seconds: float) -> None:
        """An attempt on ``route`` answered after ``seconds`` upstream."""
        child = self._upstream.get((model, route))
        if child is None:
            child = self._upstream[(model, route)] = self.upstream_duration.labels(model, route)
        child.observe(seconds)

    def upstream_error(self, route: str, code: str | None, status: int) -> None:
        """An attempt on ``route`` failed with error ``code`` (HTTP ``status``)."""
        key = (route, error_kind(code, status))
        child = self._errors.get(key)
        if child is None:
            child = self._errors[key] = self.upstream_errors.labels(*key)
        child.inc()

    # -- sampling -------------------------------------------------------------------------------------

    def sample_counter(self, name: str, value: float) -> None:
        """Move the sampled counter ``self.ledger[name]`` up to ``value`` (a source's running total)."""
        delta = value - self._seen.get(name, 0.0)
        if delta > 0:
            self.ledger[name].inc(delta)
            self._seen[name] = value

    def sample_config(self, version: str, reloads: int, last_ok: bool) -> None:
        """The running config version, reloads applied and whether the last one was applied."""
        if version != self._version:
            if self._version is not None:
                self.config_info.labels(self._version).set(0)
            self.config_info.labels(version).set(1)
            self._version = version
        delta = reloads - self._seen.get("config_reloads", 0.0)
        if delta > 0:
            self.config_reloads.inc(delta)
            self._seen["config_reloads"] = reloads
        self.config_ok.set(1 if last_ok else 0)

    def sample_regions(
        self, version: str, region: str | None, routes: Iterable[tuple[str, str, str | None]]
    ) -> None:
        """This replica's version and region, and each configured (model, route, region); a series that a
        reload replaced drops to 0, as ``gateway_config_info`` does."""
        identity = (version, region or "")
        if identity != self._identity:
            if self._identity is not None:
                self.info.labels(*self._identity).set(0)
            self.info.labels(*identity).set(1)
            self._identity = identity
        current = {(model, route, where or "") for model, route, where in routes}
        for gone in self._routes - current:
            self.route_info.labels(*gone).set(0)
        for labels in current - self._routes:
            self.route_info.labels(*labels).set(1)
        self._routes = current

    def start(self, sampler: Sampler, listen: str | None = None) -> None:
        """Serve the unauthenticated listener at ``listen`` (one process; with several workers the
        supervisor serves it) and sample once a second when a scrape may not pass through this worker."""
        if listen is not None and self.multiprocess is None and self._stop_listener is None:
            self._stop_listener = start_listener(listen, self.registry)
        if (listen is not None or self.multiprocess is not None) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample_forever(sampler))

    async def _sample_forever(self, sampler: Sampler) -> None:
        while True:
            try:
                await sampler(self)
            except Exception as exc:  # a store outage must not end sampling; the scrape shows stale values
                logger.warning("metrics sampling failed: %s", type(exc).__name__)
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def close(self) -> None:
        """Stop sampling; in multiprocess mode drop this worker's live gauges (its counters stay counted)."""
        if self._stop_listener is not None:
            await asyncio.to_thread(self._stop_listener)
            self._stop_listener = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.multiprocess is not None:
            mark_process_dead(os.getpid(), self.multiprocess)

    # -- exposition -----------------------------------------------------------------------------------

    def scrape_registry(self) -> CollectorRegistry:
        """What a scrape reads: this registry, or every worker's files merged in multiprocess mode."""
        if self.multiprocess is not None:
            return multiprocess_registry(self.multiprocess)
        return self.registry

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when ``accept`` asks for it, else text 0.0.4) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.scrape_registry()), content_type


_WORKER_FILE = re.compile(r"_(\d+)\.db$")


class _LiveWorkers(MultiProcessCollector):
    """Merges every worker's file, after dropping the live gauges of workers that are gone (crashed or
    replaced by the supervisor), so an in-flight gauge does not count a dead worker's requests forever."""

    def collect(self) -> Iterable[Metric]:
        pids = {int(m.group(1)) for name in os.listdir(self._path) if (m := _WORKER_FILE.search(name))}
        for pid in pids:
            if not _alive(pid):
                # Another scrape (a worker's, the listener's) may be removing the same files right now.
                with contextlib.suppress(FileNotFoundError):
                    mark_process_dead(pid, self._path)
        return super().collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's: not ours to judge
        return True
    return True


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry merging the metric files of every worker recording into ``path``."""
    registry = CollectorRegistry(auto_describe=False)
    _LiveWorkers(registry, path)
    return registry


@contextlib.contextmanager
def worker_metrics_dir() -> Iterator[str]:
    """A private, empty ``PROMETHEUS_MULTIPROC_DIR`` for one ``gateway run --workers N`` (set in the
    environment the workers inherit, so it must exist before they start); removed afterwards. Never a
    directory shared with an earlier run: its files would add that run's counts to this one's."""
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def start_listener(address: str, registry: Collector) -> Callable[[], None]:
    """Serve ``registry`` without authentication on ``host:port`` (``features.metrics.listen``), on a thread
    of its own; returns the function that stops it."""
    from prometheus_client.exposition import start_http_server

    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), host.strip("[]"), registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
