"""Gateway errors and their OpenAI-envelope rendering.

Every failure a client can see is a :class:`GatewayError`; routes render it as
``{"error": {"message", "type", "param", "code"}}`` with the status codes of DESIGN.md:
400 invalid request, 401 bad key, 403 model not allowed, 404 unknown model, 413 body too large,
429 rate limit or budget, 502/503/504 upstream failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class GatewayError(Exception):
    """An error answered to the client in the OpenAI error envelope.

    ``headers`` are added to the error response (e.g. ``retry-after`` on 429). Messages are shown to
    clients verbatim, so they must never contain a key, an upstream credential or a traceback.
    """

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.message!r}, type={self.type!r}, code={self.code!r})"


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    """400: the request body is not a valid request."""
    return GatewayError(400, message, "invalid_request_error", code, param=param)


def bad_key(message: str = "Invalid API key.") -> GatewayError:
    """401: no key, or a key the gateway does not know."""
    return GatewayError(401, message, "authentication_error", "invalid_api_key")


def model_not_allowed(model: str) -> GatewayError:
    """403: the key exists but may not use this model."""
    return GatewayError(
        403,
        f"This key may not use the model '{model}'.",
        "permission_error",
        "model_not_allowed",
        param="model",
    )


def unknown_model(model: str) -> GatewayError:
    """404: the model alias is not configured."""
    return GatewayError(
        404, f"The model '{model}' does not exist.", "invalid_request_error", "model_not_found", param="model"
    )


def body_too_large(limit: int) -> GatewayError:
    """413: the request body is over ``server.max_body_bytes``."""
    return GatewayError(
        413, f"Request body is larger than {limit} bytes.", "invalid_request_error", "request_too_large"
    )


def upstream_error(status: int, message: str, code: str = "upstream_error") -> GatewayError:
    """502/503/504: the upstream failed, was unreachable or timed out."""
    return GatewayError(status, message, "upstream_error", code)


def state_store_unavailable() -> GatewayError:
    """503: the shared state store (Redis) is unreachable and ``state.on_error`` is ``fail_closed``."""
    return GatewayError(
        503,
        "The gateway's shared state store is unavailable; try again shortly.",
        "service_unavailable",
        "state_store_unavailable",
        headers={"retry-after": "1"},
    )
