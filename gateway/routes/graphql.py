"""``/graphql`` (``features.graphql.enabled``): strawberry's FastAPI router over :mod:`gateway.graphql`.

The caller is authenticated before any query is parsed (a FastAPI dependency: 401 in the gateway's error
envelope, like every other route); what it may read is decided by the data-access functions. Errors a
resolver raises are :class:`~gateway.errors.GatewayError`\\ s, rendered as GraphQL errors whose
``extensions`` carry a GraphQL-style ``code`` (``FORBIDDEN``, ``BAD_USER_INPUT``...), the HTTP status the
REST API would answer, and ``param`` naming the bad argument; any other exception is logged and masked.

The schema, its limits and whether the route exists are read at start: a reload changing ``features.graphql``
is rejected as needing a restart (gateway/reload.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse
from strawberry.dataloader import DataLoader
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from gateway.errors import GatewayError
from gateway.graphql.access import authenticate
from gateway.graphql.data import GraphQLData
from gateway.graphql.errors import extensions as error_extensions
from gateway.graphql.ide import GraphiQLAssets
from gateway.graphql.persisted import PersistedQueries, load_allowlist
from gateway.graphql.schema import build_schema

if TYPE_CHECKING:
    from gateway.app import Gateway

PATH = "/graphql"

LIMITS = (
    ("maximum operation depth", "QUERY_TOO_DEEP", "max_depth"),
    ("aliases found. Allowed", "TOO_MANY_ALIASES", "max_aliases"),
    ("Document contains more than", "QUERY_TOO_LONG", "max_tokens"),
    ("introspection has been disabled", "INTROSPECTION_DISABLED", "introspection"),
)


class GatewayGraphQLRouter(GraphQLRouter[dict[str, Any], None]):
    """strawberry's router with the gateway's error rendering (see the module docstring)."""

    def __init__(self, gateway: Gateway, **options: Any) -> None:
        super().__init__(**options)
        self.gateway = gateway
        self.ide: GraphiQLAssets | None = None
        if options.get("graphql_ide") is not None:
            # GraphiQL's page and assets from the package (gateway/graphql/ide.py), never from a CDN.
            self.ide = GraphiQLAssets(PATH)
            self.add_api_route(
                f"{PATH}/static/{{name}}", self.ide.endpoint(), methods=["GET"], include_in_schema=False
            )

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        """The gateway's GraphiQL page (its assets served by the gateway, under a strict CSP)."""
        assert self.ide is not None  # strawberry renders the page only when graphql_ide is set
        return self.ide.page_response()

    def _error(self, error: GraphQLError) -> dict[str, Any]:
        formatted: dict[str, Any] = dict(error.formatted)
        original = error.original_error
        if isinstance(original, GatewayError):
            formatted["message"] = self.gateway.redactor.text(original.message)
            formatted["extensions"] = error_extensions(original)
        elif original is not None:
            # Not ours: never show its text (it may quote anything); GatewaySchema logged its type.
            formatted["message"] = "Internal error."
            formatted["extensions"] = {"code": "INTERNAL_SERVER_ERROR", "status": 500}
        else:
            extensions = dict(formatted.get("extensions") or {})
            # strawberry's limit extensions say what was exceeded but not which setting to change.
            for words, code, key in LIMITS:
                if words in formatted["message"]:
                    formatted["message"] += f" (features.graphql.{key})"
                    extensions.setdefault("code", code)
            extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
            formatted["extensions"] = extensions
        return formatted

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """The response body, with each error rendered by :meth:`_error`."""
        body: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            body["errors"] = [self._error(error) for error in result.errors]
        if result.extensions:
            body["extensions"] = result.extensions
        return body


def router(gateway: Gateway) -> GraphQLRouter[dict[str, Any], None]:
    """The ``/graphql`` router for the running config's ``features.graphql``."""
    config = gateway.config.features.graphql

    # HTTPConnection: the same dependency authenticates a POST and a WebSocket handshake (subscriptions).
    async def context(request: HTTPConnection) -> dict[str, Any]:
        if config.graphiql and request.scope["type"] == "http" and request.scope["method"] == "GET":
            # The GraphiQL page holds no data, and a browser navigating to it cannot send a key; queries are
            # refused over GET (allow_queries_via_get), and the page's own are POSTs, authenticated below.
            return {"data": None}
        client = request.client.host if request.client else "unknown"
        caller = await authenticate(gateway, request.headers, client)
        state = request.scope.setdefault("state", {})
        state["key"] = caller.name  # the access log names the caller
        data = GraphQLData(gateway, caller, state.get("request_id"))
        # Per request: a loader's cache must never serve one caller's answer to another.
        return {
            "data": data,
            "budgets": DataLoader(load_fn=data.key_budgets),
            # Keyed by the key's id: the views are dicts, and the same key listed twice is read once.
            "rate_limits": DataLoader(load_fn=data.key_rate_limits, cache_key_fn=lambda view: view["id"]),
        }

    return GatewayGraphQLRouter(
        gateway,
        schema=build_schema(config, _persisted(gateway)),
        path=PATH,
        graphql_ide="graphiql" if config.graphiql else None,
        # Queries over GET would put them (and their arguments) in URLs and logs: POST only.
        allow_queries_via_get=False,
        context_getter=context,
        # Subscriptions: graphql-transport-ws only (the legacy graphql-ws protocol is unmaintained). The
        # handshake carries the key in its headers, which a browser cannot set: no cross-site socket.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=timedelta(seconds=10),
        max_subscriptions_per_connection=config.max_subscriptions,
        include_in_schema=False,
    )


def _persisted(gateway: Gateway) -> PersistedQueries:
    """The gateway's persisted queries (``features.graphql.persisted_queries``). Off is answered too
    (``PERSISTED_QUERY_NOT_SUPPORTED``), so an APQ client falls back to full queries. The allowlist file
    was checked when the config loaded; it is read once more here."""
    config = gateway.config.features.graphql
    path = config.persisted_queries_file
    allowlist = None if path is None else load_allowlist(path)
    ttl = config.persisted_queries_ttl_s
    return PersistedQueries(config.persisted_queries, gateway.store, ttl, allowlist)
