"""Acceptance: usage tracking and analytics (plan MEDIUM-usage-tracking-analytics), black box over HTTP.

The keys `usage-tracked` and `usage-refused` and the model `usage-tracked` exist only for these tests
(tests/acceptance/gateway.yaml). Each test reads back the requests it made, by request id or by a time window
starting just before it, so state left by earlier runs on a live gateway does not matter.

The metrics tests (steps 10 and 11, at the end) read every exposition with prometheus_client's own parsers
and compare counters before and after their own requests; the key `usage-warned`, the model `usage-failing`
and the scrape token exist for them only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.feature("usage-tracking-analytics")

URL = "/v1/chat/completions"
TRACKED_KEY = "sk-acceptance-usage-tracked"
REFUSED_KEY = "sk-acceptance-usage-refused"
WARNED_KEY = "sk-acceptance-usage-warned"
SCRAPE_TOKEN = "sk-acceptance-metrics-scrape"
ROOT = Path(__file__).resolve().parents[2]


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


# -- metrics (steps 10 and 11) ---------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, *, openmetrics: bool = False) -> Samples:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parse(text)
        for sample in family.samples
    }


def value(parsed: Samples, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def scrape(gateway: Any, **headers: str) -> Samples:
    reply = gateway.client.get("/metrics", headers={**gateway.admin_headers(), **headers})
    assert reply.status_code == 200
    return samples(reply.text)


def ask(client: openai.OpenAI, model: str = "usage-tracked", **extra: Any) -> Any:
    message = [{"role": "user", "content": uuid.uuid4().hex}]
    return client.chat.completions.create(model=model, messages=message, max_tokens=20, **extra)


@pytest.mark.feature("usage-tracking-analytics", step=10)
def test_sre_families_count_real_sdk_traffic(gateway: Any) -> None:
    """Answers, a stream, a budget refusal and an upstream failure move the families an SRE alerts on."""
    before = scrape(gateway)
    tracked = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=TRACKED_KEY, max_retries=0)
    usages = [ask(tracked).usage for _ in range(3)]
    chunks = list(ask(tracked, stream=True, stream_options={"include_usage": True}))
    assert chunks and chunks[-1].usage is not None
    refused = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=REFUSED_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        ask(refused)
    warned = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=WARNED_KEY, max_retries=0)
    usages += [ask(warned).usage, ask(warned).usage]
    anyone = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)
    with pytest.raises(openai.APIStatusError):
        ask(anyone, model="usage-failing")
    after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    answered = {"model": "usage-tracked", "route": "mock/mock-echo", "status": "200", "cache": "false"}
    assert delta("gateway_requests_total", **answered) == 6
    assert delta("gateway_budget_warnings_total", model="usage-tracked") == 2
    refusal = {"model": "usage-tracked", "route": "", "status": "429", "cache": "false"}
    assert delta("gateway_requests_total", **refusal) == 1
    assert delta("gateway_refusals_total", model="usage-tracked", reason="budget") == 1
    assert delta("gateway_request_duration_seconds_count", model="usage-tracked") == 7
    assert (
        delta("gateway_upstream_duration_seconds_count", model="usage-tracked", route="mock/mock-echo") == 6
    )
    assert delta("gateway_ttft_seconds_count", model="usage-tracked") == 1
    prompt = sum(u.prompt_tokens for u in usages) + chunks[-1].usage.prompt_tokens
    completion = sum(u.completion_tokens for u in usages) + chunks[-1].usage.completion_tokens
    assert delta("gateway_tokens_total", model="usage-tracked", direction="prompt") == prompt
    assert delta("gateway_tokens_total", model="usage-tracked", direction="completion") == completion
    assert delta("gateway_cost_usd_total", model="usage-tracked") > 0
    failing = "usage-down/usage-failing-route"
    assert delta("gateway_upstream_errors_total", route=failing, kind="status_5xx") >= 1
    assert value(after, "gateway_requests_in_flight") >= 0
    assert ("gateway_usage_records_pending", frozenset()) in after
    assert ("gateway_usage_dropped_total", frozenset()) in after
    assert (
        "gateway_route_cooldown_open",
        frozenset({("model", "usage-failing"), ("route", failing)}),
    ) in after


@pytest.mark.feature("usage-tracking-analytics", step=10)
def test_openmetrics_is_served_when_asked(gateway: Any) -> None:
    reply = gateway.client.get(
        "/metrics",
        headers={**gateway.admin_headers(), "accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    parsed = samples(reply.text, openmetrics=True)
    assert any(name == "gateway_requests_total" for name, _ in parsed)
    plain = gateway.client.get("/metrics", headers=gateway.admin_headers())
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")


@pytest.mark.feature("usage-tracking-analytics", step=10)
def test_prometheus_scrapes_with_its_own_token(gateway: Any) -> None:
    if gateway.live:
        pytest.skip("the live gateway's scrape token is not known to the tests")
    assert gateway.client.get("/metrics").status_code == 401
    assert gateway.client.get("/metrics", headers=gateway.headers(TRACKED_KEY)).status_code == 401
    assert gateway.client.get("/metrics", headers=gateway.headers(SCRAPE_TOKEN + "x")).status_code == 401
    assert gateway.client.get("/metrics", headers=gateway.headers(SCRAPE_TOKEN)).status_code == 200
    assert gateway.client.get("/metrics", headers=gateway.admin_headers()).status_code == 200
    config = gateway.client.get("/admin/config", headers=gateway.admin_headers()).json()
    assert SCRAPE_TOKEN not in str(config)
    # The token opens /metrics only.
    assert gateway.client.get("/admin/usage", headers=gateway.headers(SCRAPE_TOKEN)).status_code == 401


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    """`gateway run --workers 2` as a subprocess on a free loopback port, each worker with its own in-memory
    ledger (so /admin/usage tells the workers apart); stopped with SIGTERM afterwards."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""
auth:
  master_key: sk-workers-master-0001
  keys: [{{name: client, key: {TRACKED_KEY}}}]
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock, model: mock-echo}}]}}]
usage: {{database: ":memory:"}}
features:
  metrics: {{token: {SCRAPE_TOKEN}}}
"""
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--port", str(port)]
    log = tmp_path / "gateway.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--workers", "2"], env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                pytest.fail(f"gateway run --workers 2 exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_totals(url: str) -> set[int]:
    """The request totals /admin/usage reports, over many reads (each answered by one worker)."""
    master = {"authorization": "Bearer sk-workers-master-0001"}
    totals = set()
    for _ in range(40):
        with httpx.Client() as fresh:  # a new connection, so the kernel may hand it to either worker
            totals.add(fresh.get(f"{url}/admin/usage", headers=master).json()["totals"]["requests"])
    return totals


@pytest.mark.timeout(240)
@pytest.mark.feature("usage-tracking-analytics", step=10)
def test_a_scrape_of_two_workers_counts_both(two_workers: str) -> None:
    url = two_workers
    body = {"model": "echo", "messages": [{"role": "user", "content": "which worker?"}]}
    headers = {"authorization": f"Bearer {TRACKED_KEY}"}

    def send(_: int) -> int:
        with httpx.Client() as fresh:  # one connection per request: the workers share the listening socket
            return fresh.post(f"{url}/v1/chat/completions", json=body, headers=headers).status_code

    sent = 0
    totals: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # until both workers have served some (the kernel picks, not the test)
            assert set(pool.map(send, range(40))) == {200}
            sent += 40
            totals = worker_totals(url)
            if len(totals) == 2:
                break
    assert len(totals) == 2, f"one worker served everything: {totals}"
    assert sum(totals) == sent and min(totals) > 0  # each worker's own ledger holds only its requests
    labels = {"model": "echo", "route": "mock/mock-echo", "status": "200", "cache": "false"}
    for _ in range(6):  # scrapes answered by either worker: each sees every worker's count
        with httpx.Client() as fresh:
            reply = fresh.get(f"{url}/metrics", headers={"authorization": f"Bearer {SCRAPE_TOKEN}"})
        parsed = samples(reply.text)
        assert value(parsed, "gateway_requests_total", **labels) == sent
        assert value(parsed, "gateway_request_duration_seconds_count", model="echo") == sent
        assert value(parsed, "gateway_requests_in_flight") == 0  # summed over live workers
        # One config, reported once however many workers run it (the maximum over workers).
        assert [v for (name, _), v in parsed.items() if name == "gateway_config_info"] == [1.0]


# -- dashboards and alerts ---------------------------------------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# PromQL words that are not metric names: functions, aggregations, keywords, label names, durations.
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_expressions() -> list[str]:
    """Every query of the Grafana dashboard and every expression of the alert rules."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if "expr" in t]
    rules = yaml.safe_load(ALERTS.read_text())
    queries += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return queries


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads: identifiers of the gateway's namespace, outside label matchers
    (braces) and strings."""
    bare = re.sub(r'"[^"]*"', "", expression)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    return {word for word in _IDENTIFIER.findall(bare) if word.startswith("gateway_")}


def exported_names(text: str) -> set[str]:
    """Every series name the gateway exports, with the suffixes PromQL sees (_total, _bucket, _count...)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.feature("usage-tracking-analytics", step=11)
def test_every_dashboard_and_alert_query_names_an_exported_metric(gateway: Any) -> None:
    exported = exported_names(gateway.client.get("/metrics", headers=gateway.admin_headers()).text)
    expressions = promql_expressions()
    assert len(expressions) >= 10
    unknown = {name: expr for expr in expressions for name in metric_names(expr) if name not in exported}
    assert not unknown, f"queries name metrics the gateway does not export: {unknown}"
    assert all(metric_names(expr) for expr in expressions)  # every query reads at least one gateway metric


@pytest.mark.feature("usage-tracking-analytics", step=11)
def test_the_alerts_cover_what_an_sre_is_paged_for() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    by_name = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    wanted = {
        "GatewayHighErrorRate": "gateway_requests_total",
        "GatewayBudgetRefusals": "gateway_refusals_total",
        "GatewayRouteInCooldown": "gateway_route_cooldown_open",
        "GatewayUsageLedgerDropping": "gateway_usage_dropped_total",
        "GatewayHighLatency": "gateway_request_duration_seconds_bucket",
    }
    for alert, metric in wanted.items():
        assert alert in by_name, alert
        assert metric in metric_names(by_name[alert]["expr"]), alert
        assert by_name[alert]["labels"]["severity"] in ("warning", "critical")
        assert by_name[alert]["annotations"]["summary"]
