"""OpenTelemetry spans for requests, pipeline stages and upstream attempts (``features.tracing``).

Imported only when a config enables tracing (:func:`gateway.features.tracing_config.build_tracing`), so a
gateway without the ``tracing`` extra never loads the SDK. One :class:`Tracing` per runtime owns its own
``TracerProvider`` (the global provider is never set, so apps side by side never share spans) and is shut
down, flushing queued spans, when the runtime closes.

The span tree of one request::

    POST /v1/chat/completions            SERVER, parent from the client's traceparent when sent
    └── gateway.stage usage              one per stage, nested in chain order
        └── gateway.stage rate_limit     a refusal is an event ``gateway.refusal`` + ERROR status here
            └── gateway.stage router
                ├── chat gpt-4o-mini     CLIENT, one per upstream attempt (gen_ai.* attributes)
                └── chat gpt-4o-mini     ends when its stream ends, with a ``gen_ai.first_token`` event

Attributes hold ids, names, counts and statuses only: never a key or a header, and a prompt or a
completion only when ``capture_content`` asks (redacted and cut: gateway/features/tracing_content.py).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.config import RouteConfig
from gateway.errors import GatewayError
from gateway.features import tracing_content as content
from gateway.features.tracing_config import SCRATCH_KEY, TracingConfig
from gateway.pipeline import Call, Handler, Response, Result, Stage, Stream
from gateway.redact import Redactor

Attempt = Callable[[Call, RouteConfig, Any], Awaitable[Result]]
# The call's scratch key under which the innermost stage span that saw an error marks it as recorded.
_RECORDED = "tracing.recorded_error"
_PROPAGATED = (b"traceparent", b"tracestate", b"baggage")
# gen_ai.provider.name (GenAI semantic conventions 1.37+) where the well-known value differs from the type.
_PROVIDER_NAMES = {"azure": "azure.ai.openai"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Tracing:
    """The tracer of one runtime: spans for requests, stages and attempts, and W3C context propagation."""

    def __init__(self, config: TracingConfig, redactor: Redactor | None = None) -> None:
        self.config = config
        # Captured content is redacted of the config's credentials; built without one, of none known.
        self.redactor = redactor if redactor is not None else Redactor(())
        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the attributes given here win over it.
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name, "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        if config.baggage_attributes:
            self.provider.add_span_processor(BaggageAttributes(config.baggage_attributes))
        exporter = _exporter(config)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("gateway", __version__)
        self.propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])

    # -- the server span ------------------------------------------------------------------------------
    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` for one HTTP request inside its SERVER span, which ends after the last body byte."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _PROPAGATED
        }
        parent = self.propagator.extract(carrier) if carrier else None
        method = scope["method"]
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # The caller's context made current, not just the span's parent: its baggage then reaches every
        # span the request makes and every upstream it calls.
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with self.tracer.start_as_current_span(
                method,
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
                record_exception=False,
            ) as span:
                state: dict[str, Any] = scope.setdefault("state", {})
                span_context = span.get_span_context()
                if span_context.is_valid:
                    # Read by GatewayMiddleware: the access log line and a generated x-request-id carry them.
                    state["trace_id"] = trace.format_trace_id(span_context.trace_id)
                    state["span_id"] = trace.format_span_id(span_context.span_id)
                try:
                    await app(scope, receive, send_status)
                finally:
                    _finish_server_span(span, scope, state, status)
        finally:
            if token is not None:
                otel_context.detach(token)

    # -- stage spans ----------------------------------------------------------------------------------
    def wrap(self, stages: list[Stage]) -> list[Stage]:
        """``stages`` each wrapped in a span (the chain is bound from these; hooks stay on the originals)."""
        return [TracedStage(stage, self) for stage in stages]

    def record_error(self, span: Span, call: Call, error: GatewayError) -> None:
        """Mark ``error`` on ``span`` once per call: on the innermost span it passed through."""
        if call.scratch.get(_RECORDED) is error:
            return
        call.scratch[_RECORDED] = error
        code = error.code or error.type
        name = "gateway.refusal" if error.status < 500 else "gateway.error"
        span.add_event(name, {"http.response.status_code": error.status, "error.type": code})
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, code))

    # -- upstream attempt spans -----------------------------------------------------------------------
    async def attempt(self, call: Call, route: RouteConfig, provider: Any, send: Attempt) -> Result:
        """Run one upstream attempt inside a CLIENT span (current while sending, so it is propagated)."""
        model = route.model or call.model
        operation = "embeddings" if call.endpoint == "embeddings" else "chat"
        provider_config = getattr(provider, "config", None)
        provider_type = getattr(provider_config, "type", None) or route.provider
        span = self.tracer.start_span(
            f"{operation} {model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": _PROVIDER_NAMES.get(provider_type, provider_type),
                # The name before semantic conventions 1.37, still read by many backends.
                "gen_ai.system": provider_type,
                "gen_ai.request.model": model,
                **_server_attributes(getattr(provider_config, "base_url", None)),
                "gateway.model": call.model,
                "gateway.provider": route.provider,
                "gateway.route": f"{route.provider}/{model}",
                "gateway.attempt": call.attempts,
                "gateway.stream": call.stream,
            },
        )
        capture = self.config.capture_content and operation == "chat" and span.is_recording()
        if capture:
            self.capture(
                span, content.INPUT, lambda budget: content.input_messages(call.body.get("messages"), budget)
            )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await send(call, route, provider)
        except GatewayError as error:
            _attempt_failed(span, error)
            span.end()
            raise
        except BaseException as error:  # cancelled: the client went away, or the router's deadline
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        if isinstance(result, Stream):
            stream = result

            output = content.StreamedOutput(self.config.max_content_chars) if capture else None

            def traced(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
                return _traced_stream(self, span, stream, chunks, output)

            return stream.pipe(traced)
        body = result.body if isinstance(result, Response) else {}
        _response_attributes(span, body)
        if capture:
            self.capture(
                span, content.OUTPUT, lambda budget: content.output_messages(body.get("choices"), budget)
            )
        span.end()
        return result

    def capture(self, span: Span, attribute: str, render: Callable[[content.Budget], str]) -> None:
        """Set a content attribute rendered within this config's redaction and size budget."""
        budget = content.Budget(self.redactor, self.config.max_content_chars)
        span.set_attribute(attribute, render(budget))
        if budget.truncated:
            span.set_attribute(content.TRUNCATED, True)

    def inject(self, headers: dict[str, str]) -> None:
        """Add the current context's ``traceparent`` (``tracestate``, ``baggage``) to upstream headers."""
        self.propagator.inject(headers)

    async def shutdown(self) -> None:
        """Flush queued spans and stop exporting (off the event loop: the exporter blocks)."""
        await asyncio.to_thread(self.provider.shutdown)


class BaggageAttributes(SpanProcessor):
    """Copies the configured W3C ``baggage`` entries onto every span started in their context.

    Only the names ``features.tracing.baggage_attributes`` lists: baggage is the caller's free-form data
    (it may hold a user id or worse), so nothing is recorded that the operator did not ask for.
    """

    def __init__(self, keys: list[str]) -> None:
        self.keys = tuple(keys)

    def on_start(self, span: SdkSpan, parent_context: otel_context.Context | None = None) -> None:
        """Set ``<key>`` = the entry's value for each configured key the context's baggage holds."""
        entries = otel_baggage.get_all(parent_context)
        for key in self.keys:
            value = entries.get(key)
            if value is not None:
                span.set_attribute(key, str(value))


class TracedStage:
    """A stage run inside a ``gateway.stage <name>`` span; the chain's only per-stage tracing code."""

    __slots__ = ("name", "stage", "tracing")

    def __init__(self, stage: Stage, tracing: Tracing) -> None:
        self.stage = stage
        self.tracing = tracing
        self.name = stage_name(stage)

    async def handle(self, call: Call, next: Handler) -> Result:
        """Run the wrapped stage in a span; errors it raises or lets through are marked once."""
        # The router's attempts and the providers' header injection find the tracer here.
        call.scratch[SCRATCH_KEY] = self.tracing
        with self.tracing.tracer.start_as_current_span(
            f"gateway.stage {self.name}",
            attributes={"gateway.stage": self.name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            # The response headers this stage sets (x-ratelimit-remaining-requests, x-gateway-cache...)
            # become its span's attributes: what it set before passing the call on, and after the inner
            # stages answered; what the inner stages set is theirs.
            seen = dict(call.response_headers)

            async def inner(call: Call) -> Result:
                _header_attributes(span, seen, call.response_headers)
                try:
                    return await next(call)
                finally:
                    seen.clear()
                    seen.update(call.response_headers)

            try:
                return await self.stage.handle(call, inner)
            except GatewayError as error:
                self.tracing.record_error(span, call, error)
                raise
            finally:
                _header_attributes(span, seen, call.response_headers)


def stage_name(stage: object) -> str:
    """``RateLimitStage`` -> ``rate_limit``; a stage may name itself with a ``name`` attribute."""
    name = getattr(stage, "name", None)
    if isinstance(name, str) and name:
        return name
    base = type(stage).__name__.removesuffix("Stage") or type(stage).__name__
    base = {"Routing": "Router"}.get(base, base)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


def _header_attributes(span: Span, seen: dict[str, str], headers: dict[str, str]) -> None:
    """``gateway.header.<name>`` for each response header set or changed since ``seen``."""
    for name, value in headers.items():
        if seen.get(name) != value:
            span.set_attribute(f"gateway.header.{name}", value)
    seen.clear()
    seen.update(headers)


def _server_attributes(base_url: str | None) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of the upstream (none for the in-process mock)."""
    if not base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return {}
    if not parts.hostname:
        return {}
    return {"server.address": parts.hostname, **({"server.port": port} if port else {})}


def _exporter(config: TracingConfig) -> SpanExporter | None:
    # An explicit (possibly empty) headers dict: the exporters would otherwise read OTEL_* themselves,
    # and the config (which has already merged the environment) is the one source of settings.
    if config.exporter == "otlp" and config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        # http:// is a plaintext channel, https:// TLS with the system's roots.
        secure = config.endpoint.startswith("https://")
        return GrpcExporter(endpoint=config.endpoint, insecure=not secure, headers=dict(config.headers))
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.traces_url(), headers=dict(config.headers))
    if config.exporter == "console":
        return ConsoleSpanExporter(formatter=_one_line)
    return None


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + os.linesep


def _finish_server_span(span: Span, scope: Scope, state: dict[str, Any], status: int) -> None:
    # A 404's path is whatever the client typed: keep it out of the span name (cardinality).
    if status != 404:
        span.update_name(f"{scope['method']} {scope['path']}")
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500 or status == 0:
        span.set_status(Status(StatusCode.ERROR, str(status) if status else "no response"))
    span.set_attribute("gateway.request_id", state.get("request_id", ""))
    call = state.get("call")
    if call is None:
        return
    span.set_attribute("gen_ai.request.model", call.model)
    span.set_attribute("gateway.key_id", call.key.key_id)
    span.set_attribute("gateway.attempts", call.attempts)
    for header, attribute in (("x-gateway-cache", "gateway.cache"), ("x-gateway-route", "gateway.route")):
        value = call.response_headers.get(header)
        if value is not None:
            span.set_attribute(attribute, value)


def _attempt_failed(span: Span, error: GatewayError) -> None:
    code = error.code or error.type
    span.set_attribute("http.response.status_code", error.status)
    span.set_attribute("error.type", code)
    # The router retries upstream rate limits and faults, never client errors (features/routing.py).
    span.set_attribute("gateway.retryable", error.status == 429 or error.status >= 500)
    span.set_status(Status(StatusCode.ERROR, code))


def _response_attributes(span: Span, body: dict[str, Any]) -> None:
    model = body.get("model")
    if isinstance(model, str):
        span.set_attribute("gen_ai.response.model", model)
    if isinstance(body.get("id"), str):
        span.set_attribute("gen_ai.response.id", body["id"])
    _usage_attributes(span, body.get("usage"))
    reasons = [c.get("finish_reason") for c in body.get("choices") or () if isinstance(c, dict)]
    if any(isinstance(r, str) for r in reasons):
        span.set_attribute("gen_ai.response.finish_reasons", [r for r in reasons if isinstance(r, str)])


def _usage_attributes(span: Span, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    for key, attribute in (
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
    ):
        value = usage.get(key)
        if isinstance(value, int):
            span.set_attribute(attribute, value)


async def _traced_stream(
    tracing: Tracing,
    span: Span,
    stream: Stream,
    chunks: AsyncIterator[dict[str, Any]],
    output: content.StreamedOutput | None,
) -> AsyncIterator[dict[str, Any]]:
    """Pass ``chunks`` through; the attempt span ends with the stream (finished, failed or cancelled)."""
    first = True
    model: str | None = None
    response_id: str | None = None
    reasons: list[str] = []
    try:
        async for chunk in chunks:
            if first:
                first = False
                span.add_event("gen_ai.first_token")
            if model is None and isinstance(chunk.get("model"), str):
                model = chunk["model"]
            if response_id is None and isinstance(chunk.get("id"), str):
                response_id = chunk["id"]
            if output is not None:
                output.add(chunk)
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                    reasons.append(choice["finish_reason"])
            yield chunk
    except GatewayError as error:
        _attempt_failed(span, error)
        raise
    except BaseException as error:  # GeneratorExit or CancelledError: the client went away
        span.set_attribute("gateway.stream.cancelled", True)
        span.set_attribute("error.type", type(error).__name__)
        raise
    finally:
        if model is not None:
            span.set_attribute("gen_ai.response.model", model)
        if response_id is not None:
            span.set_attribute("gen_ai.response.id", response_id)
        if output is not None:
            choices = output.as_choices()
            tracing.capture(span, content.OUTPUT, lambda budget: content.output_messages(choices, budget))
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        _usage_attributes(span, stream.usage)
        span.set_attribute("gateway.stream.completed", stream.completed)
        span.end()
