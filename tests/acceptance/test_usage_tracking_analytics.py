"""Acceptance: usage tracking and analytics (plan MEDIUM-usage-tracking-analytics), black box over HTTP.

The keys `usage-tracked` and `usage-refused` and the model `usage-tracked` exist only for these tests
(tests/acceptance/gateway.yaml). Each test reads back the requests it made, by request id or by a time window
starting just before it, so state left by earlier runs on a live gateway does not matter.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.feature("usage-tracking-analytics")

URL = "/v1/chat/completions"
TRACKED_KEY = "sk-acceptance-usage-tracked"
REFUSED_KEY = "sk-acceptance-usage-refused"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "usage-tracked", "messages": [{"role": "user", "content": uuid.uuid4().hex}], **extra}


def record(gateway, request_id: str) -> dict[str, Any]:
    reply = gateway.client.get(f"/admin/usage/requests/{request_id}", headers=gateway.admin_headers())
    assert reply.status_code == 200
    (row,) = reply.json()["records"]
    return row


def requests_counter(gateway, status: str) -> float:
    reply = gateway.client.get("/metrics", headers=gateway.admin_headers())
    assert reply.status_code == 200
    labels = {"model": "usage-tracked", "route": "", "status": status, "cache": "false"}
    found = [
        sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == "gateway_requests_total" and sample.labels == labels
    ]
    return found[0] if found else 0


def test_each_request_is_recorded_with_its_tokens(gateway) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    usages = []
    for _ in range(3):
        reply = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(TRACKED_KEY))
        assert reply.status_code == 200
        usages.append(reply.json()["usage"])
        row = record(gateway, reply.headers["x-request-id"])
        assert row["key_name"] == "usage-tracked" and row["model"] == "usage-tracked"
        assert row["prompt_tokens"] == usages[-1]["prompt_tokens"]
        assert row["completion_tokens"] == usages[-1]["completion_tokens"]
        assert row["usage_source"] == "reported" and row["status"] == 200
        assert row["latency_ms"] >= 0
        assert TRACKED_KEY not in json.dumps(row)
    report = gateway.client.get(
        "/admin/usage", params={"group_by": "model", "from": since}, headers=gateway.admin_headers()
    )
    (group,) = [g for g in report.json()["groups"] if g["model"] == "usage-tracked"]
    assert group["requests"] == 3
    assert group["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert group["completion_tokens"] == sum(u["completion_tokens"] for u in usages)


def test_a_refused_request_is_recorded_with_its_status_and_counted(gateway) -> None:
    before = requests_counter(gateway, "429")
    reply = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(REFUSED_KEY))
    assert reply.status_code == 429
    row = record(gateway, reply.headers["x-request-id"])
    assert row["status"] == 429 and row["cost_usd"] == "0" and row["route"] is None
    assert requests_counter(gateway, "429") == before + 1


def test_streams_are_recorded_when_they_end(gateway) -> None:
    body = chat(max_tokens=20, stream=True)
    reply = gateway.client.post(URL, json=body, headers=gateway.headers(TRACKED_KEY))
    assert reply.status_code == 200 and reply.text.rstrip().endswith("data: [DONE]")
    row = record(gateway, reply.headers["x-request-id"])
    assert row["stream"] is True and row["status"] == 200
    assert row["completion_tokens"] > 0


def test_usage_by_day_and_metrics_need_the_master_key(gateway) -> None:
    for path in ("/admin/usage", "/metrics"):
        assert gateway.client.get(path, headers=gateway.headers(TRACKED_KEY)).status_code == 401
    today = datetime.now(UTC).date()
    report = gateway.client.get(
        "/admin/usage",
        params={"group_by": "day", "from": (today - timedelta(days=1)).isoformat()},
        headers=gateway.admin_headers(),
    )
    assert report.status_code == 200
    days = [g["day"] for g in report.json()["groups"]]
    assert days == sorted(days) and days
    metrics = gateway.client.get("/metrics", headers=gateway.admin_headers()).text
    assert "# TYPE gateway_request_duration_seconds histogram" in metrics
    assert 'gateway_tokens_total{direction="prompt",model="usage-tracked"}' in metrics
