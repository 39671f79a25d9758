"""The Anthropic-compatible API: ``POST /v1/messages``.

Clients built on the Anthropic SDK (``x-api-key`` and ``anthropic-version`` headers) reach the same pipeline
as ``/v1/chat/completions``: the body is translated into the canonical chat request
(:func:`gateway.formats.anthropic.request_to_chat`), authenticated, resolved and run through the stage chain
(rate limit, budget, cache, router) unchanged, and the canonical answer or stream is translated back. Every
error on this route, streamed or not, uses Anthropic's envelope ``{"type": "error", "error": {...}}``.

``POST /v1/messages/count_tokens`` (used by tools such as Claude Code) checks the same body and answers the
gateway's token estimate, without calling an upstream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, state_store_unavailable
from gateway.features.cache import UNCACHEABLE
from gateway.formats.anthropic import chat_to_message, error_body, request_to_chat
from gateway.formats.anthropic_native import SCRATCH_KEY, NativeExchange, exchange_for
from gateway.formats.anthropic_stream import MessageEvents, error_event, sse
from gateway.logging import log_error
from gateway.params import DROP_SCRATCH, DROPPED_HEADER
from gateway.pipeline import Call, Stream
from gateway.redact import Redactor
from gateway.routes.openai import SSEResponse, begin, json_response, read_body, request_call
from gateway.schema import check_chat, parse_json_object
from gateway.stores import StoreUnavailable
from gateway.token_estimate import estimate_prompt_tokens, estimate_text_tokens

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.front import GatewayApp

INTERNAL_ERROR = GatewayError(500, "Internal gateway error.", "server_error")

FrameChunk = Callable[[dict[str, Any]], Iterable[bytes]]
"""The SSE bytes to send for one canonical chunk of a stream."""
Frames = tuple[FrameChunk, Callable[[], Iterable[bytes]]]
"""Per-chunk frames, and the frames to end the stream with."""


async def _events(
    call: Call,
    stream: Stream,
    frames: FrameChunk,
    ending: Callable[[], Iterable[bytes]],
    redactor: Redactor,
) -> AsyncIterator[bytes]:
    """The SSE bytes of ``stream``: ``frames(chunk)`` per canonical chunk, ``ending()`` after the last, and
    an in-band ``error`` event when it fails after the headers were sent."""
    try:
        async for chunk in stream:
            for frame in frames(chunk):
                yield frame
        for frame in ending():
            yield frame
    except GatewayError as exc:
        # Headers are sent: report in-band the way Anthropic does, then end the stream.
        yield error_event(redacted(exc, redactor))
    except StoreUnavailable:
        yield error_event(state_store_unavailable())
    except Exception as exc:
        log_error(call.request_id, exc)
        yield error_event(INTERNAL_ERROR)
    finally:
        await stream.aclose()


def _translated(translate: MessageEvents) -> Frames:
    """Frames for a canonical stream translated into Anthropic's event sequence."""
    return (
        lambda chunk: [sse(name, data) for name, data in translate.feed(chunk)],
        lambda: [sse(name, data) for name, data in translate.finish()],
    )


def _native(exchange: NativeExchange) -> Frames:
    """Frames for an Anthropic upstream's own events, as it sent them: the canonical chunks only drive the
    pipeline (usage, budgets), each releasing the events read up to it."""

    def drained() -> list[bytes]:
        return [_raw_event(name, data) for name, data in exchange.drain()]

    return (lambda _chunk: drained(), drained)


def _raw_event(name: str, data: str) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + data.encode() + b"\n\n"


def error_response(request: Request, error: GatewayError, headers: dict[str, str]) -> Response:
    """``error`` in Anthropic's envelope, with the ``request-id`` header Anthropic's SDK reads."""
    request_id = request.scope["state"].get("request_id")
    extra = {"request-id": request_id} if request_id else {}
    return json_response(error_body(error), error.status, {**headers, **extra})


def redacted(error: GatewayError, redactor: Redactor) -> GatewayError:
    """``error`` with configured secrets removed from its message (upstreams may quote credentials)."""
    message = redactor.text(error.message)
    if message == error.message:
        return error
    return GatewayError(error.status, message, error.type, error.code, headers=error.headers)


def add_routes(app: GatewayApp, gateway: Gateway) -> None:
    """Register ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` serving ``gateway``."""

    async def run(request: Request) -> Response:
        runtime, key = await begin(gateway, request)  # x-api-key (or a Bearer token)
        raw = parse_json_object(await read_body(request, runtime.max_body_bytes))
        body = request_to_chat(raw)
        model, stream, _ = check_chat(body)
        call = request_call(request, runtime, key, "chat", model, body, stream=stream)
        exchange = call.scratch[SCRATCH_KEY] = exchange_for(raw, request.headers)
        # This route drops and reports what a route cannot honour (below), canonical parameters included.
        call.scratch[DROP_SCRATCH] = True
        if exchange.lost:
            # The canonical body does not hold these fields, so an answer cached for it may not fit.
            call.scratch[UNCACHEABLE] = True
        result = await runtime.handle(call)
        native = exchange.answered(call.route.provider if call.route is not None else None)
        if exchange.lost and not native:
            # Said, not silent: the client learns which of its fields had no effect on this answer (with
            # any canonical parameter the answering route dropped, gateway/params.py).
            dropped = call.response_headers.get(DROPPED_HEADER, "").split(",")
            names = sorted({*exchange.lost, *filter(None, dropped)})
            call.response_headers[DROPPED_HEADER] = ",".join(names[:32])
        if isinstance(result, Stream):
            headers = {**call.response_headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
            frames, ending = (
                _native(exchange) if native else _translated(MessageEvents("msg_" + call.request_id, model))
            )
            return SSEResponse(_events(call, result, frames, ending, gateway.redactor), headers)
        if native and exchange.message is not None:
            return json_response(exchange.message, result.status, call.response_headers)
        message = chat_to_message(result.body, "msg_" + call.request_id, model)
        return json_response(message, result.status, call.response_headers)

    async def count(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        raw = parse_json_object(await read_body(request, runtime.max_body_bytes))
        # A count request has no max_tokens; the rest is checked exactly as for /v1/messages.
        body = request_to_chat({**raw, "max_tokens": 1})
        runtime.resolve(key, body["model"])
        return json_response({"input_tokens": estimate_input_tokens(body)})

    def anthropic_errors(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            # Anthropic's SDK reads the request id from `request-id` (its `_request_id`); the gateway's
            # own `x-request-id` carries the same value.
            request_id = {"request-id": request.scope["state"]["request_id"]}
            try:
                response = await handler(request)
                response.headers.update(request_id)
                return response
            except StoreUnavailable:
                error = state_store_unavailable()
            except GatewayError as exc:
                error = redacted(exc, gateway.redactor)
            call = request.scope["state"].get("call")
            headers = {**call.response_headers, **error.headers} if call is not None else error.headers
            return error_response(request, error, headers)

        return endpoint

    app.add_hot_route("/v1/messages", anthropic_errors(run))
    app.add_hot_route("/v1/messages/count_tokens", anthropic_errors(count))


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """An estimate of a canonical request's input tokens: messages, tool calls and tool definitions.

    The gateway has no tokenizer (see gateway/token_estimate.py), so ``count_tokens`` answers this estimate
    rather than the upstream model's exact count.
    """
    messages = body["messages"]
    calls = [c for m in messages for c in m.get("tool_calls") or []]
    extra = json.dumps([calls, body.get("tools") or []]) if calls or body.get("tools") else ""
    return estimate_prompt_tokens(messages) + (estimate_text_tokens(extra) if extra else 0)
