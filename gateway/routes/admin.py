"""The admin API (``/admin/...``), guarded by the master key.

Feature helpers add their endpoints to :func:`router` with ``dependencies=[master]`` semantics already
applied: every route on the returned router requires the master key (401 otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request

from gateway import __version__
from gateway.catalog import features_report
from gateway.errors import GatewayError
from gateway.features.cache import cache_endpoint
from gateway.features.routing import routes_endpoint
from gateway.reload import config_endpoint, reload_endpoint
from gateway.routes import usage

if TYPE_CHECKING:
    from gateway.app import Gateway


def master_key_dependency(gateway: Gateway) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency raising 401 unless the request carries the master key."""

    async def require_master(request: Request) -> None:
        if not gateway.keys.is_master(request.headers):
            raise GatewayError(
                401, "The admin API needs the master key.", "authentication_error", "invalid_api_key"
            )

    return require_master


def router(gateway: Gateway) -> APIRouter:
    """The ``/admin`` router; every endpoint on it requires the master key."""
    admin = APIRouter(prefix="/admin", dependencies=[Depends(master_key_dependency(gateway))])
    # Feature endpoints are added below, one registration per feature.
    admin.add_api_route("/features", features_endpoint(gateway), methods=["GET"])
    admin.add_api_route("/cache", cache_endpoint(gateway), methods=["GET"])
    admin.add_api_route("/routes", routes_endpoint(gateway), methods=["GET"])
    usage.add_routes(admin, gateway)  # /admin/usage, /admin/budgets
    admin.add_api_route("/config", config_endpoint(gateway), methods=["GET"])
    admin.add_api_route("/reload", reload_endpoint(gateway), methods=["POST"])
    return admin


def features_endpoint(gateway: Gateway) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``GET /admin/features``: the gateway version and each feature this build implements (see
    ``gateway/catalog.py``), keyed by slug, with whether the running config enables it."""

    async def features() -> dict[str, Any]:
        return {"version": __version__, "features": features_report(gateway.config)}

    return features
