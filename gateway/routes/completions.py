"""OpenAI's legacy text completions: ``POST /v1/completions``.

The body is checked against :data:`~gateway.request_schema.COMPLETION_PARAMS`, translated to the
canonical chat request (:func:`gateway.formats.completions.request_to_chat`) and run through the same
stage chain as ``/v1/chat/completions`` (keys, rate limits, budgets, cache, routing, usage); the answer
and stream chunks are translated back to ``text_completion`` objects. Errors use OpenAI's envelope, as on
every OpenAI route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.formats.completions import chat_to_completion, chunk_to_completion, request_to_chat
from gateway.pipeline import Stream
from gateway.request_schema import COMPLETION_PARAMS, check_params
from gateway.routes.openai import SSEResponse, _events, begin, json_response, read_body, request_call
from gateway.schema import check_chat, parse_json_object

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.front import GatewayApp
    from gateway.pipeline import KeyIdentity
    from gateway.runtime import Runtime


async def _completion_chunks(
    chunks: AsyncIterator[dict[str, Any]], model: str
) -> AsyncIterator[dict[str, Any]]:
    async for chunk in chunks:
        translated = chunk_to_completion(chunk, model)
        if translated is not None:
            yield translated


def add_routes(app: GatewayApp, gateway: Gateway) -> None:
    """Register ``POST /v1/completions`` serving ``gateway``."""

    async def completions(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        raw = parse_json_object(await read_body(request, runtime.max_body_bytes))
        return await answer_completion(gateway, request, runtime, key, raw)

    app.add_hot_route("/v1/completions", completions)


async def answer_completion(
    gateway: Gateway, request: Request, runtime: Runtime, key: KeyIdentity, raw: dict[str, Any]
) -> Response:
    """Check a legacy completion body ``raw``, run it as a chat call and answer ``text_completion``s."""
    check_params(raw, COMPLETION_PARAMS)
    body = request_to_chat(raw)
    model, stream, include_usage = check_chat(body)
    call = request_call(
        request, runtime, key, "chat", model, body, stream=stream, include_usage=include_usage
    )
    result = await runtime.handle(call)
    if isinstance(result, Stream):
        headers = {**call.response_headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        # Piped, not wrapped: the stream's own layers still see the canonical chunks (usage, cache)
        # and closing it still cancels the upstream. routes.openai's loop then frames the SSE events
        # and in-band errors exactly as for chat.
        result.pipe(lambda chunks: _completion_chunks(chunks, model))
        return SSEResponse(_events(call, result, gateway.redactor), headers)
    return json_response(chat_to_completion(result.body, model), result.status, call.response_headers)
