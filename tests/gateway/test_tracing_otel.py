"""Tracing's standard settings and opt-in data: OTEL_* environment variables and their precedence, the
OTLP protocol choice, W3C baggage in and out, content capture (off by default, redacted, cut), the
GenAI attributes of upstream spans, stage attributes, log correlation and /admin/config redaction."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from gateway_testing import KEY, auth, chat
from opentelemetry.sdk.trace import ReadableSpan
from test_tracing import CLIENT_TRACE, TRACEPARENT, all_attribute_text, by_name, config, traced

from gateway.config import ConfigError, parse_config
from gateway.features.tracing_config import TracingConfig, with_environment

pytestmark = pytest.mark.anyio

CAPTURE = "features: {tracing: {exporter: none, capture_content: true, max_content_chars: 60}}"


def attempt_span(spans: tuple[ReadableSpan, ...]) -> dict[str, Any]:
    [attempt] = by_name(spans, "chat mock-echo")
    return dict(attempt.attributes or {})


# -- OTEL_* environment ------------------------------------------------------------------------------


def test_the_environment_fills_what_the_file_leaves_out() -> None:
    environ = {
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%3D%3D,Team = blue ",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_TRACES_EXPORTER": "console",
    }
    settings = TracingConfig.model_validate(with_environment({}, environ))
    assert settings.service_name == "from-env" and settings.protocol == "grpc"
    assert settings.endpoint == "http://collector:4317" and settings.exporter == "console"
    assert settings.headers == {"x-api-key": "abc==", "team": "blue"} and settings.sample_ratio == 0.25


def test_a_key_in_the_file_wins_over_the_environment_and_the_traces_variable_over_the_general_one() -> None:
    environ = {
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
        "OTEL_TRACES_SAMPLER": "always_off",
    }
    settings = TracingConfig.model_validate(with_environment({"service_name": "from-file"}, environ))
    assert settings.service_name == "from-file"
    assert settings.traces_url() == "http://traces:4318/v1/traces" and settings.sample_ratio == 0.0
    file_ratio = TracingConfig.model_validate(with_environment({"sample_ratio": 0.5}, environ))
    assert file_ratio.sample_ratio == 0.5


def test_otel_sdk_disabled_turns_tracing_off_even_when_the_file_enables_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    cfg = config("features: {tracing: {enabled: true, exporter: none}}")
    assert cfg.features.tracing is not None and cfg.features.tracing.enabled is False


async def test_the_environment_is_read_when_the_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    async with traced(config("features: {tracing: {exporter: none}}")) as (client, _, exporter):
        await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())
    assert exporter is not None
    [server] = by_name(exporter.get_finished_spans(), "POST /v1/chat/completions")
    assert server.resource.attributes["service.name"] == "svc-from-env"
    assert server.resource.attributes["deployment.environment"] == "staging"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign-secret-9f8e"),
    ],
)
def test_a_bad_variable_is_named_and_its_value_is_not_echoed_for_headers(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        config("features: {tracing: {enabled: true}}")
    text = str(caught.value)
    assert "features.tracing" in text and variable in text
    assert "secret-9f8e" not in text


def test_the_default_endpoint_follows_the_protocol() -> None:
    assert TracingConfig(protocol="grpc").endpoint == "http://localhost:4317"
    assert TracingConfig().endpoint == "http://localhost:4318"
    assert (
        TracingConfig(endpoint="https://c.example:4317/", protocol="grpc").endpoint
        == "https://c.example:4317"
    )


# -- baggage -----------------------------------------------------------------------------------------


async def test_baggage_reaches_the_upstream_and_only_the_configured_entries_become_attributes() -> None:
    setting = "features: {tracing: {exporter: none, baggage_attributes: [tenant.id]}}"
    baggage = "tenant.id=acme,user.email=alice%40example.com"
    async with traced(config(setting)) as (client, upstream, exporter):
        response = await client.post(
            "/v1/chat/completions",
            json=chat(model="solo"),
            headers={**auth(), "traceparent": TRACEPARENT, "baggage": baggage},
        )
    assert response.status_code == 200 and exporter is not None
    spans = exporter.get_finished_spans()
    [server] = by_name(spans, "POST /v1/chat/completions")
    assert (server.attributes or {})["tenant.id"] == "acme"
    assert attempt_span(spans)["tenant.id"] == "acme"
    assert "alice" not in all_attribute_text(spans)
    sent = upstream.requests[0].headers["baggage"]
    assert "tenant.id=acme" in sent and "user.email=alice%40example.com" in sent


async def test_no_baggage_attributes_unless_configured() -> None:
    async with traced(config()) as (client, upstream, exporter):
        await client.post(
            "/v1/chat/completions", json=chat(model="solo"), headers={**auth(), "baggage": "tenant.id=acme"}
        )
    assert exporter is not None
    assert "acme" not in all_attribute_text(exporter.get_finished_spans())
    assert upstream.requests[0].headers["baggage"] == "tenant.id=acme"


# -- content capture ---------------------------------------------------------------------------------


async def test_content_is_not_captured_by_default() -> None:
    async with traced(config()) as (client, _, exporter):
        await client.post(
            "/v1/chat/completions", json=chat("private words 51c2", model="solo"), headers=auth()
        )
        await client.post(
            "/v1/chat/completions", json=chat("private words 51c2", model="solo", stream=True), headers=auth()
        )
    assert exporter is not None
    spans = exporter.get_finished_spans()
    assert len(by_name(spans, "chat mock-echo")) == 2
    assert "51c2" not in all_attribute_text(spans)
    assert not [s for s in spans if "gen_ai.input.messages" in (s.attributes or {})]


async def test_captured_content_is_the_semconv_messages_redacted() -> None:
    prompt = f"key sk-up-secret-2 and {KEY} ok"
    async with traced(config(CAPTURE)) as (client, _, exporter):
        response = await client.post("/v1/chat/completions", json=chat(prompt, model="solo"), headers=auth())
    assert response.status_code == 200 and exporter is not None
    attributes = attempt_span(exporter.get_finished_spans())
    [message] = json.loads(attributes["gen_ai.input.messages"])
    assert message == {
        "role": "user",
        "parts": [{"type": "text", "content": "key [redacted] and [redacted] ok"}],
    }
    [answer] = json.loads(attributes["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert "[redacted]" in answer["parts"][0]["content"]
    text = all_attribute_text(exporter.get_finished_spans())
    assert "sk-up-secret" not in text and KEY not in text
    assert "gateway.content.truncated" not in attributes


async def test_captured_content_is_cut_to_the_configured_size_streams_included() -> None:
    long = "word " * 100
    async with traced(config(CAPTURE)) as (client, _, exporter):
        await client.post("/v1/chat/completions", json=chat(long, model="solo", stream=True), headers=auth())
    assert exporter is not None
    attributes = attempt_span(exporter.get_finished_spans())
    [message] = json.loads(attributes["gen_ai.input.messages"])
    assert message["parts"][0]["content"] == long[:60] + "…"
    [answer] = json.loads(attributes["gen_ai.output.messages"])
    assert len(answer["parts"][0]["content"]) == 61 and answer["finish_reason"] == "stop"
    assert attributes["gateway.content.truncated"] is True


def test_tool_calls_and_images_keep_their_shape_not_their_data() -> None:
    from gateway.features.tracing_content import Budget, input_messages
    from gateway.redact import Redactor

    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    rendered = json.loads(input_messages(messages, Budget(Redactor(()), 100)))
    assert rendered == [
        {"role": "user", "parts": [{"type": "text", "content": "look"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": '{"a":1}'}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "result": "42"}]},
    ]


# -- GenAI attributes, stage attributes, log correlation, /admin/config --------------------------------


async def test_attempt_spans_carry_the_current_genai_names() -> None:
    async with traced(config()) as (client, _, exporter):
        response = await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())
    assert exporter is not None
    attributes = attempt_span(exporter.get_finished_spans())
    assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.response.id"] == response.json()["id"]
    assert attributes["server.address"] == "good.test" and attributes["server.port"] == 443


async def test_stage_spans_carry_the_headers_their_stage_set() -> None:
    cfg = config("features: {tracing: {exporter: none}, rate_limit: {}}", key_extra=", rpm: 5")
    async with traced(cfg) as (client, _, exporter):
        await client.post("/v1/chat/completions", json=chat(model="solo"), headers=auth())
    assert exporter is not None
    spans = exporter.get_finished_spans()
    [limiter] = by_name(spans, "gateway.stage rate_limit")
    assert (limiter.attributes or {})["gateway.header.x-ratelimit-remaining-requests"] == "4"
    [router] = by_name(spans, "gateway.stage router")
    assert (router.attributes or {})["gateway.header.x-gateway-attempts"] == "1"
    assert "gateway.header.x-gateway-attempts" not in (limiter.attributes or {})


async def test_the_access_log_carries_the_span_id_of_the_server_span(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with traced(config()) as (client, _, exporter):
            await client.post(
                "/v1/chat/completions",
                json=chat(model="solo"),
                headers={**auth(), "traceparent": TRACEPARENT},
            )
    assert exporter is not None
    [server] = by_name(exporter.get_finished_spans(), "POST /v1/chat/completions")
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert record["trace_id"] == CLIENT_TRACE and record["span_id"] == f"{server.context.span_id:016x}"


async def test_admin_config_hides_every_tracing_header_value() -> None:
    from gateway_testing import MASTER_KEY

    cfg = parse_config(
        f"""
auth: {{master_key: {MASTER_KEY}, keys: [{{name: alice, key: {KEY}}}]}}
features: {{tracing: {{exporter: none, headers: {{x-team: blue1, dd-api: abc}}}}}}
usage: {{database: ":memory:"}}
"""
    )
    async with traced(cfg) as (client, _, _exporter):
        reply = await client.get("/admin/config", headers=auth(MASTER_KEY))
    assert reply.status_code == 200
    assert reply.json()["config"]["features"]["tracing"]["headers"] == {"x-team": "***", "dd-api": "***"}


# -- the exporter per protocol -----------------------------------------------------------------------


def test_the_protocol_picks_the_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    from gateway.features.tracing import Tracing

    for protocol, kind in (("grpc", GrpcExporter), ("http/protobuf", HttpExporter)):
        tracing = Tracing(TracingConfig(protocol=protocol, endpoint="http://127.0.0.1:9"))
        try:
            [processor] = tracing.provider._active_span_processor._span_processors
            assert isinstance(processor.span_exporter, kind)  # type: ignore[attr-defined]
        finally:
            tracing.provider.shutdown()


def test_grpc_without_its_exporter_installed_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name.startswith("opentelemetry.exporter.otlp.proto.grpc") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError) as caught:
        config("features: {tracing: {protocol: grpc}}")
    assert "features.tracing" in str(caught.value) and "llm-gateway-planner[tracing]" in str(caught.value)
    assert config("features: {tracing: {exporter: none, protocol: grpc}}").features.tracing is not None
