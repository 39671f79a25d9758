"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

These are plain Starlette endpoints (no FastAPI dependency solving) because they are the hot path: each
reads the body with a size limit, authenticates, checks the body, resolves the model, builds a
:class:`~gateway.pipeline.Call` and runs the stage chain.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import jsonio
from gateway.admin.directory import authenticate
from gateway.embedding_format import client_answer, float_request
from gateway.errors import GatewayError, body_too_large, invalid_request, state_store_unavailable
from gateway.logging import log_error
from gateway.pipeline import CLIENT_WAIT, Call, Stream, client_chunks
from gateway.redact import Redactor
from gateway.schema import SSE_DONE, check_chat, check_embeddings, parse_json_object, sse_event
from gateway.stores import StoreUnavailable

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.front import GatewayApp
    from gateway.pipeline import KeyIdentity
    from gateway.runtime import Runtime


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise body_too_large(limit)
    # Straight from ``receive``, not through ``request.stream()``: its async generator cost more than the
    # read itself on a body that arrives in one message, as nearly all do.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    waited = 0.0
    while True:
        # Timed: a body still on its way (a client that writes it after its headers, a large upload) is
        # the client's time, which the overhead header leaves out as it leaves out the upstream's.
        began = time.perf_counter()
        message = await receive()
        waited += time.perf_counter() - began
        request.scope["state"][CLIENT_WAIT] = waited
        if message["type"] == "http.disconnect":
            # Nobody is listening; answer quietly instead of logging a server error.
            raise invalid_request("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class SSEResponse(StreamingResponse):
    """A server-sent-event response that always closes its stream, even when the client went away."""

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: a disconnect cancels this task, and the upstream must still be closed.
            with anyio.CancelScope(shield=True):
                await self._events.aclose()  # type: ignore[attr-defined]


async def _events(call: Call, stream: Stream, redactor: Redactor) -> AsyncIterator[bytes]:
    try:
        async for chunk in client_chunks(call, stream):
            yield sse_event(chunk)
        yield SSE_DONE
    except GatewayError as exc:
        # Headers are sent: report in-band the way OpenAI does, then end the stream.
        yield sse_event(redactor.body(exc))
    except StoreUnavailable:
        yield sse_event(state_store_unavailable().body())
    except Exception as exc:
        log_error(call.request_id, exc)
        yield sse_event(GatewayError(500, "Internal gateway error.", "server_error").body())
    finally:
        await stream.aclose()


def _created(runtime: Runtime) -> int:
    """A model's ``created``: when the running config was loaded (start or last reload), in Unix seconds.

    The gateway has no creation date for an alias of its own; the load time is real, the same for every
    model in one config, and tells a client when the list last changed.
    """
    return int(runtime.loaded_at.timestamp())


def wants_anthropic(request: Request) -> bool:
    """Whether ``request`` speaks Anthropic's API: under ``/v1/messages``, or sent with the
    ``anthropic-version`` header every Anthropic SDK sends (``/v1/models`` serves both kinds of client)."""
    # The scope's path, not ``request.url``: building the URL object costs more than the rest of a refusal's
    # answer, and the prefix reads the same in both.
    return request.scope["path"].startswith("/v1/messages") or "anthropic-version" in request.headers


def _anthropic_model(name: str, runtime: Runtime) -> dict[str, Any]:
    created = runtime.loaded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": name, "display_name": name, "created_at": created}


class JSONAnswer(Response):
    """A JSON body already encoded, answered as two ASGI messages with headers encoded once.

    What Starlette's ``Response`` would send for it, without its per-answer checks that never apply here
    (rendering the content, looking for a caller's own content-length or content-type, the status codes
    without a body): every gateway answer in JSON goes out this way. A refusal of a WebSocket handshake
    (GraphQL over WebSocket without a key) is Starlette's ``websocket.http.response`` denial, as before.
    """

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        raw = (
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            if headers
            else []
        )
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        raw.append((b"content-type", b"application/json"))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # Encoded once, straight to bytes: no JSONResponse/jsonable_encoder pass over the body first.
    return JSONAnswer(jsonio.dumps(body), status, headers)


def new_call(
    runtime: Runtime,
    key: KeyIdentity,
    *,
    request_id: str,
    endpoint: str,
    model: str,
    body: dict[str, Any],
    headers: Mapping[str, str],
    started: float,
    stream: bool = False,
    include_usage: bool = False,
    trace_id: str | None = None,
) -> Call:
    """A pipeline call for ``model``, resolved in ``runtime``'s config for ``key`` (HTTP or WebSocket)."""
    return Call(
        request_id=request_id,
        key=key,
        endpoint=endpoint,
        model=model,
        model_config=runtime.resolve(key, model),
        body=body,
        headers=headers,
        stream=stream,
        include_usage=include_usage,
        started=started,
        trace_id=trace_id,
    )


def request_call(
    request: Request,
    runtime: Runtime,
    key: KeyIdentity,
    endpoint: str,
    model: str,
    body: dict[str, Any],
    *,
    stream: bool = False,
    include_usage: bool = False,
) -> Call:
    """The call for an HTTP request, with its request id and start time, kept in the request's state."""
    state = request.scope["state"]
    call = new_call(
        runtime,
        key,
        request_id=state["request_id"],
        endpoint=endpoint,
        model=model,
        body=body,
        headers=request.headers,
        started=state["started"],
        stream=stream,
        include_usage=include_usage,
        trace_id=state.get("trace_id"),  # set by the tracing middleware when features.tracing is on
    )
    call.client_s = state.get(CLIENT_WAIT, 0.0)
    # The envelope's list (gateway/middleware.py): the stages' after-answer work runs once this is answered.
    call.after = state.get("after")
    state["call"] = call
    return call


async def begin(gateway: Gateway, request: Request) -> tuple[Runtime, KeyIdentity]:
    """The runtime this request runs under to its end (even if a reload swaps in another) and its key.

    Every client route starts here: the gateway started, the config pinned, the key authenticated (401 or
    403 otherwise) and its name in the request state for the access log.
    """
    if not gateway.started:
        await gateway.start()
    runtime = gateway.snapshot(request)
    key = await authenticate(runtime.keys, gateway.admin.directory, request.headers)
    request.scope["state"]["key"] = key.name
    return runtime, key


async def answer_chat(
    gateway: Gateway, request: Request, runtime: Runtime, key: KeyIdentity, body: dict[str, Any]
) -> Response:
    """Check a chat completion ``body``, run it through the pipeline and answer it (JSON or SSE)."""
    model, stream, include_usage = check_chat(body)
    call = request_call(
        request, runtime, key, "chat", model, body, stream=stream, include_usage=include_usage
    )
    result = await runtime.handle(call)
    if isinstance(result, Stream):
        headers = {**call.response_headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return SSEResponse(_events(call, result, gateway.redactor), headers)
    return json_response(result.body, result.status, call.response_headers)


async def answer_embeddings(
    request: Request, runtime: Runtime, key: KeyIdentity, body: dict[str, Any]
) -> Response:
    """Check an embeddings ``body``, run it through the pipeline and answer it (floats or base64)."""
    model = check_embeddings(body)
    body, wants_base64 = float_request(body)
    call = request_call(request, runtime, key, "embeddings", model, body)
    result = await runtime.handle(call)
    if isinstance(result, Stream):  # only a misbehaving stage could do this
        await result.aclose()
        raise GatewayError(500, "Embeddings cannot be streamed.", "server_error")
    answer = client_answer(result.body, model, wants_base64) if result.status == 200 else result.body
    return json_response(answer, result.status, call.response_headers)


def add_routes(app: GatewayApp, gateway: Gateway) -> None:
    """Register the OpenAI-compatible endpoints serving ``gateway``."""

    async def chat_completions(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        body = parse_json_object(await read_body(request, runtime.max_body_bytes))
        return await answer_chat(gateway, request, runtime, key, body)

    async def embeddings(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        body = parse_json_object(await read_body(request, runtime.max_body_bytes))
        return await answer_embeddings(request, runtime, key, body)

    async def list_models(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        names = runtime.visible_models(key)
        if wants_anthropic(request):
            # Anthropic's SDK pages through models with these fields; the gateway's list is one page.
            data = [_anthropic_model(name, runtime) for name in names]
            return json_response(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": names[0] if names else None,
                    "last_id": names[-1] if names else None,
                }
            )
        data = [
            {"id": name, "object": "model", "created": _created(runtime), "owned_by": "gateway"}
            for name in names
        ]
        return json_response({"object": "list", "data": data})

    async def get_model(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        name = request.path_params["model"]
        runtime.resolve(key, name)
        if wants_anthropic(request):
            return json_response(_anthropic_model(name, runtime))
        return json_response(
            {"id": name, "object": "model", "created": _created(runtime), "owned_by": "gateway"}
        )

    app.add_hot_route("/v1/chat/completions", chat_completions)
    app.add_hot_route("/v1/embeddings", embeddings)
    app.add_hot_route("/v1/models", list_models, "GET")
    app.add_route("/v1/models/{model:path}", get_model, methods=["GET"], include_in_schema=False)
