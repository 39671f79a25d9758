"""Prometheus metrics about the requests the usage ledger records, in the text exposition format.

Counters live in this process (one set per replica, as Prometheus expects) and start at zero with it; the
ledger is the durable record. Labels are bounded on purpose: model alias, route, status and cache hit, never
the key (thousands of keys would make thousands of series).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from gateway.ledger import UsageRecord
from gateway.pricing import format_usd

# Seconds; from a cache hit to a long completion.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}" if pairs else ""


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.total += seconds
        self.n += 1


class UsageMetrics:
    """Request, token, cost and latency metrics, fed one :class:`UsageRecord` at a time."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.cost_nanos: defaultdict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.durations: defaultdict[tuple[tuple[str, str], ...], _Histogram] = defaultdict(_Histogram)

    def observe(self, record: UsageRecord) -> None:
        """Count ``record``."""
        model = ("model", record.model)
        self.requests[
            (model, ("route", record.route or ""), ("status", str(record.status)), ("cache", _flag(record)))
        ] += 1
        self.tokens[(model, ("direction", "prompt"))] += record.prompt_tokens
        self.tokens[(model, ("direction", "completion"))] += record.completion_tokens
        self.cost_nanos[(model,)] += record.cost_nanos
        self.durations[(model,)].observe(record.latency_ms / 1000.0)

    def render(self, *, pending_records: int = 0) -> str:
        """All metrics in the Prometheus text format (version 0.0.4)."""
        lines = [
            "# HELP gateway_requests_total Requests handled by the pipeline.",
            "# TYPE gateway_requests_total counter",
            *(f"gateway_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())),
            "# HELP gateway_tokens_total Tokens used (reported by upstreams or estimated).",
            "# TYPE gateway_tokens_total counter",
            *(f"gateway_tokens_total{_labels(k)} {v}" for k, v in sorted(self.tokens.items())),
            "# HELP gateway_cost_usd_total Cost of the requests in USD.",
            "# TYPE gateway_cost_usd_total counter",
            *(
                f"gateway_cost_usd_total{_labels(k)} {format_usd(v)}"
                for k, v in sorted(self.cost_nanos.items())
            ),
            "# HELP gateway_request_duration_seconds Time from request to answer (or end of stream).",
            "# TYPE gateway_request_duration_seconds histogram",
        ]
        for key, histogram in sorted(self.durations.items()):
            cumulative = 0
            for bound, count in zip(BUCKETS, histogram.counts, strict=True):
                cumulative += count
                le = _labels((*key, ("le", str(bound))))
                lines.append(f"gateway_request_duration_seconds_bucket{le} {cumulative}")
            lines.append(
                f"gateway_request_duration_seconds_bucket{_labels((*key, ('le', '+Inf')))} {histogram.n}"
            )
            lines.append(f"gateway_request_duration_seconds_sum{_labels(key)} {histogram.total:.6f}")
            lines.append(f"gateway_request_duration_seconds_count{_labels(key)} {histogram.n}")
        lines += [
            "# HELP gateway_usage_records_pending Usage records waiting to be written to the ledger.",
            "# TYPE gateway_usage_records_pending gauge",
            f"gateway_usage_records_pending {pending_records}",
        ]
        return "\n".join(lines) + "\n"


def _flag(record: UsageRecord) -> str:
    return "true" if record.cache_hit else "false"
