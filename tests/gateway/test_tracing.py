"""Distributed tracing with the SDK's in-memory exporter: span tree, attributes, traceparent in and out,
one span per upstream attempt, streams, refusals, the access log, and no spans when tracing is off."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from gateway_testing import KEY, auth, chat, sse_chunks
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig, load_config, parse_config
from gateway.features.ratelimit import RateLimitStage
from gateway.features.routing import RoutingStage
from gateway.features.tracing import stage_name
from gateway.mock_upstream import MockUpstream

pytestmark = pytest.mark.anyio

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
TRACING_ON = "features: {tracing: {exporter: none, service_name: gw-test}, routing: {max_attempts: 1}}"


def config(tracing: str = TRACING_ON, *, key_extra: str = "") -> GatewayConfig:
    """Model echo: route ``bad`` (always 503), then its fallback solo: route ``good``."""
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}{key_extra}}}]
providers:
  - {{name: bad, type: openai, base_url: "https://bad.test/v1", api_key: sk-up-secret-1}}
  - {{name: good, type: openai, base_url: "https://good.test/v1", api_key: sk-up-secret-2}}
models:
  - name: echo
    routes: [{{provider: bad, model: mock-echo}}]
    fallbacks: [solo]
  - name: solo
    routes: [{{provider: good, model: mock-echo}}]
usage: {{database: ":memory:"}}
{tracing}
"""
    )


class Upstream(httpx.AsyncBaseTransport):
    """The mock upstream in process; records every request; ``bad.test`` answers 503."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.mock = httpx.ASGITransport(app=MockUpstream())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "bad.test":
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return await self.mock.handle_async_request(request)


@asynccontextmanager
async def traced(
    cfg: GatewayConfig,
) -> AsyncIterator[tuple[httpx.AsyncClient, Upstream, InMemorySpanExporter | None]]:
    upstream = Upstream()
    app = create_app(cfg, transport=upstream)
    tracing = app.state.gateway.runtime.tracing
    exporter = None
    if tracing is not None:
        exporter = InMemorySpanExporter()
        tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client, upstream, exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def all_attribute_text(spans: tuple[ReadableSpan, ...]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str) + json.dumps(
        [dict(e.attributes or {}) for s in spans for e in s.events], default=str
    )


async def test_span_tree_joins_the_callers_trace_and_propagates_to_the_upstream() -> None:
    async with traced(config()) as (client, upstream, exporter):
        response = await client.post(
            "/v1/chat/completions",
            json=chat("a secret prompt 7f3a", model="solo"),
            headers={**auth(), "traceparent": TRACEPARENT, "tracestate": "vendor=x"},
        )
    assert response.status_code == 200
    assert exporter is not None
    spans = exporter.get_finished_spans()
    [server] = by_name(spans, "POST /v1/chat/completions")
    assert server.kind == SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == CLIENT_TRACE
    assert parent_id(server) == int(CLIENT_SPAN, 16) and server.parent is not None and server.parent.is_remote
    assert server.resource.attributes["service.name"] == "gw-test"
    attrs = server.attributes or {}
    assert attrs["http.response.status_code"] == 200 and attrs["gen_ai.request.model"] == "solo"
    assert attrs["gateway.route"] == "good/mock-echo" and attrs["gateway.attempts"] == 1
    # The stages nest in chain order under the server span; the attempt under the router.
    usage_span, router = by_name(spans, "gateway.stage usage")[0], by_name(spans, "gateway.stage router")[0]
    assert parent_id(usage_span) == server.context.span_id
    assert router.context.trace_id == server.context.trace_id
    [attempt] = by_name(spans, "chat mock-echo")
    assert attempt.kind == SpanKind.CLIENT and parent_id(attempt) == router.context.span_id
    a = attempt.attributes or {}
    assert a["gen_ai.system"] == "openai" and a["gen_ai.request.model"] == "mock-echo"
    assert a["gen_ai.response.model"] == "mock-echo" and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gateway.attempt"] == 1 and a["gen_ai.response.finish_reasons"] == ("stop",)
    # The upstream saw the attempt span as its parent, in the caller's trace, with the caller's tracestate.
    [sent] = upstream.requests
    assert sent.headers["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.context.span_id:016x}-01"
    assert sent.headers["tracestate"] == "vendor=x"
    # Nothing of the prompt, the completion or a credential is in an attribute.
    text = all_attribute_text(spans)
    assert "7f3a" not in text and "sk-up-secret" not in text and KEY not in text


async def test_without_a_traceparent_the_trace_is_new_and_the_request_id_is_its_id() -> None:
    async with traced(config()) as (client, upstream, exporter):
        response = await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())
    assert exporter is not None
    [server] = by_name(exporter.get_finished_spans(), "POST /v1/chat/completions")
    assert server.parent is None
    trace_id = format(server.context.trace_id, "032x")
    assert response.headers["x-request-id"] == trace_id
    assert upstream.requests[0].headers["traceparent"].split("-")[1] == trace_id


async def test_a_retry_makes_one_span_per_attempt_each_propagated() -> None:
    async with traced(config()) as (client, upstream, exporter):
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 200 and response.headers["x-gateway-attempts"] == "2"
    assert exporter is not None
    attempts = sorted(
        by_name(exporter.get_finished_spans(), "chat mock-echo"), key=lambda s: s.start_time or 0
    )
    assert [(s.attributes or {})["gateway.attempt"] for s in attempts] == [1, 2]
    failed, ok = attempts
    f = failed.attributes or {}
    assert f["gateway.provider"] == "bad" and f["http.response.status_code"] == 503 and f["gateway.retryable"]
    assert failed.status.status_code == StatusCode.ERROR
    assert (ok.attributes or {})["gateway.provider"] == "good" and ok.status.status_code != StatusCode.ERROR
    sent = [r.headers["traceparent"].split("-")[2] for r in upstream.requests]
    assert sent == [f"{failed.context.span_id:016x}", f"{ok.context.span_id:016x}"]


async def test_the_attempt_span_of_a_stream_ends_with_the_stream() -> None:
    async with traced(config()) as (client, _, exporter):
        response = await client.post(
            "/v1/chat/completions", json=chat("stream me", model="solo", stream=True), headers=auth()
        )
        chunks = sse_chunks(response.text)
    assert chunks[-1] == "[DONE]"
    assert exporter is not None
    spans = exporter.get_finished_spans()
    [attempt] = by_name(spans, "chat mock-echo")
    [server] = by_name(spans, "POST /v1/chat/completions")
    a = attempt.attributes or {}
    # Known only once the last chunk went by: the span ended at the end of the stream, not at its start.
    assert a["gateway.stream.completed"] is True and a["gen_ai.usage.output_tokens"] > 0
    assert [e.name for e in attempt.events] == ["gen_ai.first_token"]
    assert attempt.end_time is not None and server.end_time is not None
    assert attempt.events[0].timestamp <= attempt.end_time <= server.end_time


async def test_a_rate_limit_refusal_is_an_event_on_the_refusing_stage() -> None:
    cfg = config("features: {tracing: {exporter: none}, rate_limit: {}}", key_extra=", rpm: 1")
    async with traced(cfg) as (client, upstream, exporter):
        assert (await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())).is_success
        refused = await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())
    assert refused.status_code == 429 and len(upstream.requests) == 1
    assert exporter is not None
    spans = exporter.get_finished_spans()
    limiter = [s for s in by_name(spans, "gateway.stage rate_limit") if s.events]
    [span] = limiter
    [event] = span.events
    assert event.name == "gateway.refusal" and (event.attributes or {})["http.response.status_code"] == 429
    assert span.status.status_code == StatusCode.ERROR
    # Marked once: the stages around it let the error through without a second event.
    assert not [s for s in by_name(spans, "gateway.stage usage") if s.events]


async def test_the_access_log_carries_the_trace_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with traced(config()) as (client, _, _exporter):
            await client.post(
                "/v1/chat/completions",
                json=chat(model="solo"),
                headers={**auth(), "traceparent": TRACEPARENT, "x-request-id": "my-id-1"},
            )
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert record["request_id"] == "my-id-1" and record["trace_id"] == CLIENT_TRACE


@pytest.mark.parametrize("setting", ["", "features: {tracing: {enabled: false}}"])
async def test_tracing_off_makes_no_tracer_and_sends_no_traceparent(setting: str) -> None:
    async with traced(config(setting)) as (client, upstream, exporter):
        response = await client.post(
            "/v1/chat/completions", json=chat(model="solo"), headers={**auth(), "traceparent": TRACEPARENT}
        )
    assert response.status_code == 200 and exporter is None
    assert "traceparent" not in upstream.requests[0].headers
    assert len(response.headers["x-request-id"]) == 32


def test_bad_tracing_settings_name_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config("features: {tracing: {exporter: zipkin, endpoint: 'localhost:4318', sample_ratio: 2}}")
    text = str(caught.value)
    assert "features.tracing.exporter" in text
    assert "features.tracing.endpoint" in text and "features.tracing.sample_ratio" in text


def test_stage_names() -> None:
    assert stage_name(object.__new__(RateLimitStage)) == "rate_limit"
    assert stage_name(object.__new__(RoutingStage)) == "router"


def test_otlp_endpoint_gets_the_traces_path() -> None:
    from gateway.features.tracing_config import TracingConfig

    assert TracingConfig(endpoint="http://127.0.0.1:4318/").traces_url() == "http://127.0.0.1:4318/v1/traces"
    assert TracingConfig(endpoint="http://c:4318/v1/traces").traces_url() == "http://c:4318/v1/traces"


async def test_a_stream_the_client_abandons_ends_its_span_as_cancelled() -> None:
    from gateway.config import RouteConfig
    from gateway.features.tracing import Tracing
    from gateway.features.tracing_config import TracingConfig
    from gateway.pipeline import Call, KeyIdentity, Stream

    async def chunks() -> AsyncIterator[dict[str, object]]:
        for i in range(5):
            yield {"model": "up-model", "choices": [{"delta": {"content": str(i)}}]}

    async def send(call: Call, route: RouteConfig, provider: object) -> Stream:
        return Stream(chunks())

    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(exporter="none"))
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))  # exported the moment it ends
    key = KeyIdentity(name="k", key_id="kid")
    call = Call("r1", key, "chat", "alias", None, {}, {}, stream=True)  # type: ignore[arg-type]
    stream = await tracing.attempt(call, RouteConfig(provider="p", model="m"), object(), send)
    assert isinstance(stream, Stream)
    first = await anext(aiter(stream))
    assert first["model"] == "up-model"
    assert not exporter.get_finished_spans()  # still streaming: the span is open
    await stream.aclose()
    await tracing.shutdown()
    [span] = exporter.get_finished_spans()
    attributes = span.attributes or {}
    assert attributes["gateway.stream.cancelled"] is True and attributes["gateway.stream.completed"] is False
    assert attributes["gen_ai.response.model"] == "up-model"


async def test_a_reload_switches_tracing_on_and_flushes_the_old_tracer(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    master = "sk-test-master-tracing"
    base = f"""
auth:
  master_key: {master}
  keys: [{{name: alice, key: {KEY}}}]
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock, model: mock-echo}}]}}]
usage: {{database: ":memory:"}}
"""
    path.write_text(base)
    app = create_app(load_config(path), config_path=path)
    gateway = app.state.gateway
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        assert gateway.runtime.tracing is None
        path.write_text(base + "features: {tracing: {exporter: none}}\n")
        reply = await client.post("/admin/reload", headers=auth(master))
        assert reply.status_code == 200, reply.text
        tracing = gateway.runtime.tracing
        assert tracing is not None
        exporter = InMemorySpanExporter()
        tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert response.status_code == 200
        [server] = by_name(exporter.get_finished_spans(), "POST /v1/chat/completions")
        assert format(server.context.trace_id, "032x") == response.headers["x-request-id"]
    # Closing the gateway shut the tracer down: nothing more is exported.
    assert exporter._stopped  # the SDK exposes no public "is shut down"


async def test_a_provider_can_keep_the_trace_context_to_itself() -> None:
    cfg = config().model_copy(deep=True)
    for provider in cfg.providers:
        provider.propagate_trace = False
    async with traced(cfg) as (client, upstream, exporter):
        response = await client.post(
            "/v1/chat/completions", json=chat(model="solo"), headers={**auth(), "traceparent": TRACEPARENT}
        )
    assert response.status_code == 200 and exporter is not None
    assert by_name(exporter.get_finished_spans(), "chat mock-echo")  # still traced, just not propagated
    assert "traceparent" not in upstream.requests[0].headers
    assert "tracestate" not in upstream.requests[0].headers


def test_exporter_header_values_are_redacted_secrets() -> None:
    from gateway.redact import Redactor

    cfg = config("features: {tracing: {exporter: none, headers: {x-honeycomb-team: hny-secret-4d2a9c}}}")
    assert "hny-secret-4d2a9c" not in Redactor.from_config(cfg).text("upstream said hny-secret-4d2a9c")


async def test_a_sampled_out_trace_exports_nothing_but_still_propagates() -> None:
    async with traced(config("features: {tracing: {exporter: none, sample_ratio: 0}}")) as (
        client,
        upstream,
        exporter,
    ):
        response = await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())
        sampled = await client.post(
            "/v1/chat/completions", json=chat(model="solo"), headers={**auth(), "traceparent": TRACEPARENT}
        )
    assert response.status_code == 200 and sampled.status_code == 200 and exporter is not None
    # The gateway's own trace is sampled out; the caller's sampled flag is followed.
    assert {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()} == {CLIENT_TRACE}
    _, trace_id, _, flags = upstream.requests[0].headers["traceparent"].split("-")
    assert trace_id == response.headers["x-request-id"] and int(flags, 16) & 1 == 0
