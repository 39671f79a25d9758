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
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config

pytestmark = pytest.mark.feature("usage-tracking-analytics")

URL = "/v1/chat/completions"
CONFIG = Path(__file__).with_name("gateway.yaml")
TRACKED_KEY = "sk-acceptance-usage-tracked"
REFUSED_KEY = "sk-acceptance-usage-refused"
SHARED_KEY = "sk-acceptance-usage-shared"  # a budget of its own; also the replicas' test
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


# --- The remaining steps: record fields, migrations, the drop counter, a shared ledger, filters ----------


def in_process_only(gateway) -> None:
    if gateway.live:
        pytest.skip(
            "starts gateways of its own with a ledger it prepares; a live gateway's ledger is its own"
        )


@pytest.mark.feature("usage-tracking-analytics", step=1)
def test_records_carry_cache_status_avoided_cost_error_code_and_overhead(gateway) -> None:
    body = {"model": "mock-cached", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    miss = gateway.client.post(URL, json=body, headers=gateway.headers())
    hit = gateway.client.post(URL, json=body, headers=gateway.headers())
    assert (miss.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("MISS", "HIT")
    missed, served = (
        record(gateway, miss.headers["x-request-id"]),
        record(gateway, hit.headers["x-request-id"]),
    )
    assert (missed["cache_status"], served["cache_status"]) == ("MISS", "HIT")
    # The hit cost nothing and avoided what the miss cost upstream (same tokens, same route).
    assert served["cost_usd"] == "0" and served["avoided_cost_usd"] == missed["cost_usd"] != "0"
    assert missed["overhead_ms"] >= 0 and missed["error_code"] is None
    refused = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(REFUSED_KEY))
    refusal = record(gateway, refused.headers["x-request-id"])
    assert refusal["error_code"] == "budget_exceeded" and refusal["reservation_id"] is None
    assert missed["reservation_id"] is None  # no budget on this key
    budgeted = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(SHARED_KEY))
    assert len(record(gateway, budgeted.headers["x-request-id"])["reservation_id"]) == 13


@pytest.mark.feature("usage-tracking-analytics", step=(7, 8))
def test_usage_filtered_by_key_and_grouped_by_several_dimensions(gateway) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    def report() -> dict[str, Any]:
        params = {"group_by": "key,model,status", "key": "usage-tracked", "from": since}
        reply = gateway.client.get("/admin/usage", params=params, headers=gateway.admin_headers())
        assert reply.status_code == 200
        return reply.json()

    def answered(body: dict[str, Any]) -> int:
        groups = {(g["key"], g["model"], g["status"]): g["requests"] for g in body["groups"]}
        return groups.get(("usage-tracked", "usage-tracked", 200), 0)

    before = report()
    for _ in range(2):
        reply = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(TRACKED_KEY))
        assert reply.status_code == 200
    gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(REFUSED_KEY))  # another key
    after = report()
    assert after["key"] == "usage-tracked" and after["group_by"] == "key,model,status"
    assert after["totals"]["requests"] == before["totals"]["requests"] + 2
    assert answered(after) == answered(before) + 2
    assert {g["key"] for g in after["groups"]} == {"usage-tracked"}
    bad = gateway.client.get(
        "/admin/usage", params={"group_by": "key,colour"}, headers=gateway.admin_headers()
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


@pytest.mark.feature("usage-tracking-analytics", step=(4, 8))
def test_whole_days_come_from_the_daily_rollup_and_agree_with_the_raw_records(gateway) -> None:
    for _ in range(2):
        reply = gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(TRACKED_KEY))
        assert reply.status_code == 200
    gateway.client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(REFUSED_KEY))
    today = datetime.now(UTC).date()
    days = {"from": (today - timedelta(days=2)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    # The same window as date-times reads the raw records; as dates, the rollup.
    instants = {name: f"{value}T00:00:00" for name, value in days.items()}
    instants["to"] = f"{(today + timedelta(days=2)).isoformat()}T00:00:00"
    reports = []
    for window in (days, instants):
        reply = gateway.client.get(
            "/admin/usage", params={"group_by": "key,model", **window}, headers=gateway.admin_headers()
        )
        assert reply.status_code == 200
        reports.append(reply.json())
    rolled, raw = reports
    assert (rolled["source"], raw["source"]) == ("usage_daily", "usage")
    assert rolled["totals"] == raw["totals"] and rolled["totals"]["requests"] >= 3
    assert rolled["groups"] == raw["groups"]


def _serve(stack: ExitStack, tmp_path: Path, usage: dict[str, Any]) -> httpx.Client:
    """A gateway of the acceptance config with ``usage`` as its ledger, served on loopback until ``stack``."""
    data = yaml.safe_load(CONFIG.read_text())
    data["usage"] = usage
    path = tmp_path / f"gateway-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    url = stack.enter_context(run_server(create_app(load_config(path))))
    return stack.enter_context(httpx.Client(base_url=url, timeout=30))


@pytest.mark.feature("usage-tracking-analytics", step=2)
def test_a_ledger_file_from_an_older_gateway_is_migrated_and_kept(gateway, tmp_path: Path) -> None:
    in_process_only(gateway)
    database = tmp_path / "old.sqlite3"
    old_columns = ("ts, day, request_id, key_name, team, model, route, endpoint, stream, prompt_tokens, "
                   "completion_tokens, usage_source, cost_nanos, latency_ms, status, cache_hit")  # fmt: skip
    with sqlite3.connect(database) as conn:  # the schema before versions (no attempts, no ttft_ms)
        conn.execute(f"CREATE TABLE usage (id INTEGER PRIMARY KEY, {old_columns})")
        conn.execute(
            f"INSERT INTO usage ({old_columns}) VALUES "
            "(1700000000, '2023-11-14', 'old-1', 'usage-tracked', NULL, 'usage-tracked', 'mock/mock-echo', "
            "'chat', 0, 10, 5, 'reported', 1500, 12.0, 200, 0)"
        )
    with ExitStack() as stack:
        client = _serve(stack, tmp_path, {"database": str(database)})
        reply = client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(TRACKED_KEY))
        assert reply.status_code == 200
        report = client.get("/admin/usage", params={"key": "usage-tracked"}, headers=gateway.admin_headers())
        assert report.json()["totals"]["requests"] == 2
        old = client.get("/admin/usage/requests/old-1", headers=gateway.admin_headers()).json()["records"][0]
        assert old["attempts"] == 0 and old["cache_status"] is None and old["cost_usd"] == "0.0000015"
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2


@pytest.mark.feature("usage-tracking-analytics", step=(3, 8))
def test_records_the_ledger_cannot_keep_are_counted_as_dropped_on_metrics(gateway, tmp_path: Path) -> None:
    in_process_only(gateway)
    logs = tmp_path / "logs"
    logs.mkdir()
    with ExitStack() as stack:
        # A JSONL sink whose directory disappears: every write fails, nothing spills, the queue holds 2.
        client = _serve(
            stack, tmp_path, {"sink": "jsonl", "jsonl_path": str(logs / "u.jsonl"), "queue_size": 2}
        )
        shutil.rmtree(logs)
        for _ in range(5):
            reply = client.post(URL, json=chat(max_tokens=20), headers=gateway.headers(TRACKED_KEY))
            assert reply.status_code == 200  # the request is never slowed or failed by the ledger
        metrics = client.get("/metrics", headers=gateway.admin_headers()).text
        (dropped,) = [
            line for line in metrics.splitlines() if line.startswith("gateway_usage_dropped_total ")
        ]
        assert float(dropped.split()[1]) >= 3  # prometheus_client writes counters as floats
        usage = client.get("/admin/usage", headers=gateway.admin_headers())
        assert usage.status_code == 501 and usage.json()["error"]["code"] == "usage_not_queryable"


@pytest.mark.feature("usage-tracking-analytics", step=5)
def test_replicas_sharing_a_postgres_ledger_report_each_others_traffic(
    gateway, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    in_process_only(gateway)
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    master = gateway.admin_headers()
    with ExitStack() as stack:
        a, b = (_serve(stack, tmp_path, {"sink": "postgres", "postgres_url": url}) for _ in range(2))
        ids = []
        for _ in range(3):
            reply = a.post(URL, json=chat(max_tokens=20), headers=gateway.headers(SHARED_KEY))
            assert reply.status_code == 200
            ids.append(reply.headers["x-request-id"])
        # B never saw these requests; it reads them from the shared ledger once A's writer has sent them.
        report: dict[str, Any] = {}
        for _ in range(300):
            report = b.get("/admin/usage", params={"key": "usage-shared"}, headers=master).json()
            if report["totals"]["requests"] == 3:
                break
            time.sleep(0.1)
        assert report["totals"]["requests"] == 3, report
        assert report["ledger"]["sink"] == "postgres" and server.url.split(":")[2].split("@")[0] not in str(
            report
        )
        assert b.get(f"/admin/usage/requests/{ids[0]}", headers=master).json()["records"][0]["key_name"] == (
            "usage-shared"
        )
        spent_on_a = {r["name"]: r for r in a.get("/admin/budgets", headers=master).json()["budgets"]}
        # A replica started now (its own empty state store) restores the budget from the shared ledger.
        c = _serve(stack, tmp_path, {"sink": "postgres", "postgres_url": url})
        spent_on_c = {r["name"]: r for r in c.get("/admin/budgets", headers=master).json()["budgets"]}
        assert spent_on_c["usage-shared"]["spent_usd"] == spent_on_a["usage-shared"]["spent_usd"] != "0"


@pytest.mark.feature("usage-tracking-analytics", step=6)
def test_logged_bodies_are_redacted_and_kept_apart(gateway, tmp_path: Path) -> None:
    in_process_only(gateway)
    prompt = "Write to grace@example.org with key sk-live-0123456789abcdef about the invoice."
    body = {"model": "usage-tracked", "messages": [{"role": "user", "content": prompt}], "max_tokens": 30}
    with ExitStack() as stack:
        logging = _serve(stack, tmp_path, {"database": str(tmp_path / "bodies.sqlite3"), "log_bodies": {}})
        reply = logging.post(URL, json=body, headers=gateway.headers(TRACKED_KEY))
        assert reply.status_code == 200
        answer = reply.json()["choices"][0]["message"]["content"]
        (row,) = logging.get(
            f"/admin/usage/requests/{reply.headers['x-request-id']}", headers=gateway.admin_headers()
        ).json()["records"]
        logged = row["body"]
        assert "about the invoice" in logged["request"] and logged["request"].count("[redacted]") == 2
        assert (
            "grace@example.org" not in logged["request"]
            and "sk-live-0123456789abcdef" not in logged["request"]
        )
        assert logged["response"] == answer.replace("grace@example.org", "[redacted]").replace(
            "sk-live-0123456789abcdef", "[redacted]"
        )
    # Off by default: the acceptance gateway logs no body.
    plain = gateway.client.post(URL, json=body, headers=gateway.headers(TRACKED_KEY))
    assert "body" not in record(gateway, plain.headers["x-request-id"])


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
            if len(totals) == 2 and min(totals) > 0:  # a worker that served nothing yet reports 0
                break
    assert len(totals) == 2 and min(totals) > 0, f"one worker served everything: {totals}"
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
