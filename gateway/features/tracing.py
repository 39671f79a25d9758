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

Attributes hold ids, names, counts and statuses only: never a prompt, a completion, a key or a header.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.config import RouteConfig
from gateway.errors import GatewayError
from gateway.features.tracing_config import SCRATCH_KEY, TracingConfig
from gateway.pipeline import Call, Handler, Response, Result, Stage, Stream

Attempt = Callable[[Call, RouteConfig, Any], Awaitable[Result]]
# The call's scratch key under which the innermost stage span that saw an error marks it as recorded.
_RECORDED = "tracing.recorded_error"
_PROPAGATED = (b"traceparent", b"tracestate")


class Tracing:
    """The tracer of one runtime: spans for requests, stages and attempts, and W3C context propagation."""

    def __init__(self, config: TracingConfig) -> None:
        self.config = config
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name, "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        exporter = _exporter(config)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()

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

        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
            record_exception=False,
        ) as span:
            state: dict[str, Any] = scope.setdefault("state", {})
            span_context = span.get_span_context()
            if span_context.is_valid:
                # Read by GatewayMiddleware: the access log line and a generated x-request-id carry it.
                state["trace_id"] = trace.format_trace_id(span_context.trace_id)
            try:
                await app(scope, receive, send_status)
            finally:
                _finish_server_span(span, scope, state, status)

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
        span = self.tracer.start_span(
            f"{operation} {model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.system": getattr(provider_config, "type", None) or route.provider,
                "gen_ai.request.model": model,
                "gateway.model": call.model,
                "gateway.provider": route.provider,
                "gateway.route": f"{route.provider}/{model}",
                "gateway.attempt": call.attempts,
                "gateway.stream": call.stream,
            },
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

            def traced(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
                return _traced_stream(span, stream, chunks)

            return stream.pipe(traced)
        _response_attributes(span, result.body if isinstance(result, Response) else {})
        span.end()
        return result

    def inject(self, headers: dict[str, str]) -> None:
        """Add the current context's ``traceparent`` (and ``tracestate``) to upstream request headers."""
        self.propagator.inject(headers)

    async def shutdown(self) -> None:
        """Flush queued spans and stop exporting (off the event loop: the exporter blocks)."""
        await asyncio.to_thread(self.provider.shutdown)


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
            try:
                return await self.stage.handle(call, next)
            except GatewayError as error:
                self.tracing.record_error(span, call, error)
                raise


def stage_name(stage: object) -> str:
    """``RateLimitStage`` -> ``rate_limit``; a stage may name itself with a ``name`` attribute."""
    name = getattr(stage, "name", None)
    if isinstance(name, str) and name:
        return name
    base = type(stage).__name__.removesuffix("Stage") or type(stage).__name__
    base = {"Routing": "Router"}.get(base, base)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


def _exporter(config: TracingConfig) -> SpanExporter | None:
    if config.exporter == "otlp":
        return OTLPSpanExporter(endpoint=config.traces_url(), headers=dict(config.headers) or None)
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
    span: Span, stream: Stream, chunks: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """Pass ``chunks`` through; the attempt span ends with the stream (finished, failed or cancelled)."""
    first = True
    model: str | None = None
    reasons: list[str] = []
    try:
        async for chunk in chunks:
            if first:
                first = False
                span.add_event("gen_ai.first_token")
            if model is None and isinstance(chunk.get("model"), str):
                model = chunk["model"]
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
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        _usage_attributes(span, stream.usage)
        span.set_attribute("gateway.stream.completed", stream.completed)
        span.end()
