"""Prometheus metrics of the usage stage: text format, bounded labels, cumulative histogram buckets."""

from __future__ import annotations

import httpx
import pytest
from budget_fakes import ALICE, FREE, MASTER, FakeUpstream, auth, chat, config_text
from budget_fakes import usage_record as record
from gateway_testing import serve

from gateway.config import parse_config
from gateway.metrics import UsageMetrics


def test_metrics_text_format() -> None:
    metrics = UsageMetrics()
    metrics.observe(record())
    metrics.observe(record(latency_ms=3000.0, cost_nanos=25_000))
    metrics.observe(record(status=429, route=None, prompt_tokens=0, completion_tokens=0, cost_nanos=0))
    metrics.observe(record(model='we"ird\nmodel', cache_hit=True, cost_nanos=0))
    text = metrics.render(pending_records=3)
    lines = text.splitlines()
    assert (
        'gateway_requests_total{model="gpt-4o",route="openai/gpt-4o",status="200",cache="false"} 2' in lines
    )
    assert 'gateway_requests_total{model="gpt-4o",route="",status="429",cache="false"} 1' in lines
    assert (
        'gateway_requests_total{model="we\\"ird\\nmodel",route="openai/gpt-4o",status="200",cache="true"} 1'
        in lines
    )
    assert 'gateway_tokens_total{model="gpt-4o",direction="prompt"} 20' in lines
    assert 'gateway_tokens_total{model="gpt-4o",direction="completion"} 10' in lines
    assert 'gateway_cost_usd_total{model="gpt-4o"} 0.0001' in lines
    assert 'gateway_request_duration_seconds_bucket{model="gpt-4o",le="0.025"} 0' in lines
    assert 'gateway_request_duration_seconds_bucket{model="gpt-4o",le="0.05"} 2' in lines  # 30 ms twice
    assert 'gateway_request_duration_seconds_bucket{model="gpt-4o",le="5.0"} 3' in lines
    assert 'gateway_request_duration_seconds_bucket{model="gpt-4o",le="+Inf"} 3' in lines
    assert 'gateway_request_duration_seconds_count{model="gpt-4o"} 3' in lines
    assert "gateway_usage_records_pending 3" in lines
    assert "# TYPE gateway_request_duration_seconds histogram" in lines
    assert "alice" not in text  # no per-key series
    assert text.endswith("\n")


@pytest.mark.anyio
async def test_metrics_endpoint_counts_answers_and_refusals() -> None:
    async with serve(parse_config(config_text()), FakeUpstream().transport()) as client:
        await client.post("/v1/chat/completions", json=chat("a", max_tokens=5), headers=auth(FREE))
        await client.post("/v1/chat/completions", json=chat("b", max_tokens=5000), headers=auth(ALICE))
        assert (await client.get("/metrics", headers=auth(ALICE))).status_code == 401
        reply: httpx.Response = await client.get("/metrics", headers=auth(MASTER))
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        lines = reply.text.splitlines()
        assert (
            'gateway_requests_total{model="priced",route="up/up-model",status="200",cache="false"} 1' in lines
        )
        assert 'gateway_requests_total{model="priced",route="",status="429",cache="false"} 1' in lines
