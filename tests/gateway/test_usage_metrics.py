"""Prometheus metrics (gateway/metrics.py): the families, their bounded labels, the scrape credentials, the
OpenMetrics negotiation, the separate listener and the multiprocess merge. Every exposition is read back
with prometheus_client's own parsers, never by matching text."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from budget_fakes import usage_record as record
from gateway_testing import KEY, LIMITED_KEY, MASTER_KEY, TEST_CONFIG, auth, chat, run_server, serve
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.metrics import GatewayMetrics, error_kind, multiprocess_registry
from gateway.metrics_config import MetricsConfig

TOKEN = "sk-scrape-token-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, *, openmetrics: bool = False) -> Samples:
    """Every sample of an exposition, by name and label set, parsed by the client library."""
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parse(text)
        for sample in family.samples
    }


def value(parsed: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when absent (a counter never incremented)."""
    return parsed.get((name, frozenset(labels.items())), 0.0)


def families(text: str) -> dict[str, str]:
    """Family name -> type."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def rendered(metrics: GatewayMetrics, accept: str | None = None) -> str:
    body, _ = metrics.render(accept)
    return body.decode()


def test_records_are_counted_with_bounded_labels() -> None:
    metrics = GatewayMetrics()
    metrics.observe(record(), "MISS", None)
    metrics.observe(record(latency_ms=3000.0, cost_nanos=25_000, ttft_ms=120.0, stream=True), "HIT", None)
    refused = record(status=429, route=None, prompt_tokens=0, completion_tokens=0, cost_nanos=0)
    metrics.observe(refused, None, "rate_limit_exceeded")
    metrics.observe(record(status=429, route=None, cost_nanos=0), None, "budget_exceeded")
    metrics.observe(record(model='we"ird\nmodel'), None, None)
    text = rendered(metrics)
    parsed = samples(text)
    ok = {"model": "gpt-4o", "route": "openai/gpt-4o", "status": "200", "cache": "false"}
    assert value(parsed, "gateway_requests_total", **ok) == 2
    assert value(parsed, "gateway_requests_total", model="gpt-4o", route="", status="429", cache="false") == 2
    assert value(parsed, "gateway_requests_total", **{**ok, "model": 'we"ird\nmodel'}) == 1
    assert value(parsed, "gateway_tokens_total", model="gpt-4o", direction="prompt") == 30
    assert value(parsed, "gateway_tokens_total", model="gpt-4o", direction="completion") == 15
    assert value(parsed, "gateway_cost_usd_total", model="gpt-4o") == pytest.approx((75_000 + 25_000) * 1e-9)
    bucket = "gateway_request_duration_seconds_bucket"
    assert value(parsed, bucket, model="gpt-4o", le="0.025") == 0
    assert value(parsed, bucket, model="gpt-4o", le="0.05") == 3  # 30 ms three times
    assert value(parsed, bucket, model="gpt-4o", le="5.0") == 4
    assert value(parsed, bucket, model="gpt-4o", le="+Inf") == 4
    assert value(parsed, "gateway_request_duration_seconds_count", model="gpt-4o") == 4
    assert value(parsed, "gateway_ttft_seconds_count", model="gpt-4o") == 1
    assert value(parsed, "gateway_ttft_seconds_bucket", model="gpt-4o", le="0.25") == 1
    assert value(parsed, "gateway_cache_requests_total", model="gpt-4o", result="hit") == 1
    assert value(parsed, "gateway_cache_requests_total", model="gpt-4o", result="miss") == 1
    assert value(parsed, "gateway_refusals_total", model="gpt-4o", reason="rate_limit") == 1
    assert value(parsed, "gateway_refusals_total", model="gpt-4o", reason="budget") == 1
    assert families(text)["gateway_request_duration_seconds"] == "histogram"
    assert "alice" not in text  # no per-key series


def test_each_app_has_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.observe(record(), None, None)
    assert value(samples(rendered(first)), "gateway_requests_total", model="gpt-4o", route="openai/gpt-4o",
                 status="200", cache="false") == 1  # fmt: skip
    assert ("gateway_requests_total", frozenset()) not in samples(rendered(second))
    assert not [k for k in samples(rendered(second)) if k[0] == "gateway_requests_total"]


def test_upstream_error_kinds_stay_bounded() -> None:
    assert error_kind("upstream_timeout", 504) == "timeout"
    assert error_kind("upstream_rate_limited", 429) == "rate_limited"
    assert error_kind("upstream_error", 502) == "status_5xx"  # the generic code says nothing more
    assert error_kind("invalid_request_error", 400) == "status_4xx"
    assert error_kind("upstream_anything_new", 503) == "status_5xx"
    assert error_kind(None, 500) == "status_5xx"


def test_openmetrics_is_negotiated() -> None:
    metrics = GatewayMetrics()
    metrics.observe(record(), None, None)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    parsed = samples(text, openmetrics=True)
    labels = {"model": "gpt-4o", "route": "openai/gpt-4o", "status": "200", "cache": "false"}
    assert value(parsed, "gateway_requests_total", **labels) == 1
    _, plain = metrics.render("text/plain")
    assert plain.startswith("text/plain; version=0.0.4")
    assert metrics.render(None)[1].startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("{token: short}", "features.metrics.token"),
        ("{listen: '9464'}", "features.metrics.listen"),
        ("{listen: 'example.com:9464'}", "features.metrics.listen"),
        ("{listen: '127.0.0.1:99999'}", "features.metrics.listen"),
        ("{enabled: maybe}", "features.metrics.enabled"),
        ("{tokn: x}", "features.metrics"),
    ],
)
def test_bad_metrics_settings_name_the_key(section: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(TEST_CONFIG + f"features:\n  metrics: {section}\n")
    assert problem in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_the_token_is_held_as_a_digest_and_compared_whole() -> None:
    settings = MetricsConfig(token=TOKEN)
    assert settings.token is not None and TOKEN not in settings.token
    assert settings.token_matches({"authorization": f"Bearer {TOKEN}"})
    assert not settings.token_matches({"authorization": f"Bearer {TOKEN}x"})
    assert not settings.token_matches({"authorization": f"Basic {TOKEN}"})
    assert not settings.token_matches({})
    assert not MetricsConfig().token_matches({"authorization": f"Bearer {TOKEN}"})


CONFIG = (
    TEST_CONFIG.replace("models: [echo]}", "models: [echo], rpm: 1}")
    + f"""
features:
  cache: {{}}
  metrics: {{token: {TOKEN}}}
"""
)


def test_metrics_after_real_requests_through_the_openai_sdk() -> None:
    """Answers, a stream, a cache hit, a rate-limit refusal and an upstream failure, each counted."""
    with run_server(create_app(parse_config(CONFIG))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        message = [{"role": "user", "content": "count me"}]
        client.chat.completions.create(model="echo", messages=message)  # type: ignore[arg-type]
        client.chat.completions.create(model="echo", messages=message)  # type: ignore[arg-type]  # cached
        stream = client.chat.completions.create(model="fixed", messages=message, stream=True)  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "fixed answer"
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="broken", messages=message)  # type: ignore[arg-type]
        limited = openai.OpenAI(base_url=f"{url}/v1", api_key=LIMITED_KEY, max_retries=0)
        limited.chat.completions.create(model="echo", messages=[{"role": "user", "content": "b1"}])
        with pytest.raises(openai.RateLimitError):
            limited.chat.completions.create(model="echo", messages=[{"role": "user", "content": "b2"}])

        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=auth(KEY)).status_code == 401
        assert httpx.get(f"{url}/metrics", headers=auth(MASTER_KEY)).status_code == 200
        reply = httpx.get(f"{url}/metrics", headers=auth(TOKEN))
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        parsed = samples(reply.text)
        echo = {"model": "echo", "route": "mock/mock-echo-v1"}
        assert value(parsed, "gateway_requests_total", **echo, status="200", cache="false") == 2
        # A cache hit has no route: no upstream answered it.
        assert (
            value(parsed, "gateway_requests_total", model="echo", route="", status="200", cache="true") == 1
        )
        assert (
            value(parsed, "gateway_requests_total", model="echo", route="", status="429", cache="false") == 1
        )
        assert value(parsed, "gateway_refusals_total", model="echo", reason="rate_limit") == 1
        assert value(parsed, "gateway_cache_requests_total", model="echo", result="hit") == 1
        assert value(parsed, "gateway_cache_requests_total", model="echo", result="miss") == 2
        broken = value(
            parsed, "gateway_requests_total", model="broken", route="", status="503", cache="false"
        )
        assert broken == 1
        # Every attempt the router made on the failing route (retries included) is one upstream error.
        assert value(parsed, "gateway_upstream_errors_total", route="broken/broken", kind="status_5xx") >= 1
        assert value(parsed, "gateway_upstream_duration_seconds_count", **echo) == 2  # the hit skipped it
        assert value(parsed, "gateway_ttft_seconds_count", model="fixed") == 1
        assert value(parsed, "gateway_request_duration_seconds_count", model="echo") == 4
        assert value(parsed, "gateway_requests_in_flight") == 0
        assert value(parsed, "gateway_route_cooldown_open", model="broken", route="broken/broken") in (0, 1)
        assert ("gateway_usage_records_pending", frozenset()) in parsed
        assert value(parsed, "gateway_usage_dropped_total") == 0
        assert TOKEN not in reply.text and "alice" not in reply.text

        openmetrics = httpx.get(
            f"{url}/metrics", headers={**auth(TOKEN), "accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        parsed = samples(openmetrics.text, openmetrics=True)
        assert value(parsed, "gateway_requests_total", **echo, status="200", cache="false") == 2

        shown = httpx.get(f"{url}/admin/config", headers=auth(MASTER_KEY)).json()
        assert shown["config"]["features"]["metrics"]["token"] == "***"
        assert TOKEN not in str(shown)


def test_in_flight_counts_a_stream_until_it_ends() -> None:
    # A stream of 400 one-character chunks 50 ms apart: it is still running when the scrape comes.
    slow = (
        "  - {name: slow, type: mock, options: {reply: '"
        + "x" * 400
        + "', chunk_size: 1, chunk_delay_ms: 50}}"
    )
    config = TEST_CONFIG.replace("providers:\n", f"providers:\n{slow}\n").replace(
        "models:\n", "models:\n  - {name: slow, routes: [{provider: slow}]}\n"
    )
    with run_server(create_app(parse_config(config))) as url, httpx.Client(base_url=url) as client:
        body = chat(model="slow", stream=True)
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as reply:
            lines = reply.iter_lines()  # kept: a discarded iterator would close the stream when collected
            assert next(lines).startswith("data: ")
            during = samples(client.get("/metrics", headers=auth(MASTER_KEY)).text)
            assert value(during, "gateway_requests_in_flight") == 1
        # The client left: the stream ends (499) and is no longer in flight.
        for _ in range(200):
            after = samples(client.get("/metrics", headers=auth(MASTER_KEY)).text)
            if value(after, "gateway_requests_in_flight") == 0:
                break
            time.sleep(0.05)  # the server notices the disconnect at its next chunk
        assert value(after, "gateway_requests_in_flight") == 0
        labels = {"model": "slow", "route": "slow/slow", "status": "499", "cache": "false"}
        assert value(after, "gateway_requests_total", **labels) == 1


@pytest.mark.anyio
async def test_metrics_can_be_switched_off() -> None:
    async with serve(parse_config(TEST_CONFIG + "features:\n  metrics: {enabled: false}\n")) as client:
        assert (await client.post("/v1/chat/completions", json=chat(), headers=auth())).status_code == 200
        assert (await client.get("/metrics", headers=auth(MASTER_KEY))).status_code == 404


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_separate_listener_needs_no_credential_and_stops_with_the_app() -> None:
    port = free_port()
    config = parse_config(TEST_CONFIG + f"features:\n  metrics: {{listen: '127.0.0.1:{port}'}}\n")
    with run_server(create_app(config)) as url:
        assert httpx.post(f"{url}/v1/chat/completions", json=chat(), headers=auth()).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401  # the main port still wants a credential
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert reply.status_code == 200
        parsed = samples(reply.text)
        labels = {"model": "echo", "route": "mock/mock-echo-v1", "status": "200", "cache": "false"}
        assert value(parsed, "gateway_requests_total", **labels) == 1
        openmetrics = httpx.get(
            f"http://127.0.0.1:{port}/metrics", headers={"accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_gauge(directory: Path, mode: str, pid: int, name: str, number: float) -> None:
    store = MmapedDict(str(directory / f"gauge_{mode}_{pid}.db"))
    store.write_value(mmap_key(name, name, [], [], "help"), number, 0.0)
    store.close()


def write_counter(directory: Path, pid: int, name: str, number: float) -> None:
    store = MmapedDict(str(directory / f"counter_{pid}.db"))
    store.write_value(mmap_key(name, name + "_total", [], [], "help"), number, 0.0)
    store.close()


def test_the_merge_keeps_dead_workers_counts_and_drops_their_live_gauges(tmp_path: Path) -> None:
    gone = dead_pid()
    write_gauge(tmp_path, "livesum", os.getpid(), "gateway_requests_in_flight", 2)
    write_gauge(tmp_path, "livesum", gone, "gateway_requests_in_flight", 5)
    write_counter(tmp_path, os.getpid(), "gateway_requests", 3)
    write_counter(tmp_path, gone, "gateway_requests", 4)
    registry = multiprocess_registry(str(tmp_path))
    from prometheus_client import generate_latest

    parsed = samples(generate_latest(registry).decode())
    assert value(parsed, "gateway_requests_in_flight") == 2  # the dead worker's requests are not in flight
    assert value(parsed, "gateway_requests_total") == 7  # but what it served stays counted
    assert not (tmp_path / f"gauge_livesum_{gone}.db").exists()


def test_each_workers_run_gets_a_private_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.metrics import MULTIPROC_ENV, worker_metrics_dir

    monkeypatch.setenv(MULTIPROC_ENV, "/somewhere/shared")
    with worker_metrics_dir() as first:
        assert os.environ[MULTIPROC_ENV] == first and os.listdir(first) == []
        Path(first, "counter_1.db").write_bytes(b"")
    with worker_metrics_dir() as second:
        assert second != first and os.listdir(second) == []  # nothing of the earlier run is counted
    assert not Path(first).exists() and not Path(second).exists()
    assert os.environ[MULTIPROC_ENV] == "/somewhere/shared"


def test_a_route_in_cooldown_shows_on_the_gauge_until_it_closes() -> None:
    cooldown = "features:\n  routing:\n    cooldown: {min_requests: 2, window_seconds: 60, seconds: 600}\n"
    with run_server(create_app(parse_config(TEST_CONFIG + cooldown))) as url:
        for _ in range(3):
            assert (
                httpx.post(
                    f"{url}/v1/chat/completions", json=chat(model="broken"), headers=auth()
                ).status_code
                >= 500
            )
        parsed = samples(httpx.get(f"{url}/metrics", headers=auth(MASTER_KEY)).text)
        assert value(parsed, "gateway_route_cooldown_open", model="broken", route="broken/broken") == 1
        assert value(parsed, "gateway_route_cooldown_open", model="echo", route="mock/mock-echo-v1") == 0
        failed = value(parsed, "gateway_upstream_errors_total", route="broken/broken", kind="status_5xx")
        assert failed >= 2  # the attempts that opened the circuit; later requests fail fast without one
