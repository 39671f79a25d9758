"""The ASGI seam of tracing: a SERVER span around each HTTP request whose runtime has tracing on.

Kept apart from :mod:`gateway.features.tracing` so the app can always install it without importing the
OpenTelemetry SDK: with tracing off the cost per request is one scope lookup and a branch.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.runtime import runtime_of


class TracingMiddleware:
    """Runs each request inside its runtime's server span (inside RuntimeMiddleware, outside the log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = runtime_of(scope) if scope["type"] == "http" else None
        tracing = runtime.tracing if runtime is not None else None
        if tracing is None:
            await self.app(scope, receive, send)
            return
        await tracing.serve(self.app, scope, receive, send)
