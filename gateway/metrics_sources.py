"""The values ``/metrics`` samples from where they live instead of counting them on the request path.

The ledger's queue and health counters (read through ``Ledger.pending`` and ``Ledger.health``, as
``/admin/usage`` reads them), each route's circuit in the shared state store, and the running config's
version and reloads. :func:`sample` runs before every scrape and, with several workers or the separate
listener, once a second in each worker (:meth:`GatewayMetrics.start`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import __version__
from gateway.features.cooldown import state_of
from gateway.features.routing import RoutingStage, targets
from gateway.stores import StoreUnavailable

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.metrics import GatewayMetrics, Sampler


def sampler(gateway: Gateway) -> Sampler:
    """The sampler :meth:`GatewayMetrics.start` calls for ``gateway``."""

    async def sample_gateway(metrics: GatewayMetrics) -> None:
        await sample(gateway, metrics)

    return sample_gateway


async def sample(gateway: Gateway, metrics: GatewayMetrics) -> None:
    """Copy the ledger's, the routes' and the config's current values into ``metrics``."""
    ledger = gateway.shared.ledger
    metrics.pending.set(ledger.pending)
    health = ledger.health
    metrics.sample_counter("usage_dropped", health.dropped)
    metrics.sample_counter("ledger_write_errors", health.write_errors)
    metrics.sample_counter("ledger_records_spilled", health.spilled)
    metrics.sample_counter("ledger_records_replayed", health.replayed)
    metrics.sample_counter("ledger_writer_restarts", health.writer_restarts)
    reloader = gateway.reloader
    metrics.sample_config(gateway.runtime.version, reloader.reloads, reloader.last_ok)
    metrics.sample_regions(
        __version__,
        gateway.config.server.region,
        [(m.name, t.key, t.region) for m in gateway.config.models for t, _ in targets(m)],
    )
    routing = next((s for s in gateway.stages if isinstance(s, RoutingStage)), None)
    if routing is None:
        return
    now = routing.clock()
    try:
        for alias, model in routing.models.items():
            for target, _ in targets(model):
                circuit = state_of(await routing.cooldowns.health(target.key), now)
                metrics.cooldown.labels(alias, target.key).set(0 if circuit == "closed" else 1)
    except StoreUnavailable:
        pass  # the store is down: the gauges keep their last values, the store's own alerts say why
