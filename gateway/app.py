"""The app factory: ``create_app(config)`` builds one gateway with no module-level state.

Everything a request needs is computed once here (key ring, model table, providers, the bound stage
chain) and held by one :class:`Gateway` object that the routes close over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import __version__
from gateway.auth import KeyRing
from gateway.config import GatewayConfig, ModelConfig
from gateway.errors import GatewayError, model_not_allowed, state_store_unavailable, unknown_model
from gateway.features.budgets import budget_stage
from gateway.features.cache import CacheStage
from gateway.features.ratelimit import rate_limit_stage
from gateway.features.routing import RoutingStage
from gateway.features.usage import usage_stage
from gateway.logging import AccessLog
from gateway.middleware import GatewayMiddleware
from gateway.pipeline import KeyIdentity, Stage, build_chain, run_hooks
from gateway.providers.registry import build_providers
from gateway.redact import Redactor
from gateway.stores import StoreUnavailable, open_store
from gateway.tls import upstream_transport
from gateway.transport import default_transport


def build_stages(config: GatewayConfig, gateway: Gateway) -> list[Stage]:
    """The pipeline after authentication, in order: rate limit → budget → cache → router.

    Each feature adds one line here (``if config.features.<name>: stages.append(...)``), in that order.
    """
    stages: list[Stage] = []
    # First, so every request the pipeline sees is costed and recorded, cache hits and refusals included.
    stages.append(usage := usage_stage(config))
    if (limiter := rate_limit_stage(config, gateway.store)) is not None:
        stages.append(limiter)
    if (budgets := budget_stage(config, gateway.store, usage)) is not None:
        stages.append(budgets)
    if config.features.cache:
        stages.append(CacheStage(config.features.cache, gateway.store))
    stages.append(RoutingStage(config.features.routing, gateway.providers, gateway.models, gateway.store))
    return stages


class Gateway:
    """One gateway instance: config, keys, models, providers and the stage chain, built once."""

    def __init__(self, config: GatewayConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.keys = KeyRing(config.auth)
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self.max_body_bytes = config.server.max_body_bytes
        # Error messages may quote an upstream, which may quote a credential: redacted when rendered.
        self.redactor = Redactor.from_config(config)
        if transport is None:
            # Providers with `tls:` settings get their own pool per origin; the rest share the default.
            transport = upstream_transport(config.providers, default_transport())
        # Providers send straight through the transport (no httpx.AsyncClient layer: see providers/base.py).
        self.transport = transport
        self.providers = build_providers(config, transport)
        # Shared state (rate limits, cache, budgets, cooldowns): memory, or Redis when state.redis_url is set.
        self.store = open_store(config.state)
        self.stages = build_stages(config, self)
        self.handle = build_chain(self.stages)
        self.started = False
        self.closing = False
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        """Run every stage's ``start`` hook once (the lifespan calls this; requests do too if it did not)."""
        async with self._start_lock:
            if not self.started:
                await run_hooks(self.stages, "start")
                self.started = True

    async def close(self) -> None:
        """Run every stage's ``close`` hook in reverse order, then close the upstream transport."""
        self.closing = True
        try:
            if self.started:
                await run_hooks(reversed(self.stages), "close")
        finally:
            self.started = False
            await self.transport.aclose()
            await self.store.close()

    def resolve(self, key: KeyIdentity, model: str) -> ModelConfig:
        """The model config for ``model``; 404 when unknown, 403 when ``key`` may not use it."""
        config = self.models.get(model)
        if config is None:
            raise unknown_model(model)
        if not key.may_use(model):
            raise model_not_allowed(model)
        return config

    def visible_models(self, key: KeyIdentity) -> list[str]:
        """The aliases ``key`` may use, in config order."""
        return [name for name in self.models if key.may_use(name)]


def create_app(config: GatewayConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """A FastAPI app serving ``config``; ``transport`` replaces the upstream HTTP transport (tests)."""
    from gateway.routes import admin, health, openai, usage

    gateway = Gateway(config, transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    # No /docs, /redoc or /openapi.json: they would list the admin API to anyone, without a key.
    app = FastAPI(
        title="LLM gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway
    openai.add_routes(app, gateway)
    health.add_routes(app, gateway)
    app.include_router(admin.router(gateway))
    app.include_router(usage.metrics_router(gateway))

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        call = request.scope["state"].get("call")
        headers = {**call.response_headers, **exc.headers} if call is not None else exc.headers
        return JSONResponse(gateway.redactor.body(exc), status_code=exc.status, headers=headers)

    async def store_error(request: Request, exc: Exception) -> Response:
        # fail_closed and the shared state store is down: a stage without its own handling let it through.
        return await gateway_error(request, state_store_unavailable())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = GatewayError(
            exc.status_code, str(exc.detail), "invalid_request_error", _http_code(exc.status_code)
        )
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(StoreUnavailable, store_error)
    app.add_middleware(GatewayMiddleware, access_log=AccessLog())
    return app


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
