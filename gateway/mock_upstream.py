"""``gateway mock-upstream``: the mock provider as a standalone HTTP server speaking three wire formats.

A raw ASGI app (no framework) because it is the benchmark upstream: it should cost as little as possible
per request, so the OpenAI paths are matched first and answered without translation. By path:

- OpenAI: ``POST /v1/chat/completions`` (JSON and SSE), ``POST /v1/embeddings``, ``GET /v1/models``;
- Anthropic Messages: ``POST /v1/messages`` (JSON and Anthropic's SSE event sequence) and
  ``POST /v1/messages/count_tokens``, errors in Anthropic's envelope;
- Cohere v2: ``POST /v2/chat`` (JSON and Cohere's SSE events) and ``POST /v2/embed``, errors as
  ``{"message": ...}``;

plus ``GET /health``. Any key is accepted (Bearer or ``x-api-key``), so ``anthropic`` and ``cohere``
providers can point at it and tests need no real keys. Answers are the mock provider's (same body builders),
translated with the gateway's own tables (:mod:`gateway.formats.anthropic`, :mod:`gateway.formats.cohere`).
``stats`` counts streams started, finished and cancelled by the client, so tests can see cancellation.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gateway.embedding_format import client_answer
from gateway.errors import GatewayError, invalid_request
from gateway.formats import anthropic, cohere
from gateway.formats.anthropic_stream import MessageEvents
from gateway.formats.anthropic_stream import sse as anthropic_sse
from gateway.providers.mock import (
    MockOptions,
    chat_body,
    chat_chunks,
    embeddings_body,
    failure,
    prompt_tokens,
)
from gateway.schema import SSE_DONE, sse_event

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

_ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_COHERE_PATHS = frozenset({"/v2/chat", "/v2/embed"})

Frame = Callable[[dict[str, Any]], bytes]
"""The SSE bytes for one canonical chunk, in the wire format of the path asked."""


class MockUpstream:
    """An ASGI app answering like an OpenAI-compatible API, from :class:`MockOptions`."""

    def __init__(self, options: MockOptions | None = None, models: list[str] | None = None) -> None:
        self.options = options or MockOptions()
        self.models = models or ["mock-echo", "mock-embed"]
        self.stats = {"requests": 0, "streams_started": 0, "streams_finished": 0, "streams_cancelled": 0}
        self._random = random.Random(self.options.seed)
        self._ids = itertools.count(1)
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in self.models],
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.stats["requests"] += 1
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/health", "/ready"):
            await _respond(send, 200, b'{"status":"ok"}')
        elif method == "GET" and path == "/v1/models":
            await _respond(send, 200, self._models_body)
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/embeddings"):
            body = await _read_json(receive)
            if body is None or not isinstance(body.get("model"), str):
                await _error(send, 400, "invalid_request_error", "Expected a JSON object with a 'model'.")
                return
            if self.options.latency_ms:
                await asyncio.sleep(self.options.latency_ms / 1000.0)
            error = self._drawn_failure()
            if error is not None:
                headers = [(k.encode(), v.encode()) for k, v in error.headers.items()]
                await _respond(send, error.status, json.dumps(error.body()).encode(), headers)
                return
            if path == "/v1/embeddings":
                try:
                    vectors = embeddings_body(body, body["model"], self.options)
                except GatewayError as exc:
                    await _respond(send, exc.status, json.dumps(exc.body()).encode())
                    return
                answer = client_answer(vectors, body["model"], body.get("encoding_format") == "base64")
                await _respond(send, 200, json.dumps(answer).encode())
            elif body.get("stream") is True:
                await self._openai_stream(body, receive, send)
            else:
                answer = chat_body(body, body["model"], self.options, f"chatcmpl-mock{next(self._ids)}")
                await _respond(send, 200, json.dumps(answer).encode())
        elif method == "POST" and path in _ANTHROPIC_PATHS:
            await self._foreign(path, receive, send, _anthropic_error)
        elif method == "POST" and path in _COHERE_PATHS:
            await self._foreign(path, receive, send, _cohere_error)
        else:
            await _error(send, 404, "invalid_request_error", f"No route {method} {path}.")

    def _drawn_failure(self) -> GatewayError | None:
        """The injected failure to answer, if this request draws one (``fail_rate``)."""
        if self.options.fail_rate and self._random.random() < self.options.fail_rate:
            return failure(self.options.fail_status)
        return None

    async def _foreign(
        self, path: str, receive: Receive, send: Send, envelope: Callable[[GatewayError], bytes]
    ) -> None:
        """An Anthropic or Cohere path: the request translated to canonical, answered by the mock, the answer
        translated back; every error (bad body, injected failure) in that format's ``envelope``."""
        body = await _read_json(receive)
        try:
            if body is None:
                raise invalid_request("Expected a JSON object.")
            if path == "/v1/messages/count_tokens":
                # A count request has no max_tokens; the rest is checked as for /v1/messages.
                messages = anthropic.request_to_chat({**body, "max_tokens": 1})["messages"]
                await _respond(send, 200, json.dumps({"input_tokens": prompt_tokens(messages)}).encode())
                return
            if path == "/v1/messages":
                canonical = anthropic.request_to_chat(body)
            elif path == "/v2/chat":
                canonical = cohere.request_to_chat(body)
            else:
                canonical = cohere.embed_to_request(body)
            if self.options.latency_ms:
                await asyncio.sleep(self.options.latency_ms / 1000.0)
            error = self._drawn_failure()
            if error is not None:
                raise error
            model, number = canonical["model"], next(self._ids)
            if path == "/v2/embed":
                vectors = embeddings_body(canonical, model, self.options)
                answer = cohere.embeddings_to_response(vectors, canonical["input"], f"embed-mock{number}")
            elif path == "/v1/messages":
                response_id = f"msg_mock{number}"
                if canonical.get("stream") is True:
                    await self._stream(*_anthropic_frames(response_id, model), canonical, receive, send)
                    return
                answer = anthropic.chat_to_message(
                    chat_body(canonical, model, self.options, response_id), response_id, model
                )
            else:
                response_id = f"cohere-mock{number}"
                if canonical.get("stream") is True:
                    await self._stream(*_cohere_frames(response_id), canonical, receive, send)
                    return
                answer = cohere.chat_to_response(chat_body(canonical, model, self.options, response_id))
        except GatewayError as exc:
            headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await _respond(send, exc.status, envelope(exc), headers)
            return
        await _respond(send, 200, json.dumps(answer).encode())

    async def _openai_stream(self, body: dict[str, Any], receive: Receive, send: Send) -> None:
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        await self._stream(sse_event, lambda: SSE_DONE, body, receive, send, usage=usage)

    async def _stream(
        self,
        frame: Frame,
        ending: Callable[[], bytes],
        body: dict[str, Any],
        receive: Receive,
        send: Send,
        usage: bool = True,
    ) -> None:
        """Stream the mock's chunks for ``body``, each as ``frame`` makes it, then ``ending()``. The final
        usage-only chunk is left out unless ``usage`` (OpenAI sends it only when asked)."""
        chunks = chat_chunks(body, body["model"], self.options, f"chatcmpl-mock{next(self._ids)}")
        if not usage:
            chunks = chunks[:-1]
        self.stats["streams_started"] += 1
        delay = self.options.chunk_delay_ms / 1000.0
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        try:
            for i, chunk in enumerate(chunks):
                # Wait for either the delay or the client going away, whichever is first.
                if delay and i and await _disconnected_within(receive, delay):
                    self.stats["streams_cancelled"] += 1
                    return
                await send({"type": "http.response.body", "body": frame(chunk), "more_body": True})
            await send({"type": "http.response.body", "body": ending(), "more_body": False})
            self.stats["streams_finished"] += 1
        except OSError:
            self.stats["streams_cancelled"] += 1


def _anthropic_frames(message_id: str, model: str) -> tuple[Frame, Callable[[], bytes]]:
    """Canonical chunks as Anthropic's event sequence (the /v1/messages route's state machine)."""
    translate = MessageEvents(message_id, model)
    return (
        lambda chunk: b"".join(anthropic_sse(name, data) for name, data in translate.feed(chunk)),
        lambda: b"".join(anthropic_sse(name, data) for name, data in translate.finish()),
    )


def _cohere_frames(response_id: str) -> tuple[Frame, Callable[[], bytes]]:
    """Canonical chunks as Cohere v2's stream events."""
    translate = cohere.ChatEvents(response_id)
    return (
        lambda chunk: b"".join(cohere.sse(name, data) for name, data in translate.feed(chunk)),
        lambda: b"".join(cohere.sse(name, data) for name, data in translate.finish_events()),
    )


def _anthropic_error(error: GatewayError) -> bytes:
    return json.dumps(anthropic.error_body(error)).encode()


def _cohere_error(error: GatewayError) -> bytes:
    return json.dumps(cohere.error_body(error.message)).encode()


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    try:
        message = await asyncio.wait_for(receive(), timeout=seconds)
    except TimeoutError:
        return False
    return message["type"] == "http.disconnect"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_json(receive: Receive) -> dict[str, Any] | None:
    data = b""
    while True:
        message: Message = await receive()
        data += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _respond(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    await _respond(send, status, json.dumps(body).encode())
