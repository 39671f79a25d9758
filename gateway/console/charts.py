"""The overview's time-series charts: the ledger's time buckets drawn as inline SVG bars by the server.

No chart library and no script: each chart is a list of bars with their coordinates in a fixed viewBox
(:data:`WIDTH` x :data:`HEIGHT`), which the template draws, plus the same numbers as a table for screen
readers and for anyone who wants the figures. A chart's series are drawn over each other, the first behind:
each later series is a part of the one before it (errors of requests, p50 under p99), so both stay visible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from gateway.pricing import format_usd
from gateway.usage_sql import LATENCY_EDGES_MS

WIDTH = 600.0
HEIGHT = 160.0
BAR_SHARE = 0.8  # of a bucket's slot; the rest is the gap between bars


@dataclass(frozen=True)
class Window:
    """A chart window: ``count`` buckets of ``width`` seconds, labelled with ``time_format``."""

    name: str
    label: str
    width: float
    count: int
    time_format: str

    def span(self, now: float) -> tuple[float, float]:
        """``(since, until)``: the last ``count`` buckets, aligned to multiples of ``width`` (so a bucket
        keeps its bounds from one refresh to the next), the current one included."""
        until = (math.floor(now / self.width) + 1) * self.width
        return until - self.count * self.width, until


WINDOWS = {
    w.name: w
    for w in (
        Window("hour", "Last hour", 60.0, 60, "%H:%M"),
        Window("day", "Last day", 1800.0, 48, "%H:%M"),
        Window("month", "Last 30 days", 86400.0, 30, "%m-%d"),
    )
}
DEFAULT_WINDOW = "hour"


def window_of(value: str | None) -> Window:
    """The window a query's ``window`` names (default the last hour); ``ValueError`` naming the field."""
    if not value:
        return WINDOWS[DEFAULT_WINDOW]
    if value not in WINDOWS:
        raise ValueError(f"window: one of {', '.join(WINDOWS)}")
    return WINDOWS[value]


def histogram_percentile(cumulative: Sequence[int], total: int, fraction: float) -> float | None:
    """The ``fraction`` percentile of a latency histogram (counts at most each of ``LATENCY_EDGES_MS``,
    ``total`` requests), interpolated linearly within its bucket as Prometheus' ``histogram_quantile``
    does; the highest edge when it lies beyond it; None without requests."""
    if total <= 0:
        return None
    rank = fraction * total
    lower_edge, lower_count = 0.0, 0
    for edge, count in zip(LATENCY_EDGES_MS, cumulative, strict=True):
        if count >= rank:
            inside = count - lower_count
            share = (rank - lower_count) / inside if inside else 1.0
            return lower_edge + (edge - lower_edge) * share
        lower_edge, lower_count = float(edge), count
    return float(LATENCY_EDGES_MS[-1])


@dataclass(frozen=True)
class Series:
    """One series of a chart: its name, its CSS class and a value per bucket (None: no data)."""

    name: str
    css: str
    values: list[float | None]


def chart(
    ident: str,
    title: str,
    unit: str,
    times: list[str],
    series: list[Series],
    show: Callable[[float | None], str],
) -> dict[str, Any]:
    """A chart's drawing and table: bars per bucket and series scaled to the largest value, the peak and
    total as a description, and one table row per bucket."""
    largest = max((v for s in series for v in s.values if v is not None), default=0.0)
    slot = WIDTH / max(1, len(times))
    bars = []
    for index in range(len(times)):
        layers = []
        for s in series:
            value = s.values[index] or 0.0
            height = HEIGHT * value / largest if largest else 0.0
            layers.append({"css": s.css, "y": f"{HEIGHT - height:.2f}", "height": f"{height:.2f}"})
        bars.append({"x": f"{index * slot + slot * (1 - BAR_SHARE) / 2:.2f}", "layers": layers})
    peaks = "; ".join(f"{s.name} peak {show(max((v for v in s.values if v is not None), default=None))}"
                      for s in series)  # fmt: skip
    return {
        "id": ident,
        "title": title,
        "unit": unit,
        "desc": f"{title} per bucket from {times[0]} to {times[-1]}: {peaks}." if times else title,
        "bars": bars,
        "bar_width": f"{slot * BAR_SHARE:.2f}",
        "width": f"{WIDTH:.0f}",
        "height": f"{HEIGHT:.0f}",
        "top": show(largest),
        "first": times[0] if times else "",
        "last": times[-1] if times else "",
        "legend": [{"name": s.name, "css": s.css} for s in series],
        "columns": [s.name for s in series],
        "rows": [
            {"time": time, "values": [show(s.values[index]) for s in series]}
            for index, time in enumerate(times)
        ],
    }


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${format_usd(int(value))}"


def charts(buckets: list[dict[str, Any]], window: Window, zone: tzinfo) -> list[dict[str, Any]]:
    """The overview's charts of ``buckets`` (a ledger's :meth:`~gateway.ledger.Ledger.buckets`): requests
    and errors, p50 and p99 latency, tokens, cost."""
    times = [datetime.fromtimestamp(b["start"], zone).strftime(window.time_format) for b in buckets]

    def values(field: str) -> list[float | None]:
        return [float(b[field]) for b in buckets]

    p99 = [histogram_percentile(b["latency_le"], b["requests"], 0.99) for b in buckets]
    p50 = [histogram_percentile(b["latency_le"], b["requests"], 0.5) for b in buckets]
    tokens: list[float | None] = [float(b["prompt_tokens"] + b["completion_tokens"]) for b in buckets]
    requests = [
        Series("requests", "s-requests", values("requests")),
        Series("errors", "s-errors", values("errors")),
    ]
    latency = [Series("p99", "s-p99", p99), Series("p50", "s-p50", p50)]
    token_series = [
        Series("total", "s-tokens", tokens),
        Series("prompt", "s-prompt", values("prompt_tokens")),
    ]
    return [
        chart("requests", "Requests", "requests", times, requests, _count),
        chart("latency", "Latency", "ms", times, latency, _ms),
        chart("tokens", "Tokens", "tokens", times, token_series, _count),
        chart("cost", "Cost", "USD", times, [Series("cost", "s-cost", values("cost_nanos"))], _usd),
    ]
