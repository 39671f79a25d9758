"""Documentation steps of the roadmap's plans, verified: the page a step promises exists and says what a user
needs (the feature's config keys, endpoints and headers).

A plan's last step is usually "document X in docs/gateway/Y.md"; these tests are what makes that step count
as done (`@pytest.mark.feature(slug, step=N)` on each case). They read the repository's docs, not the
gateway, so they run the same against an in-process or a live gateway.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
# Shorter than this is a stub, not documentation.
MIN_CHARS = 1500


def case(slug: str, step: int, pages: tuple[str, ...], terms: tuple[str, ...]) -> object:
    return pytest.param(pages, terms, id=f"{slug}-step-{step}", marks=pytest.mark.feature(slug, step=step))


CASES = [
    case(
        "response-caching",
        8,
        ("gateway/cache.md",),
        ("features.cache", "mode", "ttl_seconds", "max_ttl_seconds", "max_entry_bytes", "x-gateway-cache"),
    ),
    case(
        "rate-limiting",
        8,
        ("gateway/rate-limiting.md",),
        (
            "features.rate_limit",
            "rpm",
            "tpm",
            "max_concurrent",
            "x-ratelimit-remaining-requests",
            "retry-after",
        ),
    ),
    case(
        "load-balancing-failover",
        8,
        ("gateway/routing.md",),
        ("routes", "weight", "fallbacks", "cooldown", "x-gateway-attempts", "x-gateway-route"),
    ),
    case(
        "cost-tracking-budgets",
        8,
        ("gateway/budgets.md",),
        ("budget", "limit_usd", "period", "soft_limit", "pricing", "x-gateway-cost-usd", "budget_exceeded"),
    ),
    case(
        "tls-https-support",
        7,
        ("gateway/tls.md", "tutorial/tls.md"),
        ("server.tls", "cert_file", "key_file", "min_version", "ca_file"),
    ),
    case(
        "hot-config-reload",
        8,
        ("gateway/reload.md", "tutorial/hot-reload.md"),
        ("/admin/reload", "SIGHUP", "/admin/config"),
    ),
    case(
        "distributed-tracing",
        8,
        ("gateway/tracing.md", "tutorial/tracing.md"),
        (
            "features.tracing",
            "exporter",
            "protocol",
            "endpoint",
            "sample_ratio",
            "service_name",
            "traceparent",
            "baggage_attributes",
            "capture_content",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "span_id",
        ),
    ),
    case(
        "additional-api-formats",
        9,
        ("gateway/anthropic.md", "gateway/providers.md"),
        ("/v1/messages", "count_tokens", "anthropic", "cohere", "azure", "api_version"),
    ),
    case(
        "usage-tracking-analytics",
        9,
        ("gateway/usage.md", "performance.md"),
        (
            "usage.sink",
            "postgres_url",
            "jsonl_path",
            "retention_days",
            "usage_daily",
            "user_version",
            "usage_schema_versions",
            "gateway_usage_dropped_total",
            "bench/ledger.py",
        ),
    ),
    case(
        "websocket-support",
        8,
        ("gateway/websocket.md", "tutorial/websocket.md"),
        ("/v1/ws/chat", "chat.request", "4401", "1009"),
    ),
    case(
        "admin-api",
        8,
        ("gateway/admin-api.md",),
        (
            "/admin/v1/keys",
            "keys:write",
            "admin.keys",
            "Idempotency-Key",
            "If-Match",
            "next_cursor",
            "/rotate",
            "/admin/v1/audit",
            "/admin/v1/openapi.json",
            "/key/generate",
            "/spend/logs",
            "Migrating from LiteLLM",
            "sync_interval_s",
            "failed_auth_limit",
        ),
    ),
    case(
        "graphql-api",
        8,
        ("gateway/graphql.md",),
        (
            "features.graphql",
            "max_depth",
            "max_cost",
            "introspection",
            "graphiql",
            "max_batch",
            "FORBIDDEN",
            "QUERY_TOO_DEEP",
            "createKey",
            "keys:write",
            "type Query",
            "graphql-transport-ws",
        ),
    ),
]


@pytest.mark.parametrize(("pages", "terms"), CASES)
def test_the_documentation_step_is_written(pages: tuple[str, ...], terms: tuple[str, ...]) -> None:
    texts = []
    for page in pages:
        path = DOCS / page
        assert path.is_file(), f"docs/{page} is missing"
        text = path.read_text(encoding="utf-8")
        assert len(text) >= MIN_CHARS, f"docs/{page} is a stub ({len(text)} characters)"
        assert text.lstrip().startswith("# "), f"docs/{page} has no `# Title`"
        texts.append(text)
    everything = "\n".join(texts)
    missing = [term for term in terms if term not in everything]
    assert not missing, f"docs/{', docs/'.join(pages)} never mention {', '.join(missing)}"
