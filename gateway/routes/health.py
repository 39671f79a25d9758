"""Probes: ``/health`` (liveness: the process answers) and ``/ready`` (readiness: started, neither draining
for a shutdown nor closing)."""

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
        if gateway.activity.draining:
            # Shutting down: out of rotation first, while what is in flight finishes (gateway/shutdown.py).
            in_flight = max(gateway.activity.in_flight - 1, 0)  # minus this probe
            body = {"status": "draining", "detail": f"shutting down; {in_flight} request(s) finishing"}
            return JSONResponse(body, status_code=503)
        if not gateway.started:
            await gateway.start()
        state: dict[str, object] = {"backend": gateway.store.backend, "reachable": await gateway.store.ping()}
        shared = gateway.shared.global_store
        if shared is not None:
            # Multi-region: the store every region shares is reported, and judged, beside the region's.
            state["global"] = {"backend": shared.backend, "reachable": await shared.ping()}
            state["reachable"] = state["reachable"] and state["global"]["reachable"]  # type: ignore[index]
        if not state["reachable"] and gateway.config.state.on_error == "fail_closed":
            # Requests that need the shared state would get 503 anyway: take this replica out of rotation.
            return JSONResponse({"status": "state store unreachable", "state": state}, status_code=503)
        return JSONResponse({"status": "ready", "models": len(gateway.models), "state": state})

    app.add_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_route("/ready", ready, methods=["GET"], include_in_schema=False)
