"""WebSocket transport for streamed chat completions: ``GET /v1/ws/chat``.

One connection authenticates once (``Authorization``/``x-api-key`` header, or for browsers the subprotocol
``gateway.bearer.<key>`` offered next to ``gateway.v1``; only ``gateway.v1`` is echoed back, so the key is
never reflected), then carries any number of chat requests, several at a time. Each ``chat.request`` runs
through exactly the same stage chain as ``POST /v1/chat/completions`` (rate limit, budget, cache, router,
usage ledger) in its own task; its chunks are sent back tagged with the client's id. The protocol is
described in docs/gateway/websocket.md.

Frames are JSON text. Errors about one request are ``chat.error`` frames and never close the socket; the
socket is closed only when the key is bad (4401), the client breaks the framing (binary frame 1003,
oversized message 1009), the connection sat idle (1001) or the gateway shuts down (1012, once the streams in
flight ended or the drain deadline passed; see gateway/shutdown.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.admin.directory import identify_key
from gateway.auth import key_digest
from gateway.errors import GatewayError, bad_key, invalid_request, state_store_unavailable
from gateway.logging import log_error
from gateway.pipeline import Call, Stream, client_chunks
from gateway.routes.openai import new_call
from gateway.runtime import runtime_of
from gateway.schema import check_chat, parse_json
from gateway.shutdown import CLOSE_SERVICE_RESTART
from gateway.stores import StoreUnavailable
from gateway.ws_config import WebSocketConfig

if TYPE_CHECKING:
    from gateway.app import Gateway

PATH = "/v1/ws/chat"
SUBPROTOCOL = "gateway.v1"
BEARER_PREFIX = "gateway.bearer."

# Close codes (4401 mirrors HTTP 401; the others are RFC 6455's).
CLOSE_BAD_KEY = 4401
CLOSE_IDLE = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


def presented_ws_key(websocket: WebSocket) -> str | None:
    """The key from the headers, else from a ``gateway.bearer.<key>`` subprotocol (never the query string)."""
    from gateway.auth import presented_key

    key = presented_key(websocket.headers)
    if key:
        return key
    for protocol in websocket.scope.get("subprotocols", ()):
        if protocol.startswith(BEARER_PREFIX) and len(protocol) > len(BEARER_PREFIX):
            return protocol[len(BEARER_PREFIX) :]
    return None


def _call_headers(websocket: WebSocket) -> Headers:
    # Stages see the handshake headers, minus the subprotocol list (it may hold the key).
    raw = [(k, v) for k, v in websocket.scope["headers"] if k != b"sec-websocket-protocol"]
    return Headers(raw=raw)


class Connection:
    """One open socket: its key, the requests in flight and the single writer that sends frames."""

    def __init__(
        self,
        gateway: Gateway,
        digest: bytes,
        websocket: WebSocket,
        limits: WebSocketConfig,
    ) -> None:
        self.gateway = gateway
        # The key's digest (never the key) authenticates each request against the config running when it
        # starts: a hot reload that revokes the key ends the connection with 4401.
        self._digest = digest
        self.websocket = websocket
        self.limits = limits
        self.headers: Mapping[str, str] = _call_headers(websocket)
        # Bounded: a slow reader makes request tasks wait here, which pauses their upstream reads.
        self.outbox: asyncio.Queue[dict[str, Any] | tuple[int, str] | None] = asyncio.Queue(limits.send_queue)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Set once the connection is going away: cancelled requests then send no frame.
        self.closing = False
        # Set when the message loop has ended (the graceful shutdown waits for it).
        self.done = asyncio.Event()

    async def send(self, frame: dict[str, Any]) -> None:
        """Queue ``frame`` for the writer (waits while the queue is full)."""
        await self.outbox.put(frame)

    async def writer(self) -> None:
        """Send queued frames in order until the ``None`` sentinel; the only task that writes."""
        while (frame := await self.outbox.get()) is not None:
            if isinstance(frame, tuple):  # (code, reason): close the socket
                await self.websocket.close(*frame)
                return
            await self.websocket.send_text(json.dumps(frame, separators=(",", ":")))

    async def send_close(self, code: int, reason: str) -> None:
        """Have the writer close the socket after the frames queued before."""
        await self.outbox.put((code, reason))

    async def error(
        self, request_id: Any, exc: GatewayError, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send ``exc`` as a ``chat.error`` frame for ``request_id`` (None: not about one request)."""
        await self.send(
            {
                "type": "chat.error",
                "id": request_id,
                "status": exc.status,
                "error": self.gateway.redactor.body(exc),
                "headers": {**(headers or {}), **exc.headers},
            }
        )

    async def on_message(self, text: str) -> None:
        """Handle one client message: a request, a cancel or a ping; bad ones get a ``chat.error``."""
        try:
            # The same parser as HTTP bodies: depth, surrogates and numbers checked once, here.
            message = parse_json(text)
        except GatewayError as exc:
            await self.error(None, exc)
            return
        if not isinstance(message, dict):
            await self.error(None, invalid_request("A message must be a JSON object with a 'type'."))
            return
        kind = message.get("type")
        request_id = message.get("id")
        if kind == "ping":
            await self.send({"type": "pong"})
            return
        if kind not in ("chat.request", "chat.cancel"):
            await self.error(
                request_id,
                invalid_request(
                    "Unknown message type: expected chat.request, chat.cancel or ping.", param="type"
                ),
            )
            return
        if not isinstance(request_id, str) or not request_id or len(request_id) > 128:
            await self.error(
                None, invalid_request("'id' must be a non-empty string of at most 128 characters.")
            )
            return
        if kind == "chat.cancel":
            task = self.tasks.get(request_id)
            if task is not None:
                task.cancel()
            return
        if self.gateway.activity.draining:
            # A socket may live for hours: new requests on it would keep a shutdown's drain going.
            await self.error(
                request_id,
                GatewayError(
                    503,
                    "The gateway is shutting down; reconnect and send the request again.",
                    "service_unavailable",
                    "shutting_down",
                    headers={"retry-after": "1"},
                ),
            )
            return
        if request_id in self.tasks:
            await self.error(request_id, invalid_request(f"Request id {request_id!r} is already in flight."))
            return
        if len(self.tasks) >= self.limits.max_concurrent:
            await self.error(
                request_id,
                GatewayError(
                    429,
                    f"At most {self.limits.max_concurrent} requests may be in flight on one connection.",
                    "rate_limit_error",
                    "too_many_in_flight",
                ),
            )
            return
        body = message.get("body")
        if not isinstance(body, dict):
            await self.error(request_id, invalid_request("'body' must be a chat completions request object."))
            return
        task = asyncio.create_task(self.run(request_id, body, time.perf_counter()))
        self.tasks[request_id] = task
        task.add_done_callback(partial(self._forget, request_id))

    def _forget(self, request_id: str, task: asyncio.Task[None]) -> None:
        # A finished request's id may be reused by the client.
        if self.tasks.get(request_id) is task:
            del self.tasks[request_id]

    async def run(self, request_id: str, body: dict[str, Any], started: float) -> None:
        """Run one chat request through the pipeline and send its frames (cancelled by ``chat.cancel``)."""
        call: Call | None = None
        stream: Stream | None = None
        trace_id = uuid.uuid4().hex
        # Each request uses the config running when it starts (a socket may outlive many reloads).
        runtime = self.gateway.runtime
        runtime.acquire()
        self.gateway.activity.enter()
        try:
            key = await identify_key(runtime.keys, self.gateway.admin.directory, self._digest)
            if key is None:
                await self.error(request_id, bad_key("The API key is no longer valid."))
                await self.send_close(CLOSE_BAD_KEY, "API key revoked")
                return
            body = {**body, "stream": True}  # the transport streams; the client need not say so
            model, _, include_usage = check_chat(body)
            call = new_call(
                runtime,
                key,
                request_id=trace_id,
                endpoint="chat",
                model=model,
                body=body,
                headers=self.headers,
                started=started,
                stream=True,
                include_usage=include_usage,
            )
            result = await runtime.handle(call)
            if isinstance(result, Stream):
                stream = result
                async for chunk in client_chunks(call, stream):
                    await self.send({"type": "chat.chunk", "id": request_id, "chunk": chunk})
                usage = stream.usage
            else:  # a stage answered whole (only a misbehaving one would, for a streamed call)
                await self.send({"type": "chat.chunk", "id": request_id, "chunk": result.body})
                usage = result.usage
            headers = {**call.response_headers, "x-request-id": trace_id}
            await self.send({"type": "chat.done", "id": request_id, "usage": usage, "headers": headers})
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                if stream is not None:
                    await stream.aclose()
                    stream = None
            # The stages have settled (lease released, budget settled): say so, unless the socket is going
            # away. Bounded: a client that stopped reading must not keep this task alive.
            if not self.closing:
                with anyio.move_on_after(5.0, shield=True):
                    await self.send({"type": "chat.cancelled", "id": request_id})
            raise
        except GatewayError as exc:
            await self.error(request_id, exc, call.response_headers if call is not None else None)
        except StoreUnavailable:
            await self.error(request_id, state_store_unavailable())
        except Exception as exc:
            log_error(trace_id, exc)
            await self.error(request_id, GatewayError(500, "Internal gateway error.", "server_error"))
        finally:
            if stream is not None:
                # Shielded: the upstream must be closed and the stages settled even during cancellation.
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
            runtime.release()
            self.gateway.activity.exit()

    async def going_away(self, code: int, reason: str) -> None:
        """Cancel the requests still running (a shutdown's deadline passed), then close with ``code``
        after the frames already queued."""
        await self.shutdown()
        await self.send_close(code, reason)

    async def finished(self) -> None:
        """Return once this connection's message loop has ended."""
        await self.done.wait()

    async def shutdown(self) -> None:
        """Cancel every request in flight and wait for their cleanup (settlement), then stop the writer."""
        self.closing = True
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _receive(websocket: WebSocket) -> Mapping[str, Any]:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    return message


async def _deny(websocket: WebSocket, exc: GatewayError) -> None:
    """Refuse a handshake with ``exc`` as an HTTP answer (the error envelope), where the server can send one;
    otherwise close before accepting, which clients see as a bare 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(exc.body(), exc.status))
    else:
        await websocket.close(1008, exc.message[:120])


def add_routes(app: FastAPI, gateway: Gateway) -> None:
    """Register ``GET /v1/ws/chat`` serving ``gateway``."""

    async def chat_socket(websocket: WebSocket) -> None:
        if not gateway.started:
            await gateway.start()
        # The config running when the socket opens decides; the socket keeps these limits to its end.
        settings = (runtime_of(websocket.scope) or gateway.runtime).config.features.websocket
        if not settings.enabled:
            await _deny(
                websocket,
                GatewayError(
                    404,
                    "The WebSocket transport is turned off on this gateway (features.websocket.enabled).",
                    code="websocket_disabled",
                ),
            )
            return
        origin = websocket.headers.get("origin")
        if not settings.admits(origin):
            await _deny(
                websocket,
                GatewayError(
                    403,
                    f"Origin {origin!r} may not open a WebSocket here: it is not in "
                    "features.websocket.allowed_origins.",
                    "permission_error",
                    "origin_not_allowed",
                ),
            )
            return
        offered = websocket.scope.get("subprotocols", ())
        # Accept first, so that a bad key gets a close code a client can read (4401), not a bare 403.
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        secret = presented_ws_key(websocket)
        if (
            secret is None
            or await identify_key(gateway.runtime.keys, gateway.admin.directory, key_digest(secret)) is None
        ):
            await websocket.close(CLOSE_BAD_KEY, "invalid or missing API key")
            return
        if gateway.activity.draining:
            await websocket.close(CLOSE_SERVICE_RESTART, "server shutting down")
            return
        # The socket may stay open for hours: it must not hold the runtime it arrived with (a reload would
        # wait for it to drain). Each request holds the runtime it runs on instead; re-pinned at the end
        # so RuntimeMiddleware's release stays balanced.
        pinned = runtime_of(websocket.scope)
        if pinned is not None:
            pinned.release()
        try:
            await _serve(Connection(gateway, key_digest(secret), websocket, settings), settings)
        except Exception as exc:
            # Last resort, as GatewayMiddleware does for HTTP: the type in the log (no traceback, no
            # secret), 1011 to the client.
            log_error(uuid.uuid4().hex, exc)
            with contextlib.suppress(Exception):
                await websocket.close(CLOSE_INTERNAL_ERROR, "internal gateway error")
        finally:
            if pinned is not None:
                pinned.acquire()

    app.add_api_websocket_route(PATH, chat_socket)


async def _serve(connection: Connection, limits: WebSocketConfig) -> None:
    """The message loop of one authenticated socket, until the client leaves or is closed."""
    websocket = connection.websocket
    writer = asyncio.create_task(connection.writer())
    close: tuple[int, str] | None = None
    sockets = connection.gateway.activity.sockets
    sockets.add(connection)
    try:
        while True:
            timeout = None if connection.tasks else limits.idle_timeout_s
            try:
                message = await asyncio.wait_for(_receive(websocket), timeout)
            except TimeoutError:
                close = (CLOSE_IDLE, "idle timeout")
                break
            text = message.get("text")
            if text is None:
                close = (CLOSE_UNSUPPORTED, "binary frames are not supported; send JSON text")
                break
            if len(text.encode()) > limits.max_message_bytes:
                close = (CLOSE_TOO_BIG, f"message larger than {limits.max_message_bytes} bytes")
                break
            await connection.on_message(text)
            if writer.done():  # the socket failed under the writer
                break
    except WebSocketDisconnect:
        pass
    finally:
        await connection.shutdown()
        if close is not None and not writer.done():
            # Let the frames already queued go out before the close frame.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.outbox.put(None), 5.0)
                await asyncio.wait_for(writer, 5.0)
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        sockets.discard(connection)
        connection.done.set()
    if close is not None:
        with contextlib.suppress(Exception):
            await websocket.close(*close)
