"""Probes: ``/health`` (liveness: the process answers) and ``/ready`` (readiness: started, not closing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import __version__

if TYPE_CHECKING:
    from gateway.app import Gateway


def add_routes(app: FastAPI, gateway: Gateway) -> None:
    """Register the probes for ``gateway``."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(request: Request) -> Response:
        if gateway.closing:
            return JSONResponse({"status": "closing"}, status_code=503)
        if not gateway.started:
            await gateway.start()
        return JSONResponse({"status": "ready", "models": len(gateway.models)})

    app.add_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_route("/ready", ready, methods=["GET"], include_in_schema=False)
