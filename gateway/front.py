"""The front door: the inference routes served past FastAPI's own layers, everything else through them.

A profile of a production request (issue 20) put 18.5 % of its event-loop time, and 30 % of a cache hit's,
in the ASGI layers between uvicorn and the route: FastAPI's native telemetry check, its error, telemetry and
body-limit middlewares, the exception middleware, an ``AsyncExitStack``, the router's matching, Starlette's
``request_response`` with two more exception wrappers, each adding a ``send`` wrapper. None of them does
anything for an inference route: the gateway's own middlewares (runtime pin, CORS, tracing, request id,
overhead, access log, last-resort 500) and its exception handlers are the ones that shape its answer.

:class:`GatewayApp` is the FastAPI app with that short path: a request whose (method, path) is a hot route
(one dict lookup) goes to :class:`HotPath`, one layer doing what the gateway's middlewares do (the same
code: the runtime pin and the request envelope of gateway/middleware.py; CORS and tracing through their
own middlewares when the runtime has them on), around :class:`HotRoutes`, which calls the endpoint and
maps its exceptions with the app's exception handlers. Every other request (admin, console, GraphQL,
WebSocket, probes, a preflight, a wrong method on a hot path) and the lifespan go through FastAPI
unchanged. The hot routes stay registered with the router too, so they are listed, matched and served
the same way if a request reaches it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.middleware import Envelope
from gateway.runtime import RUNTIME_SCOPE_KEY, Runtime

Endpoint = Callable[[Request], Awaitable[Response]]
# The gateway's exception handlers are all coroutines taking the HTTP request (create_app).
Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """The innermost layer of the short path: the endpoint in ``scope["endpoint"]`` (set by the front, as
    Starlette's router sets it), its exceptions answered by ``handlers`` as Starlette's exception
    middleware and ``request_response`` would answer them; an exception with no handler propagates to the
    gateway's middleware (the 500 envelope)."""

    def __init__(self, handlers: dict[Any, Handler], status_handlers: dict[int, Handler]):
        self.handlers = handlers
        self.status_handlers = status_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await scope["endpoint"](request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            # A reused exception instance would otherwise accumulate tracebacks across requests.
            exc.__traceback__ = None
        # Exceptions while sending are not mapped: nothing can answer once the status line is out, and an
        # SSE body reports its own errors in-band (gateway/routes/openai.py).
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        if isinstance(exc, HTTPException) and exc.status_code in self.status_handlers:
            return self.status_handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None


class HotPath:
    """The hot routes' gateway middlewares in one layer: the runtime pin (as ``RuntimeMiddleware``) and the
    :class:`~gateway.middleware.Envelope` (as ``GatewayMiddleware``) around the endpoints, with one ``send``
    wrapper, the envelope's.

    CORS and tracing do nothing for a request whose runtime has them off, which is the default; a runtime
    with either on takes ``full``, every user middleware built as FastAPI builds them, so their protocol
    stays in one place (gateway/cors.py, gateway/features/tracing_http.py).
    """

    def __init__(
        self, current: Callable[[], Runtime], envelope: Envelope, endpoints: ASGIApp, full: ASGIApp
    ) -> None:
        self.current = current
        self.envelope = envelope
        self.endpoints = endpoints
        self.full = full

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.current()
        cors = runtime.config.server.cors
        if runtime.tracing is not None or (cors is not None and cors.enabled):
            await self.full(scope, receive, send)
            return
        scope[RUNTIME_SCOPE_KEY] = runtime
        runtime.acquire()
        try:
            await self.envelope.serve(self.endpoints, scope, receive, send)
        finally:
            runtime.release()


class GatewayApp(FastAPI):
    """FastAPI with a front door for the hot routes (:meth:`add_hot_route`); see the module docstring."""

    def __init__(
        self,
        *,
        current: Callable[[], Runtime],
        envelope: Envelope,
        forwarded_allow_ips: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        # What the hot path needs of the gateway: its running runtime and the request envelope.
        self.current = current
        self.envelope = envelope
        self.hot_routes: dict[tuple[str, str], Endpoint] = {}
        self._hot_stack: ASGIApp | None = None
        # `gateway run` turns uvicorn's proxy-headers middleware off and hands its trusted addresses here:
        # only FastAPI's routes read the client address (admin sign-in throttling, the audit log) or the
        # scheme (the console's Secure cookie); the hot routes read neither, and skip that layer.
        self._fallback: ASGIApp = super().__call__
        if forwarded_allow_ips is not None:
            # uvicorn types its middleware with its own ASGI types, Starlette's are the plain mappings.
            proxied = ProxyHeadersMiddleware(super().__call__, trusted_hosts=forwarded_allow_ips)  # type: ignore[arg-type]
            self._fallback = cast(ASGIApp, proxied)

    def add_hot_route(self, path: str, endpoint: Endpoint, method: str = "POST") -> None:
        """Serve ``method path`` (an exact path, no parameters) by the short path, and register it with
        the router as ``add_route`` would (the fallback, and what the route table lists)."""
        self.add_route(path, endpoint, methods=[method], include_in_schema=False)
        self.hot_routes[(method, path)] = endpoint

    def build_hot_stack(self) -> ASGIApp:
        """:class:`HotPath` around :class:`HotRoutes` with the app's exception handlers (the ones its
        exception middleware uses: all but 500 and Exception); its ``full`` stack is the app's user
        middlewares around the same endpoints."""
        handlers: dict[Any, Handler] = {}
        status_handlers: dict[int, Handler] = {}
        for key, handler in self.exception_handlers.items():
            if isinstance(key, int):
                if key != 500:
                    status_handlers[key] = cast(Handler, handler)
            elif key is not Exception:
                handlers[key] = cast(Handler, handler)
        endpoints = HotRoutes(handlers, status_handlers)
        full: ASGIApp = endpoints
        for cls, args, kwargs in reversed(self.user_middleware):
            full = cls(full, *args, **kwargs)
        return HotPath(self.current, self.envelope, endpoints, full)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.hot_routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                if self._hot_stack is None:
                    self._hot_stack = self.build_hot_stack()
                scope["app"] = self
                scope["endpoint"] = endpoint
                await self._hot_stack(scope, receive, send)
                return
        await self._fallback(scope, receive, send)
