"""The runtime snapshot: everything derived from one config, built once and never changed afterwards.

A :class:`Runtime` holds the validated config, the key ring, the model table, the providers with their
upstream transport and the bound stage chain. The app keeps one current runtime; every request takes it
**once** when it arrives (:class:`RuntimeMiddleware`) and uses that snapshot to the end, streams included,
so a hot reload (:mod:`gateway.reload`) that swaps in a new runtime never shows a request half a config.

State that must outlive a reload (the state store with rate-limit, budget, cache and cooldown entries; the
usage ledger and its metrics) is :class:`SharedState`, owned by the app and handed to every runtime it
builds. Those entries are keyed by stable ids (key ids, key and team names, route ids), so a new runtime
finds the counters the old one left.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admission import AdmissionStage
from gateway.auth import KeyRing
from gateway.config import GatewayConfig, ModelConfig
from gateway.errors import model_not_allowed, unknown_model
from gateway.features.budgets import budget_stage
from gateway.features.cache import CacheStage
from gateway.features.cooldown_events import CooldownEvents, cooldown_events
from gateway.features.partitions import RegionShares, partition_regions
from gateway.features.ratelimit import rate_limit_stage
from gateway.features.rebalance import Rebalancer
from gateway.features.routing import RoutingStage
from gateway.features.tracing_config import build_tracing
from gateway.features.usage import usage_stage
from gateway.ledger import Ledger
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Handler, KeyIdentity, Stage, build_chain
from gateway.providers.registry import build_providers
from gateway.stores import GlobalFeature, Store, open_store
from gateway.stores.pubsub import cluster_pubsub_supported
from gateway.stores.redis_url import parse_redis_url
from gateway.tls import upstream_transport
from gateway.transport import default_transport
from gateway.usage_feed import CHANNEL, RedisRelay, UsageFeed
from gateway.usage_sink import open_ledger

if TYPE_CHECKING:
    from gateway.providers.base import Provider

# Where RuntimeMiddleware leaves the request's runtime in the ASGI scope.
RUNTIME_SCOPE_KEY = "gateway.runtime"


@dataclass(frozen=True)
class SharedState:
    """What survives a reload: the state store, the usage ledger, the metrics and the live usage feed of
    this replica."""

    store: Store
    ledger: Ledger
    # None with features.metrics.enabled off (read at start: a reload does not add or drop the registry).
    metrics: GatewayMetrics | None
    # Finished requests' usage as they happen (GraphQL subscriptions), across reloads.
    feed: UsageFeed = field(default_factory=UsageFeed)
    # Multi-region: the store every region shares (state.global_redis_url), for the features named in
    # state.global_features; the same object as ``store`` when there is no global store.
    global_store: Store | None = None
    global_features: frozenset[str] = frozenset()
    # Multi-region with state.partitioned_features: this region's shares of each rate limit.
    rebalancer: Rebalancer | None = None
    # Multi-region: routes opened here published to other regions, theirs adopted here (global store).
    cooldown_events: CooldownEvents | None = None

    @classmethod
    def open(cls, config: GatewayConfig) -> SharedState:
        """The store named by ``config.state`` (and the global one), the ledger writing to the sink
        ``config.usage`` names, the metrics (None when ``features.metrics`` is off)."""
        ledger = open_ledger(config.usage)
        metrics = GatewayMetrics() if config.features.metrics.enabled else None
        store = open_store(config.state)
        feed = UsageFeed(relay=usage_relay(config))
        if not config.state.global_redis_url:
            return cls(store, ledger, metrics, feed)
        shared = open_store(config.state, url=config.state.global_redis_url)
        return cls(
            store,
            ledger,
            metrics,
            feed,
            global_store=shared,
            global_features=frozenset(config.state.global_features),
            rebalancer=partitions(config),
            cooldown_events=cooldown_events(
                config.state.global_redis_url, config.server.region, config.state.timeout_seconds
            ),
        )

    def store_for(self, feature: GlobalFeature) -> Store:
        """Where ``feature`` keeps its state: the global store when configured for it, else the region's."""
        if self.global_store is not None and feature in self.global_features:
            return self.global_store
        return self.store

    async def close_stores(self) -> None:
        """Close the region's store and the global one (and the usage feed's Redis relay)."""
        await self.feed.close()
        if self.rebalancer is not None:
            await self.rebalancer.close()
        if self.cooldown_events is not None:
            await self.cooldown_events.close()
        await self.store.close()
        if self.global_store is not None:
            await self.global_store.close()


def partitions(config: GatewayConfig) -> Rebalancer | None:
    """This replica's shares of partitioned rate limits (validated: a region, the regions, a global store)."""
    state = config.state
    if "rate_limit" not in state.partitioned_features or not state.global_redis_url:
        return None
    assert config.server.region is not None
    shares = RegionShares(config.server.region, partition_regions(config), state.partition_min_share)
    return Rebalancer(
        shares, state.global_redis_url, interval=state.rebalance_interval_s, timeout=state.timeout_seconds
    )


def usage_relay(config: GatewayConfig) -> RedisRelay | None:
    """The relay sharing live usage between replicas: only its consumer, GraphQL's ``usage`` subscription,
    needs it, so only with GraphQL on and a Redis state store. Over Redis Cluster it uses a sharded channel,
    when the installed redis-py's asyncio cluster client has pub/sub (older ones, which ``redis>=5.0``
    allows, have none: each replica's subscribers then see that replica's traffic)."""
    url = config.state.redis_url
    if not config.features.graphql.enabled or not url:
        return None
    target = parse_redis_url(url)
    if target.topology == "cluster":
        if not cluster_pubsub_supported():
            return None
        return RedisRelay(url, channel=f"{CHANNEL}:0", timeout=config.state.timeout_seconds, sharded=True)
    # Pub/sub channels ignore the database number: naming it keeps gateways on other databases apart.
    return RedisRelay(url, channel=f"{CHANNEL}:{target.db}", timeout=config.state.timeout_seconds)


def build_stages(
    config: GatewayConfig,
    shared: SharedState,
    providers: dict[str, Provider],
    models: dict[str, ModelConfig],
) -> list[Stage]:
    """The pipeline after authentication, in order: usage → admission → rate limit → budget → cache → router.

    Each feature adds one line here (``if config.features.<name>: stages.append(...)``), in that order.
    """
    stages: list[Stage] = []
    # First, so every request the pipeline sees is costed and recorded, cache hits and refusals included.
    stages.append(
        usage := usage_stage(config, ledger=shared.ledger, metrics=shared.metrics, feed=shared.feed)
    )
    # Always present: keys made through the admin API bring their own limits and budget at any time.
    stages.append(rate_limit_stage(config, shared.store_for("rate_limit"), shares=shared.rebalancer))
    stages.append(budget_stage(config, shared.store_for("budgets"), usage))
    if config.features.cache:
        stages.append(CacheStage(config.features.cache, shared.store_for("cache")))
    stages.append(
        RoutingStage(
            config.features.routing,
            providers,
            models,
            shared.store,
            metrics=shared.metrics,
            region=config.server.region,
            events=shared.cooldown_events,
        )
    )
    # Right before the rate limit: every stage's store work before the upstream in one round trip.
    stages.insert(1, AdmissionStage(stages[1:]))
    return stages


def config_version(config: GatewayConfig) -> str:
    """A short hash of the validated config: equal configs, equal versions (replicas can compare it)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


class Runtime:
    """One config's keys, models, providers and stage chain, plus how many requests are using it.

    Treat it as immutable: a config change builds a new runtime (``build_runtime``) instead of changing
    this one. ``in_flight`` counts the requests holding it; once it is retired and the count drops to zero
    :meth:`aclose` closes its upstream transport (when it owns it).
    """

    def __init__(
        self,
        config: GatewayConfig,
        shared: SharedState,
        transport: httpx.AsyncBaseTransport,
        *,
        owns_transport: bool,
        source: str,
    ) -> None:
        self.config = config
        self.source = source
        self.version = config_version(config)
        self.loaded_at = datetime.now(UTC)
        self.keys = KeyRing(config.auth)
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self.max_body_bytes = config.server.max_body_bytes
        # Providers send straight through the transport (no httpx.AsyncClient layer: see providers/base.py).
        self.transport = transport
        self.owns_transport = owns_transport
        self.providers = build_providers(config, transport)
        self.stages = build_stages(config, shared, self.providers, self.models)
        # With tracing on, the chain runs each stage in a span (features.tracing); hooks use the originals.
        self.tracing = build_tracing(config)
        chain = self.stages if self.tracing is None else self.tracing.wrap(self.stages)
        self.handle: Handler = build_chain(chain)
        self.in_flight = 0
        self.retired = False
        self.closed = False
        self._drained = asyncio.Event()

    def acquire(self) -> None:
        """A request starts using this runtime."""
        self.in_flight += 1
        self._drained.clear()

    def release(self) -> None:
        """A request (its whole response, streams included) is done with this runtime."""
        self.in_flight -= 1
        if self.in_flight <= 0:
            self._drained.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no request holds this runtime, at most ``timeout`` seconds; True when drained."""
        if self.in_flight <= 0:
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Close the upstream transport this runtime built (a shared, injected one is the app's); once."""
        if self.closed:
            return
        self.closed = True
        if self.tracing is not None:
            await self.tracing.shutdown()
        if self.owns_transport:
            await self.transport.aclose()

    def resolve(self, key: KeyIdentity, model: str) -> ModelConfig:
        """The model config for ``model``; 404 when unknown, 403 when ``key`` may not use it."""
        config = self.models.get(model)
        if config is None:
            raise unknown_model(model)
        if not key.may_use(model):
            raise model_not_allowed(model)
        return config

    def visible_models(self, key: KeyIdentity) -> list[str]:
        """The aliases ``key`` may use, in config order."""
        return [name for name in self.models if key.may_use(name)]


def build_runtime(
    config: GatewayConfig,
    shared: SharedState,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    source: str = "<config>",
) -> Runtime:
    """Build the runtime for ``config`` around ``shared``.

    A given ``transport`` (tests) is used as is and not owned; otherwise the runtime builds and owns its
    own (per-origin TLS pools for providers with ``tls:``), closed when the runtime is retired.
    """
    if transport is not None:
        return Runtime(config, shared, transport, owns_transport=False, source=source)
    built = upstream_transport(config.providers, default_transport())
    return Runtime(config, shared, built, owns_transport=True, source=source)


class RuntimeMiddleware:
    """Pins the current runtime to each request for its whole life (streamed body included).

    ``current`` returns the runtime to use for a new request; the request finds it in
    ``scope["gateway.runtime"]`` and it stays acquired until the ASGI call returns.
    """

    def __init__(self, app: ASGIApp, current: Callable[[], Runtime]) -> None:
        self.app = app
        self.current = current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        runtime = self.current()
        scope[RUNTIME_SCOPE_KEY] = runtime
        runtime.acquire()
        try:
            await self.app(scope, receive, send)
        finally:
            runtime.release()


def runtime_of(scope: Scope) -> Runtime | None:
    """The runtime pinned to this request by :class:`RuntimeMiddleware`, if any."""
    runtime = scope.get(RUNTIME_SCOPE_KEY)
    return runtime if isinstance(runtime, Runtime) else None
