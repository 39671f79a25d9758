"""A fake Anthropic Messages API upstream for tests in any folder: records what it received, answers with
Claude-only content (thinking blocks with signatures, prompt-cache usage).

Serve it with ``uvicorn_server.run_server(FakeAnthropic().app())`` and point an ``anthropic`` provider at
the URL. ``requests`` holds each request's headers and JSON body as received, so a test can check that
fields reached the upstream unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

UPSTREAM_KEY = "sk-ant-fake-upstream"

USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 1000,
    "output_tokens": 20,
}
"""What every answer reports: a prompt-cache write and read, priced apart from plain input."""

THINKING = {"type": "thinking", "thinking": "The user greets me.", "signature": "sig-Zm9vYmFy"}


def message(model: str) -> dict[str, Any]:
    """The non-streamed answer: a thinking block (signed) before the text, cache usage."""
    return {
        "id": "msg_fake_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [THINKING, {"type": "text", "text": "Hello from Claude."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE,
    }


def events(model: str) -> list[dict[str, Any]]:
    """The streamed answer's events: thinking and signature deltas, a ping, text, cache usage."""
    start = {**message(model), "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig-1"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "ping"},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "stream."}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 20},
        },
        {"type": "message_stop"},
    ]


class FakeAnthropic:
    """The fake upstream: ``POST /v1/messages`` only, ``x-api-key`` checked."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    @property
    def last_body(self) -> dict[str, Any]:
        """The JSON body of the latest request."""
        return self.requests[-1][1]

    @property
    def last_headers(self) -> dict[str, str]:
        """The headers of the latest request (lower-case names)."""
        return self.requests[-1][0]

    def app(self) -> Starlette:
        """The ASGI app to serve."""
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append((dict(request.headers), body))
        if request.headers.get("x-api-key") != UPSTREAM_KEY:
            error = {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}
            return JSONResponse(error, 401)
        if body.get("model") == "overloaded":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            return JSONResponse(error, 529)
        if body.get("stream"):
            return StreamingResponse(self._sse(body["model"]), media_type="text/event-stream")
        return JSONResponse(message(body["model"]), headers={"request-id": "req_upstream_1"})

    @staticmethod
    async def _sse(model: str) -> AsyncIterator[bytes]:
        for event in events(model):
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
