"""The app factory: ``create_app(config)`` builds one gateway with no module-level state.

Everything a request needs (key ring, model table, providers, the bound stage chain) is built from the
config into one :class:`~gateway.runtime.Runtime`, held by the :class:`Gateway` object the routes close
over; a hot reload (gateway/reload.py) swaps in a new runtime, and each request keeps the one it
arrived with.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from fastapi import APIRouter, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import __version__
from gateway.admin.service import AdminService
from gateway.auth import KeyRing
from gateway.config import ConfigError, GatewayConfig, ModelConfig
from gateway.cors import CorsMiddleware
from gateway.errors import GatewayError, state_store_unavailable
from gateway.features.tracing_http import TracingMiddleware
from gateway.front import GatewayApp
from gateway.logging import AccessLog
from gateway.metrics_sources import sampler
from gateway.middleware import Envelope, GatewayMiddleware
from gateway.openapi import openapi_document
from gateway.pipeline import Handler, KeyIdentity, Stage, run_hooks
from gateway.redact import Redactor, config_key_digests, config_secrets
from gateway.reload import Reloader
from gateway.runtime import Runtime, RuntimeMiddleware, SharedState, build_runtime, runtime_of
from gateway.shutdown import Activity
from gateway.stores import StoreUnavailable

if TYPE_CHECKING:
    from gateway.providers.base import Provider


class Gateway:
    """One gateway instance: the current :class:`Runtime` (everything derived from the config, swapped
    whole by a hot reload) and the state that outlives it (store, usage ledger).

    ``source`` is the config file the gateway was started with, re-read by a reload (None: nothing to
    reload). The config-derived attributes (``config``, ``keys``, ``models``, ``stages``...) are the
    running runtime's, for code outside a request; a request uses the runtime pinned to it
    (:meth:`snapshot`), so a reload never changes the config under it.
    """

    def __init__(
        self,
        config: GatewayConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        source: Path | None = None,
    ) -> None:
        # Shared state (rate limits, cache, budgets, cooldowns; the usage ledger): survives reloads.
        self.shared = SharedState.open(config)
        self.store = self.shared.store
        # Runtime virtual keys, admin key management and its audit log (gateway/admin/).
        self.admin = AdminService.open(config, self.store, lambda: self.config)
        # An injected transport (tests) serves every runtime and is closed with the app.
        self.injected_transport = transport
        self.reloader = Reloader(self, source)
        label = str(self.reloader.source) if self.reloader.source is not None else "<config object>"
        self.runtime: Runtime = build_runtime(config, self.shared, transport=transport, source=label)
        # Set by `gateway run`: reload on SIGHUP (only the main thread of a process can handle signals).
        self.sighup = False
        # Error messages may quote an upstream, which may quote a credential: redacted when rendered.
        self._redactor = (self.runtime, Redactor.from_config(config))
        self.started = False
        self.closing = False
        # Requests and streams in flight, open sockets, and whether a shutdown is draining them.
        self.activity = Activity()
        self._start_lock = asyncio.Lock()

    @property
    def redactor(self) -> Redactor:
        """Redacts the secrets of the running config, and of earlier ones (their requests may still run)."""
        runtime, redactor = self._redactor
        if runtime is not self.runtime:
            config = self.runtime.config
            redactor = redactor.extended(config_secrets(config), config_key_digests(config))
            self._redactor = (self.runtime, redactor)
        return redactor

    @property
    def config(self) -> GatewayConfig:
        """The running config."""
        return self.runtime.config

    @property
    def keys(self) -> KeyRing:
        """The running key ring."""
        return self.runtime.keys

    @property
    def models(self) -> dict[str, ModelConfig]:
        """The running model table, by alias."""
        return self.runtime.models

    @property
    def max_body_bytes(self) -> int:
        """The running request body limit."""
        return self.runtime.max_body_bytes

    @property
    def providers(self) -> dict[str, Provider]:
        """The running providers, by name."""
        return self.runtime.providers

    @property
    def stages(self) -> list[Stage]:
        """The running stage chain, in order."""
        return self.runtime.stages

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The running upstream transport."""
        return self.runtime.transport

    @property
    def handle(self) -> Handler:
        """The running bound stage chain."""
        return self.runtime.handle

    @handle.setter
    def handle(self, handler: Handler) -> None:
        # Tests replace the chain of the running runtime.
        self.runtime.handle = handler

    def snapshot(self, request: Request) -> Runtime:
        """The runtime pinned to ``request`` when it arrived (the running one if none was pinned)."""
        return runtime_of(request.scope) or self.runtime

    async def start(self) -> None:
        """Run every stage's ``start`` hook once (the lifespan calls this; requests do too if it did not)."""
        async with self._start_lock:
            if not self.started:
                await run_hooks(self.stages, "start")
                self.started = True
                self.reloader.start(sighup=self.sighup)
                if self.shared.metrics is not None:
                    self.shared.metrics.start(sampler(self), self.config.features.metrics.listen)

    async def drain(self) -> bool:
        """Report draining, let what is in flight finish within ``server.drain_timeout_s``, close every
        WebSocket with 1012 (gateway/shutdown.py); True when everything finished in time."""
        return await self.activity.drain(self.config.server.drain_timeout_s)

    async def close(self) -> None:
        """Stop reloading, run the running stages' ``close`` hooks in reverse order, then close the
        upstream transports and the store."""
        self.closing = True
        try:
            await self.reloader.close()
            if self.shared.metrics is not None:
                await self.shared.metrics.close()
            if self.started:
                await run_hooks(reversed(self.stages), "close")
        finally:
            self.started = False
            await self.runtime.aclose()
            if self.injected_transport is not None:
                await self.injected_transport.aclose()
            await self.shared.close_stores()
            await self.admin.close()

    def resolve(self, key: KeyIdentity, model: str) -> ModelConfig:
        """The model config for ``model``; 404 when unknown, 403 when ``key`` may not use it."""
        return self.runtime.resolve(key, model)

    def visible_models(self, key: KeyIdentity) -> list[str]:
        """The aliases ``key`` may use, in config order."""
        return self.runtime.visible_models(key)


def create_app(
    config: GatewayConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    config_path: Path | None = None,
    sighup: bool = False,
    forwarded_allow_ips: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``config``; ``transport`` replaces the upstream HTTP transport (tests).

    ``config_path`` is the file ``config`` was loaded from: ``POST /admin/reload``, SIGHUP (with
    ``sighup``, for ``gateway run``) and ``features.reload.watch`` re-read it (see gateway/reload.py).
    ``forwarded_allow_ips`` (``gateway run``, which turns uvicorn's own handling off): the addresses
    whose ``X-Forwarded-For``/``-Proto`` set the client address and scheme, as uvicorn's
    ``forwarded_allow_ips`` (gateway/front.py).
    """
    from gateway.routes import (
        admin,
        admin_v1,
        anthropic,
        azure,
        completions,
        console,
        health,
        litellm,
        openai,
        responses,
        usage,
        ws,
    )

    gateway = Gateway(config, transport, source=config_path)
    gateway.sighup = sighup

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    # FastAPI's /docs, /redoc and /openapi.json would list the admin API to anyone, without a key: off.
    # /openapi.json is served instead from gateway/openapi.py, describing the client API only.
    # One envelope (request ids, access log, in-flight count) for both paths a request can take.
    envelope = Envelope(AccessLog(), gateway.activity)
    app = GatewayApp(
        current=lambda: gateway.runtime,
        envelope=envelope,
        forwarded_allow_ips=forwarded_allow_ips,
        title="LLM gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # A trailing-slash redirect would build its Location from the client's Host header (an open redirect):
    # a path with a stray slash is a 404 instead.
    app.router.redirect_slashes = False
    app.state.gateway = gateway
    openai.add_routes(app, gateway)
    anthropic.add_routes(app, gateway)
    completions.add_routes(app, gateway)
    responses.add_routes(app, gateway)
    azure.add_routes(app, gateway)
    ws.add_routes(app, gateway)
    health.add_routes(app, gateway)
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    app.add_route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)
    app.include_router(admin.router(gateway))
    app.include_router(admin_v1.router(gateway))
    app.include_router(litellm.router(gateway))  # /key/generate & co. for LiteLLM tooling
    app.include_router(usage.metrics_router(gateway))
    if config.features.console.enabled:  # read at start: a reload can turn it off (404s), not on
        app.include_router(console.router(gateway))
    if config.features.graphql.enabled:
        app.include_router(_graphql_router(gateway))

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        call = request.scope["state"].get("call")
        headers = {**call.response_headers, **exc.headers} if call is not None else exc.headers
        if openai.wants_anthropic(request):
            return anthropic.error_response(request, anthropic.redacted(exc, gateway.redactor), headers)
        # Every refusal (429, 402, 400) goes out this way: encoded once with orjson like the answers.
        return openai.json_response(gateway.redactor.body(exc), exc.status, headers)

    async def store_error(request: Request, exc: Exception) -> Response:
        # fail_closed and the shared state store is down: a stage without its own handling let it through.
        return await gateway_error(request, state_store_unavailable())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = GatewayError(
            exc.status_code, str(exc.detail), "invalid_request_error", _http_code(exc.status_code)
        )
        if openai.wants_anthropic(request):
            # A 404 or 405 under /v1/messages (a batch call, a GET) in the envelope Anthropic's SDK parses.
            return anthropic.error_response(request, error, dict(exc.headers or {}))
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(StoreUnavailable, store_error)
    app.add_middleware(GatewayMiddleware, envelope=envelope)
    # Around the access log (so it carries the trace id), inside the runtime pin (which holds the tracer).
    app.add_middleware(TracingMiddleware)
    # Outside the access log and auth, so a preflight needs no key and errors carry CORS headers too;
    # inside the runtime pin, so a reload that changes server.cors applies from the next request.
    app.add_middleware(
        CorsMiddleware, config_of=lambda scope: (runtime_of(scope) or gateway.runtime).config.server.cors
    )
    # Outermost: each request holds the runtime it arrived with until its response is fully sent.
    app.add_middleware(RuntimeMiddleware, current=lambda: gateway.runtime)
    return app


def _graphql_router(gateway: Gateway) -> APIRouter:
    """``/graphql``; imported only when enabled, since strawberry is an optional extra."""
    try:
        from gateway.routes import graphql
    except ImportError as exc:
        raise ConfigError(
            "features.graphql",
            [f"features.graphql.enabled: needs the graphql extra "
             f"(pip install 'llm-gateway-planner[graphql]'): {exc}"],
        ) from None  # fmt: skip
    return graphql.router(gateway)


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
