"""Acceptance: distributed tracing (features.tracing), black-box over HTTP.

Each test starts its own in-process gateway whose config (or the standard ``OTEL_*`` environment) exports
to a real OTLP receiver the test runs on loopback: OTLP/HTTP (protobuf POSTs to /v1/traces) or OTLP/gRPC
(a ``grpc.aio`` TraceService), both decoding ``ExportTraceServiceRequest`` (tests/otlp_collector.py). Its
upstream is the mock upstream on loopback behind a recorder of request headers; clients are ``httpx`` and
the ``openai`` SDK. Skipped against a live gateway: its tracing backend, its environment and its upstream
are not the test's to read.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from otlp_collector import Collector, grpc_collector, http_collector
from starlette.types import Receive, Scope, Send
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config
from gateway.mock_upstream import MockUpstream
from gateway.providers.mock import MockOptions

pytestmark = pytest.mark.feature("distributed-tracing")

KEY = "sk-acceptance-tracing"
MASTER = "sk-acceptance-tracing-master"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # Span.SpanKind values in the OTLP protobuf
# The file's features.tracing unless a test gives its own; {collector} is the receiver's URL.
EXPORT = (
    "exporter: otlp, endpoint: {collector}, service_name: acceptance-tracing,"
    " headers: {x-collector-token: tracing-test-token}"
)
COLLECTORS: dict[str, Callable[[], AbstractContextManager[Collector]]] = {
    "http/protobuf": http_collector,
    "grpc": grpc_collector,
}


@dataclass
class Span:
    """One exported span, decoded."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[str]
    error: bool
    resource: dict[str, Any]


@dataclass
class Recorder:
    """The mock upstream, recording the headers of each request it answers."""

    upstream: MockUpstream
    headers: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await self.upstream(scope, receive, send)


@dataclass
class Traced:
    """What one traced gateway run produced: the replies, the upstream's headers, what the receiver got."""

    replies: list[Any]
    upstream_headers: list[dict[str, str]]
    collector: Collector

    @property
    def exports(self) -> list[tuple[dict[str, str], Any]]:
        return self.collector.exports

    def spans(self) -> list[Span]:
        spans: list[Span] = []
        for _, request in self.exports:
            for resource in request.resource_spans:
                attributes = {a.key: _value(a.value) for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    spans.extend(_decode(span, attributes) for span in scope.spans)
        return spans


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _decode(span: Any, resource: dict[str, Any]) -> Span:
    return Span(
        name=span.name,
        kind=span.kind,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        attributes={a.key: _value(a.value) for a in span.attributes},
        events=[e.name for e in span.events],
        error=span.status.code == 2,
        resource=resource,
    )


@pytest.fixture
def run_traced(gateway: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``run_traced(requests, tracing=..., protocol=..., env=...)``: a traced gateway serves
    ``requests(url)`` (``url``: its base URL), then stops, flushing its spans to the receiver."""
    if gateway.live:
        pytest.skip("reads the gateway's span export and its upstream's headers: not possible on a live one")

    def run(
        requests: Callable[[str], list[Any]],
        *,
        tracing: str = EXPORT,
        protocol: str = "http/protobuf",
        env: dict[str, str] | None = None,
    ) -> Traced:
        good = Recorder(MockUpstream())
        bad = Recorder(MockUpstream(MockOptions(fail_rate=1.0, fail_status=503)))
        with COLLECTORS[protocol]() as collector:
            for name, value in (env or {}).items():
                monkeypatch.setenv(name, value.replace("{collector}", collector.url))
            with run_server(good) as good_url, run_server(bad) as bad_url:
                path = tmp_path / "gateway.yaml"
                path.write_text(_config(good_url, bad_url, tracing.replace("{collector}", collector.url)))
                app = create_app(load_config(path))
                with run_server(app) as url:
                    replies = requests(url)
            # The gateway has stopped: its tracer provider flushed every span to the receiver.
        return Traced(replies, bad.headers + good.headers, collector)

    yield run


def _config(good_url: str, bad_url: str, tracing: str) -> str:
    return f"""
auth:
  master_key: {MASTER}
  keys: [{{name: tracing, key: {KEY}, rpm: 100}}]
providers:
  - {{name: good, type: openai, base_url: "{good_url}/v1", api_key: sk-upstream-good}}
  - {{name: bad, type: openai, base_url: "{bad_url}/v1", api_key: sk-upstream-bad}}
models:
  - {{name: traced, routes: [{{provider: good, model: mock-echo}}]}}
  # The failing route first, then (its only attempt spent) the fallback alias: always two attempts, in order.
  - {{name: traced-failover, routes: [{{provider: bad, model: mock-echo}}], fallbacks: [traced]}}
features:
  routing: {{max_attempts: 1}}
  rate_limit: {{}}
  tracing: {{{tracing}}}
usage: {{database: ":memory:"}}
"""


def post(url: str, model: str, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": f"trace me {uuid.uuid4()}"}], **extra}
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}", **(headers or {})}
        )


def sdk_chat(url: str, content: str, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    """One chat completion through the openai SDK; the raw reply (headers readable)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, default_headers=headers or {}, max_retries=0)
    with client:
        return client.chat.completions.with_raw_response.create(
            model="traced", messages=[{"role": "user", "content": content}], **extra
        )


@pytest.mark.feature("distributed-tracing", step=(1, 2, 4, 5, 6, 7))
def test_the_gateway_joins_the_callers_trace_and_propagates_it_to_the_upstream(run_traced: Any) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    traced = run_traced(lambda url: [post(url, "traced", {"traceparent": traceparent})])

    [reply] = traced.replies
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == CLIENT_TRACE  # no x-request-id sent: the trace id stands in
    spans = [s for s in traced.spans() if s.trace_id == CLIENT_TRACE]
    [server] = [s for s in spans if s.kind == SERVER]
    assert server.name == "POST /v1/chat/completions" and server.parent_span_id == CLIENT_SPAN
    assert server.attributes["http.response.status_code"] == 200
    [attempt] = [s for s in spans if s.kind == CLIENT]
    assert attempt.name == "chat mock-echo"
    assert attempt.attributes["gen_ai.system"] == "openai"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.response.id"] == reply.json()["id"]
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.attributes["server.address"] == "127.0.0.1" and attempt.attributes["server.port"] > 0
    assert server.resource["service.name"] == "acceptance-tracing"
    assert attempt.attributes["gen_ai.request.model"] == "mock-echo"
    assert attempt.attributes["gen_ai.response.model"] == "mock-echo"
    assert attempt.attributes["gen_ai.usage.input_tokens"] > 0
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert {"gateway.stage usage", "gateway.stage router"} <= {s.name for s in spans}
    [upstream] = traced.upstream_headers
    assert upstream["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"
    # The export carried the configured headers; no span carries the prompt or a credential.
    assert all(h.get("x-collector-token") == "tracing-test-token" for h, _ in traced.exports)
    text = json.dumps([s.attributes for s in spans])
    assert "trace me" not in text and "sk-upstream" not in text and KEY not in text


@pytest.mark.feature("distributed-tracing", step=(4, 5, 7))
def test_a_failover_shows_one_span_per_attempt_each_propagated(run_traced: Any) -> None:
    traced = run_traced(lambda url: [post(url, "traced-failover")])

    [reply] = traced.replies
    assert reply.status_code == 200 and reply.headers["x-gateway-attempts"] == "2"
    trace_id = reply.headers["x-request-id"]
    attempts = [s for s in traced.spans() if s.trace_id == trace_id and s.kind == CLIENT]
    by_number = {s.attributes["gateway.attempt"]: s for s in attempts}
    assert sorted(by_number) == [1, 2]
    failed, answered = by_number[1], by_number[2]
    assert failed.error and failed.attributes["gateway.provider"] == "bad"
    assert failed.attributes["http.response.status_code"] == 503 and failed.attributes["gateway.retryable"]
    assert not answered.error and answered.attributes["gateway.provider"] == "good"
    # version-trace id-parent id-flags: the flags of a trace the gateway started may mark its id random.
    sent = [h["traceparent"].split("-")[:3] for h in traced.upstream_headers]
    assert sent == [["00", trace_id, failed.span_id], ["00", trace_id, answered.span_id]]


@pytest.mark.feature("distributed-tracing", step=(5, 7))
def test_a_streamed_answer_is_traced_to_its_last_chunk(run_traced: Any) -> None:
    traced = run_traced(lambda url: [post(url, "traced", stream=True)])

    [reply] = traced.replies
    assert reply.status_code == 200 and reply.text.rstrip().endswith("data: [DONE]")
    trace_id = reply.headers["x-request-id"]
    [attempt] = [s for s in traced.spans() if s.trace_id == trace_id and s.kind == CLIENT]
    assert "gen_ai.first_token" in attempt.events
    assert attempt.attributes["gateway.stream.completed"] is True
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert traced.upstream_headers[0]["traceparent"].split("-")[1] == trace_id


@pytest.mark.feature("distributed-tracing", step=3)
def test_stage_spans_carry_what_their_stage_decided(run_traced: Any) -> None:
    traced = run_traced(lambda url: [post(url, "traced")])

    [reply] = traced.replies
    trace_id = reply.headers["x-request-id"]
    spans = {s.name: s for s in traced.spans() if s.trace_id == trace_id}
    limiter, router = spans["gateway.stage rate_limit"], spans["gateway.stage router"]
    remaining = reply.headers["x-ratelimit-remaining-requests"]
    assert limiter.attributes["gateway.header.x-ratelimit-remaining-requests"] == remaining == "99"
    assert router.attributes["gateway.header.x-gateway-attempts"] == "1"
    assert "gateway.header.x-gateway-attempts" not in limiter.attributes


@pytest.mark.feature("distributed-tracing", step=(7, 9))
@pytest.mark.parametrize("chosen_by", ["config", "environment"])
def test_spans_reach_an_otlp_grpc_receiver(run_traced: Any, chosen_by: str) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    if chosen_by == "config":
        tracing, env = EXPORT + ", protocol: grpc", {}
    else:
        tracing = "service_name: acceptance-tracing, headers: {x-collector-token: tracing-test-token}"
        env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "{collector}"}
    traced = run_traced(
        lambda url: [sdk_chat(url, "hello over grpc", {"traceparent": traceparent})],
        tracing=tracing,
        protocol="grpc",
        env=env,
    )

    [raw] = traced.replies
    assert raw.parse().choices[0].message.content  # the openai SDK got its answer
    spans = [s for s in traced.spans() if s.trace_id == CLIENT_TRACE]
    [server] = [s for s in spans if s.kind == SERVER]
    assert server.parent_span_id == CLIENT_SPAN and server.resource["service.name"] == "acceptance-tracing"
    [attempt] = [s for s in spans if s.kind == CLIENT]
    assert attempt.attributes["gen_ai.request.model"] == "mock-echo"
    assert traced.upstream_headers[0]["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"
    # The export headers travel as gRPC metadata.
    assert all(metadata.get("x-collector-token") == "tracing-test-token" for metadata, _ in traced.exports)


@pytest.mark.feature("distributed-tracing", step=10)
def test_the_standard_otel_variables_configure_what_the_file_leaves_out(run_traced: Any) -> None:
    env = {
        "OTEL_SERVICE_NAME": "from-the-environment",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{collector}/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20otel-secret-7c1e",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }

    def requests(url: str) -> list[Any]:
        with httpx.Client(base_url=url, timeout=30) as client:
            admin = client.get("/admin/config", headers={"Authorization": f"Bearer {MASTER}"})
        return [post(url, "traced"), admin]

    # The file names a sampler ratio of 0 for traces the gateway starts: the file wins over
    # OTEL_TRACES_SAMPLER, so only a caller's sampled trace is exported.
    traced = run_traced(requests, tracing="exporter: otlp, sample_ratio: 0.0", env=env)

    reply, admin = traced.replies
    assert reply.status_code == 200 and admin.status_code == 200
    assert not traced.spans()  # sampled out by the file's ratio (the environment's sampler lost)
    assert traced.upstream_headers[0]["traceparent"].split("-")[1] == reply.headers["x-request-id"]
    tracing = admin.json()["config"]["features"]["tracing"]
    assert tracing["service_name"] == "from-the-environment" and tracing["sample_ratio"] == 0.0
    assert tracing["headers"] == {"authorization": "***"} and "otel-secret" not in admin.text

    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    traced = run_traced(
        lambda url: [post(url, "traced", {"traceparent": traceparent})], tracing="exporter: otlp", env=env
    )
    spans = traced.spans()
    assert spans and {s.trace_id for s in spans} == {CLIENT_TRACE}
    assert {s.resource["service.name"] for s in spans} == {"from-the-environment"}
    assert {s.resource["deployment.environment"] for s in spans} == {"staging"}
    assert all(h.get("authorization") == "Bearer otel-secret-7c1e" for h, _ in traced.exports)


@pytest.mark.feature("distributed-tracing", step=10)
def test_otel_sdk_disabled_switches_tracing_off(run_traced: Any) -> None:
    traced = run_traced(lambda url: [post(url, "traced")], env={"OTEL_SDK_DISABLED": "true"})

    [reply] = traced.replies
    assert reply.status_code == 200
    assert not traced.exports and "traceparent" not in traced.upstream_headers[0]


@pytest.mark.feature("distributed-tracing", step=11)
def test_baggage_is_propagated_and_only_configured_entries_become_attributes(run_traced: Any) -> None:
    headers = {
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        "baggage": "tenant.id=acme-42,user.email=alice%40example.com",
    }
    traced = run_traced(
        lambda url: [sdk_chat(url, "baggage", headers)], tracing=EXPORT + ", baggage_attributes: [tenant.id]"
    )

    spans = [s for s in traced.spans() if s.trace_id == CLIENT_TRACE]
    [server] = [s for s in spans if s.kind == SERVER]
    [attempt] = [s for s in spans if s.kind == CLIENT]
    assert server.attributes["tenant.id"] == "acme-42" and attempt.attributes["tenant.id"] == "acme-42"
    assert "alice" not in json.dumps([s.attributes for s in spans])
    sent = traced.upstream_headers[0]["baggage"]
    assert "tenant.id=acme-42" in sent and "user.email=alice%40example.com" in sent


@pytest.mark.feature("distributed-tracing", step=12)
def test_content_is_exported_only_when_asked_redacted_and_cut(run_traced: Any) -> None:
    prompt = f"quote sk-upstream-good please {uuid.uuid4()} " + "filler " * 50

    quiet = run_traced(lambda url: [sdk_chat(url, prompt), sdk_chat(url, prompt, stream=True)])
    assert len([s for s in quiet.spans() if s.kind == CLIENT]) == 2
    exported = b"".join(request.SerializeToString() for _, request in quiet.exports)
    assert b"quote" not in exported and b"filler" not in exported

    captured = run_traced(
        lambda url: [sdk_chat(url, prompt)], tracing=EXPORT + ", capture_content: true, max_content_chars: 80"
    )
    [attempt] = [s for s in captured.spans() if s.kind == CLIENT]
    [message] = json.loads(attempt.attributes["gen_ai.input.messages"])
    text = message["parts"][0]["content"]
    assert message["role"] == "user" and text.startswith("quote [redacted] please ")
    assert len(text) == 81 and text.endswith("…") and attempt.attributes["gateway.content.truncated"]
    [answer] = json.loads(attempt.attributes["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert "sk-upstream-good" not in json.dumps(attempt.attributes)


@pytest.mark.feature("distributed-tracing", step=13)
def test_the_access_log_line_names_the_trace_and_span(
    run_traced: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        traced = run_traced(lambda url: [sdk_chat(url, "log me", {"x-request-id": "log-correlation-1"})])

    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    [record] = [r for r in records if r["request_id"] == "log-correlation-1"]
    [server] = [s for s in traced.spans() if s.kind == SERVER and s.trace_id == record["trace_id"]]
    assert record["span_id"] == server.span_id
