"""The overview's charts: windows, the latency estimate from a histogram, the bars' scale, and the page."""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path

import pytest
from gateway_testing import auth, chat
from test_console import ALICE, console, log_in

from gateway.console.charts import WINDOWS, chart, charts, histogram_percentile, window_of
from gateway.usage_sql import LATENCY_EDGES_MS

pytestmark = pytest.mark.anyio


def test_windows_are_aligned_buckets_ending_with_the_current_one() -> None:
    hour = window_of(None)
    assert hour is WINDOWS["hour"] and window_of("month").count == 30
    since, until = hour.span(1_000_030.0)
    assert (since, until) == (1_000_080.0 - 3600.0, 1_000_080.0)  # 1_000_020 is a multiple of 60
    assert hour.span(1_000_079.9) == (since, until)  # the same buckets until the next minute
    with pytest.raises(ValueError, match="window: one of hour, day, month"):
        window_of("year")


def test_latency_percentiles_are_interpolated_within_their_histogram_bucket() -> None:
    def cumulative(latencies: list[float]) -> list[int]:
        return [sum(1 for v in latencies if v <= edge) for edge in LATENCY_EDGES_MS]

    assert histogram_percentile(cumulative([]), 0, 0.5) is None
    # 10 requests between 10 and 25 ms: the median is halfway through that bucket.
    ten = cumulative([20.0] * 10)
    assert histogram_percentile(ten, 10, 0.5) == pytest.approx(17.5)
    assert histogram_percentile(ten, 10, 0.99) == pytest.approx(10 + 15 * 0.99)
    # One slow request in a hundred: p99 stays in the fast bucket, p100 reaches the slow one.
    mixed = cumulative([3.0] * 99 + [800.0])
    assert histogram_percentile(mixed, 100, 0.99) == pytest.approx(5.0)
    assert 500 < (histogram_percentile(mixed, 100, 1.0) or 0) <= 1000
    # Beyond the last edge: the last edge, as Prometheus answers.
    assert histogram_percentile(cumulative([90_000.0]), 1, 0.5) == float(LATENCY_EDGES_MS[-1])


def test_bars_are_scaled_to_the_largest_value_and_tabled_for_screen_readers() -> None:
    from gateway.console.charts import HEIGHT, Series

    drawn = chart("r", "Requests", "requests", ["00:00", "00:01"],
                  [Series("requests", "s-requests", [4.0, 2.0]), Series("errors", "s-errors", [1.0, None])],
                  lambda v: "—" if v is None else f"{v:.0f}")  # fmt: skip
    heights = [[float(layer["height"]) for layer in bar["layers"]] for bar in drawn["bars"]]
    assert heights == [[HEIGHT, HEIGHT / 4], [HEIGHT / 2, 0.0]]
    assert drawn["rows"] == [{"time": "00:00", "values": ["4", "1"]}, {"time": "00:01", "values": ["2", "—"]}]
    assert "requests peak 4; errors peak 1" in drawn["desc"]


def test_empty_buckets_draw_no_bars() -> None:
    empty = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_nanos": 0,
             "latency_le": [0] * len(LATENCY_EDGES_MS)}  # fmt: skip
    drawn = charts([{**empty, "start": 0.0}, {**empty, "start": 60.0}], WINDOWS["hour"], UTC)
    assert [c["id"] for c in drawn] == ["requests", "latency", "tokens", "cost"]
    assert all(layer["height"] == "0.00" for c in drawn for b in c["bars"] for layer in b["layers"])


def _bar_heights(page: str, chart_id: str, css: str) -> list[float]:
    figure = page.split(f'id="chart-{chart_id}"', 1)[1].split("</figure>", 1)[0]
    return [
        float(h)
        for h in re.findall(
            rf'<rect class="{css}" x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"', figure
        )
    ]


async def test_the_overview_charts_the_requests_in_the_ledger() -> None:
    async with console() as client:
        for i in range(3):
            response = await client.post(
                "/v1/chat/completions", json=chat(f"hi {i}", "echo"), headers=auth(ALICE)
            )
            assert response.status_code == 200
        await log_in(client)
        for window, buckets in (("hour", 60), ("day", 48), ("month", 30)):
            page = (await client.get(f"/console?window={window}")).text
            requests = _bar_heights(page, "requests", "s-requests")
            assert len(requests) == buckets
            # All three requests are in the current (last) bucket: the tallest bar, the others empty.
            assert requests[-1] > 0 and requests[:-1] == [0.0] * (buckets - 1), window
            assert _bar_heights(page, "latency", "s-p99")[-1] > 0
            assert _bar_heights(page, "cost", "s-cost")[-1] > 0
            assert f'data-live="/console/events?page=overview&amp;window={window}"' in page
            # Each chart is an image with a title and a description, and its numbers are in a table.
            assert re.search(
                r'<svg class="series"[^>]*role="img" aria-labelledby="chart-requests-t chart-requests-d"',
                page,
            )
            assert "requests peak 3; errors peak 0" in page
            assert '<td class="num">3</td>' in page.split('id="chart-requests"', 1)[1].split("</figure>")[0]


async def test_an_unknown_chart_window_is_a_400_naming_the_field() -> None:
    async with console() as client:
        await log_in(client)
        response = await client.get("/console?window=year")
        assert response.status_code == 400 and "window: one of hour, day, month" in response.text
        events = await client.get("/console/events?page=overview&window=year")
        assert events.status_code == 400 and "window" in events.json()["error"]["message"]


async def test_the_overview_is_unavailable_not_broken_with_a_jsonl_ledger(tmp_path: Path) -> None:
    from test_console import CONFIG, ON

    from gateway.config import parse_config

    text = CONFIG.replace(
        'usage: {database: ":memory:"}', f"usage: {{sink: jsonl, jsonl_path: '{tmp_path}/u.jsonl'}}"
    )
    async with console(parse_config(text + ON, "console.yaml")) as client:
        await log_in(client)
        response = await client.get("/console")
        assert response.status_code == 503 and "Usage is unavailable" in response.text


def test_a_live_stream_refreshes_less_often_when_its_reads_are_slow() -> None:
    from gateway.routes.console import LIVE_INTERVAL_S, LIVE_SHARE, live_interval

    assert live_interval(0.001) == LIVE_INTERVAL_S == 1.0
    # A 200 ms read (a large ledger) is followed by 10 s of quiet: 2 % of the stream's time spent reading.
    assert live_interval(0.2) == pytest.approx(10.0)
    assert live_interval(0.2) * LIVE_SHARE == pytest.approx(0.2)
