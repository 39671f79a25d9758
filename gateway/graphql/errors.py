"""How a :class:`~gateway.errors.GatewayError` reads as a GraphQL error: a GraphQL-style ``code`` in
``extensions`` beside what the REST API would have answered (``status``, ``type``, ``gatewayCode``,
``param``)."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from gateway.errors import GatewayError

CODES = {
    400: "BAD_USER_INPUT",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    412: "PRECONDITION_FAILED",
    422: "BAD_USER_INPUT",
    429: "RATE_LIMITED",
    501: "NOT_IMPLEMENTED",
}


def extensions(error: GatewayError) -> dict[str, Any]:
    """The ``extensions`` of the GraphQL error standing for ``error``."""
    return {
        "code": CODES.get(error.status, "UNAVAILABLE" if error.status >= 500 else "ERROR"),
        "status": error.status,
        "type": error.type,
        "gatewayCode": error.code,
        "param": error.param,
    }


def graphql_error(error: GatewayError) -> GraphQLError:
    """``error`` as a GraphQL error (for subscriptions, whose errors strawberry renders itself)."""
    return GraphQLError(error.message, extensions=extensions(error))
