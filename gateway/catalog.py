"""The roadmap features this gateway build implements, and how to tell whether a config enables each.

`GET /admin/features` reports this table, and `planner track --gateway-url` checks that every feature its
acceptance tests verified is listed here. A feature lands with one line in `CATALOG`: its roadmap slug
(the `feature:` key of its plan, the marker of its acceptance tests), a title, and a predicate over the
loaded `GatewayConfig`. List only what this build really implements: the table is evidence, not a wish list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewayConfig


@dataclass(frozen=True)
class Feature:
    """One implemented feature: `enabled(config)` says whether `config` turns it on."""

    slug: str
    title: str
    enabled: Callable[[GatewayConfig], bool]


def configured(name: str) -> Callable[[GatewayConfig], bool]:
    """Enabled when `features.<name>` is set and not switched off with `enabled: false`.

    For example `Feature("response-caching", "Response caching", configured("cache"))`.
    """

    def enabled(config: GatewayConfig) -> bool:
        section = getattr(config.features, name, None)
        return section is not None and getattr(section, "enabled", True) is not False

    return enabled


def always(config: GatewayConfig) -> bool:
    """For features that are part of every configuration (nothing to switch on)."""
    return True


def rate_limited(config: GatewayConfig) -> bool:
    """Rate limiting is on when `features.rate_limit` is set or any key has a limit of its own."""
    return config.features.rate_limit is not None or any(
        k.rpm or k.tpm or k.max_concurrent for k in config.auth.keys
    )


def cached(config: GatewayConfig) -> bool:
    """Caching is on when `features.cache` is set and enabled by default or for at least one model."""
    cache = config.features.cache
    return cache is not None and (cache.enabled or any(m.enabled for m in cache.models.values()))


def tls_configured(config: GatewayConfig) -> bool:
    """TLS settings are in use: the gateway serves HTTPS, or an upstream has its own CA or certificate."""
    return config.server.tls is not None or any(p.tls is not None for p in config.providers)


# One line per feature, sorted by slug. A tuple, so nothing can change it at run time.
CATALOG: tuple[Feature, ...] = (
    # POST /v1/messages (Anthropic format) and the anthropic, azure and cohere providers are in every build.
    Feature("additional-api-formats", "Additional API formats (Anthropic, Azure OpenAI, Cohere)", always),
    # /admin/v1 (runtime keys, audit log) and the LiteLLM aliases are served by every build.
    Feature("admin-api", "Admin API (runtime virtual keys, scoped admin keys, audit log)", always),
    # Every response is costed and recorded; budgets apply to the keys and teams that have one.
    Feature("cost-tracking-budgets", "Cost tracking and budgets", always),
    Feature("distributed-tracing", "Distributed tracing (OpenTelemetry)", configured("tracing")),
    # POST /graphql, when features.graphql.enabled (and the graphql extra is installed).
    Feature("graphql-api", "GraphQL API (models, keys, usage, budgets, routes)", configured("graphql")),
    # POST /admin/reload and SIGHUP work with every config file; features.reload.watch is optional.
    Feature("hot-config-reload", "Hot config reload", always),
    Feature("load-balancing-failover", "Load balancing and failover", always),
    # Region identity, x-gateway-region and Sentinel/Cluster state URLs are served by every build.
    Feature("multi-region-deployment", "Multi-region deployment (regions, residency, Redis Cluster)", always),
    Feature("rate-limiting", "Rate limiting", rate_limited),
    Feature("response-caching", "Response caching", cached),
    Feature("tls-https-support", "TLS/HTTPS support", tls_configured),
    # The ledger, /admin/usage and /metrics are part of every configuration.
    Feature("usage-tracking-analytics", "Usage tracking and analytics", always),
    # GET /v1/ws/chat is served by every build.
    Feature("websocket-support", "WebSocket streaming transport", always),
)


def features_report(
    config: GatewayConfig, catalog: tuple[Feature, ...] = CATALOG
) -> dict[str, dict[str, Any]]:
    """`{slug: {"title": ..., "enabled": bool}}` for every feature in `catalog`, judged against `config`."""
    return {f.slug: {"title": f.title, "enabled": bool(f.enabled(config))} for f in catalog}
