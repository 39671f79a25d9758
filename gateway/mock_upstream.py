"""``gateway mock-upstream``: the mock provider as a standalone OpenAI-compatible HTTP server.

A raw ASGI app (no framework) because it is the benchmark upstream: it should cost as little as possible
per request. Serves ``POST /v1/chat/completions`` (JSON and SSE), ``POST /v1/embeddings``, ``GET /v1/models``
and ``GET /health``; any bearer key is accepted. Answers are the mock provider's (same body builders).
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
from gateway.errors import GatewayError
from gateway.providers.mock import MockOptions, chat_body, chat_chunks, embeddings_body, failure
from gateway.schema import SSE_DONE, sse_event

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


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
            if self.options.fail_rate and self._random.random() < self.options.fail_rate:
                error = failure(self.options.fail_status)
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
                await self._stream(body, receive, send)
            else:
                answer = chat_body(body, body["model"], self.options, f"chatcmpl-mock{next(self._ids)}")
                await _respond(send, 200, json.dumps(answer).encode())
        else:
            await _error(send, 404, "invalid_request_error", f"No route {method} {path}.")

    async def _stream(self, body: dict[str, Any], receive: Receive, send: Send) -> None:
        chunks = chat_chunks(body, body["model"], self.options, f"chatcmpl-mock{next(self._ids)}")
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
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
                await send({"type": "http.response.body", "body": sse_event(chunk), "more_body": True})
            await send({"type": "http.response.body", "body": SSE_DONE, "more_body": False})
            self.stats["streams_finished"] += 1
        except OSError:
            self.stats["streams_cancelled"] += 1


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
