"""Per-request envelope as pure ASGI middleware: request id, overhead header, access log, last-resort errors,
and the count of requests in flight that a graceful shutdown waits for.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps the hot path to a couple of function calls and lets
streamed responses pass through untouched. Routes find ``request_id`` and ``started`` in
``scope["state"]`` and leave the :class:`~gateway.pipeline.Call` there as ``call`` for the overhead and
the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from functools import partial
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.features.regions import REGION_HEADER
from gateway.ids import IdSource
from gateway.logging import AccessLog, log_error
from gateway.pipeline import CLIENT_WAIT, After
from gateway.runtime import RUNTIME_SCOPE_KEY
from gateway.server_protocol import HELD_WRITES
from gateway.shutdown import Activity

_REQUEST_ID_OK = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")


class Envelope:
    """Adds ``x-request-id``, ``x-gateway-overhead-ms`` and (with ``server.region``) ``x-gateway-region`` to
    every response, logs every request, counts it in flight and answers its last-resort 500.

    One per app, shared by :class:`GatewayMiddleware` (FastAPI's path) and the front's hot path
    (gateway/front.py), so both run this same code with the same id source, log and in-flight count.
    """

    def __init__(self, access_log: AccessLog, activity: Activity | None = None) -> None:
        self.access_log = access_log
        self.ids = IdSource()
        # Counts requests in flight (whole responses, streams included) for the shutdown drain.
        self.activity = activity if activity is not None else Activity()

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` for one HTTP request inside the envelope."""
        started = time.perf_counter()
        request_id = _request_id(scope, self.ids)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = started
        # The pipeline's work for after the answer (gateway.pipeline.later): run once it is written.
        after: list[After] = []
        state["after"] = after
        rid = request_id.encode()
        status = 0
        overhead_ms = 0.0
        answered = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, overhead_ms
            if message["type"] == "http.response.start":
                status = message["status"]
                call = state.get("call")
                # The waits on the upstream and on the client's body are not the gateway's time.
                waits = call.upstream_s + call.client_s if call is not None else state.get(CLIENT_WAIT, 0.0)
                overhead_ms = (time.perf_counter() - started - waits) * 1000.0
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", rid))
                headers.append((b"x-gateway-overhead-ms", f"{overhead_ms:.3f}".encode()))
                # The replica that answered, refusals and cache hits included (the runtime of this request:
                # a reload cannot split one response between two configs).
                runtime = scope.get(RUNTIME_SCOPE_KEY)
                region = runtime.config.server.region if runtime is not None else None
                if region:
                    headers.append((REGION_HEADER.encode(), region.encode()))
                message["headers"] = headers
            await send(message)

        task = asyncio.current_task()
        self.activity.enter(task)
        try:
            await app(scope, receive, send_with_headers)
            answered = True
        except asyncio.CancelledError:
            if not self.activity.stopping or task is None:
                raise
            # The shutdown's drain deadline stopped this request: end the response cleanly, in-band for a
            # stream whose status is already sent, instead of leaving a cancelled task to the server.
            task.uncancel()
            await _stopped(send_with_headers, scope, status)
        except Exception as exc:
            # Last resort: the client gets an envelope, the log gets the type only (no traceback, no secrets).
            log_error(request_id, exc)
            if status == 0:
                await _send_error(
                    send_with_headers, GatewayError(500, "Internal gateway error.", "server_error")
                )
        finally:
            if self.access_log.enabled():
                self.access_log.write(_record(scope, state, status, started, overhead_ms))
            call = state.get("call")
            if after and answered and scope.get(HELD_WRITES):
                # This server writes the answer at the end of the loop's turn (gateway/server_protocol.py,
                # scheduled when the status went out): the books right after it, in the same turn, so the
                # client has its answer first and the server has not yet read its next request.
                asyncio.get_running_loop().call_soon(self._end, after, request_id, task, call)
            else:
                # Any other server has written the answer already (or there is none).
                self._end(after, request_id, task, call)

    def _end(self, after: list[After], request_id: str, task: asyncio.Task[Any] | None, call: Any) -> None:
        """Keep the request's books and let it go: out of the in-flight count only now, so a graceful
        shutdown waits for them."""
        if after:
            self._keep_books(after, request_id)
        self.activity.exit(task)
        if call is not None:
            # The response is out, streams included, and nothing reads the stages' notes any more. They
            # hold the call in a cycle (call -> scratch -> an admission claim -> its step, bound to the
            # call) that only the cyclic collector frees: ~27 objects per request, its young-generation
            # collections every ~30 cache hits. Emptied, the request's objects go by reference counting.
            call.scratch.clear()

    def _keep_books(self, after: list[After], request_id: str) -> None:
        """Run the request's after-answer work in order; one failing does not stop the rest. The work is in
        process (gateway.stores.after_writes.after_answer); should a piece still need to await, it runs as a
        task of its own, counted in flight."""
        for work in after:
            try:
                pending = work()
            except Exception as exc:  # a bug: the answer is out, the log gets the type only
                log_error(request_id, exc)
                continue
            if pending is not None:
                self.activity.enter()
                asyncio.ensure_future(pending).add_done_callback(
                    partial(self._awaited, request_id=request_id)
                )
        # The work holds the call (which holds this list): emptied, reference counting frees them.
        after.clear()

    def _awaited(self, done: asyncio.Future[Any], request_id: str) -> None:
        self.activity.exit()
        if not done.cancelled() and done.exception() is not None:
            log_error(request_id, done.exception())  # type: ignore[arg-type]


class GatewayMiddleware:
    """The :class:`Envelope` around every HTTP request that takes FastAPI's path."""

    def __init__(self, app: ASGIApp, envelope: Envelope) -> None:
        self.app = app
        self.envelope = envelope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.envelope.serve(self.app, scope, receive, send)


def _shutting_down() -> GatewayError:
    return GatewayError(
        503,
        "The gateway is shutting down and stopped this request at its drain deadline; send it again.",
        "service_unavailable",
        "shutting_down",
        headers={"retry-after": "1"},
    )


async def _stopped(send: Send, scope: Scope, status: int) -> None:
    """End a response stopped by the drain deadline: a 503 envelope, or a last in-band error event."""
    error = _shutting_down()
    if status == 0:
        await _send_error(send, error)
        return
    if scope["path"].startswith("/v1/messages"):
        inner = {"type": "overloaded_error", "message": error.message}
        event = b"event: error\ndata: " + json.dumps({"type": "error", "error": inner}).encode() + b"\n\n"
    else:
        event = b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    with contextlib.suppress(OSError):  # the client went away meanwhile: nothing to end
        await send({"type": "http.response.body", "body": event, "more_body": False})


def _request_id(scope: Scope, ids: IdSource) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _REQUEST_ID_OK.match(value):
                return value.decode()
            break
    # With tracing on, a generated request id is the trace id, so users can quote either.
    return scope.get("state", {}).get("trace_id") or ids.hex32()


async def _send_error(send: Send, error: GatewayError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The error's own (the drain deadline's retry-after).
                *((name.encode(), value.encode()) for name, value in error.headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _record(
    scope: Scope, state: dict[str, Any], status: int, started: float, overhead_ms: float
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "request_id": state["request_id"],
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
        "overhead_ms": round(overhead_ms, 3),
    }
    if "trace_id" in state:  # log correlation (features.tracing): the request's server span
        record["trace_id"] = state["trace_id"]
        record["span_id"] = state["span_id"]
    call = state.get("call")
    if call is not None:
        record.update(
            key=call.key.name,
            key_id=call.key.key_id,
            team=call.key.team,
            model=call.model,
            stream=call.stream,
            route=call.response_headers.get("x-gateway-route"),
            attempts=call.attempts,
            upstream_ms=round(call.upstream_s * 1000.0, 3),
            cache=call.response_headers.get("x-gateway-cache"),
        )
    elif "key" in state:
        record["key"] = state["key"]
    return record
