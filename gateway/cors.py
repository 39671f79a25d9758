"""CORS for browser clients: ``server.cors`` (off by default), served by Starlette's ``CORSMiddleware``.

The protocol (preflight answers, ``Vary: Origin``, credentialed vs. wildcard origins) is Starlette's; this
module only holds the validated config and picks the middleware that matches the config a request runs
under, so a hot reload that changes ``server.cors`` applies to the next request without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# What the gateway's clients send: always allowed, whatever `allow_headers` adds.
REQUIRED_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "api-key",
    "anthropic-version",
    "anthropic-beta",
)

# What the gateway answers with that a browser script may want to read. Access-Control-Expose-Headers has
# no prefix wildcard (and `*` is refused with credentials), so every name is listed.
GATEWAY_HEADERS = (
    "x-request-id",
    "retry-after",
    "retry-after-ms",
    *(
        f"x-ratelimit-{what}-{kind}"
        for what in ("limit", "remaining", "reset")
        for kind in ("requests", "tokens")
    ),
    "x-gateway-attempts",
    "x-gateway-budget-remaining-usd",
    "x-gateway-budget-warning",
    "x-gateway-cache",
    "x-gateway-cache-ttl",
    "x-gateway-cost-final",
    "x-gateway-cost-usd",
    "x-gateway-dropped-params",
    "x-gateway-overhead-ms",
    "x-gateway-region",
    "x-gateway-route",
    "x-gateway-usage-source",
)


def _origin(value: str) -> str:
    """An exact origin (``scheme://host[:port]``, as browsers send it) or ``*``."""
    if value == "*":
        return value
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ValueError(
            f"'{value}' is not an origin: give scheme://host[:port] with no path or trailing slash, or '*'"
        )
    return value.lower()


def _token(value: str) -> str:
    if not value or any(c.isspace() or c in ",:" for c in value):
        raise ValueError(f"'{value}' is not a header or method name")
    return value


Origin = Annotated[str, AfterValidator(_origin)]
Token = Annotated[str, AfterValidator(_token)]


class CorsConfig(BaseModel):
    """``server.cors``: which browser origins may call the gateway, and what they may send and read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Declared before allow_origins so its validator can see it.
    allow_credentials: bool = False
    allow_origins: list[Origin] = Field(min_length=1)
    allow_methods: list[Token] = Field(default_factory=lambda: ["GET", "POST"])
    # Added to REQUIRED_HEADERS.
    allow_headers: list[Token] = Field(default_factory=list)
    # Added to GATEWAY_HEADERS.
    expose_headers: list[Token] = Field(default_factory=list)
    max_age: int = Field(default=600, ge=0, le=86400)

    @field_validator("allow_origins")
    @classmethod
    def _no_wildcard_with_credentials(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # Browsers refuse `Access-Control-Allow-Origin: *` on a credentialed request; Starlette would echo
        # any origin instead, which would let every site send the user's cookies: refused here.
        if "*" in value and info.data.get("allow_credentials"):
            index = value.index("*")
            raise ValueError(f"'*' (allow_origins[{index}]) cannot be used with allow_credentials: true")
        return value


class CorsMiddleware:
    """Starlette's ``CORSMiddleware`` configured from the ``server.cors`` a request runs under.

    ``config_of(scope)`` gives that section (None, or ``enabled: false``: requests pass untouched). One
    ``CORSMiddleware`` is built per distinct section and kept while it is the latest one seen.
    """

    def __init__(self, app: ASGIApp, config_of: Callable[[Scope], CorsConfig | None]) -> None:
        self.app = app
        self.config_of = config_of
        self._built: tuple[CorsConfig, ASGIApp] | None = None

    def _middleware(self, config: CorsConfig) -> ASGIApp:
        if self._built is not None and self._built[0] == config:
            return self._built[1]
        middleware = CORSMiddleware(
            self.app,
            allow_origins=config.allow_origins,
            allow_methods=config.allow_methods,
            allow_headers=list(dict.fromkeys([*REQUIRED_HEADERS, *config.allow_headers])),
            allow_credentials=config.allow_credentials,
            expose_headers=list(dict.fromkeys([*GATEWAY_HEADERS, *config.expose_headers])),
            max_age=config.max_age,
        )
        self._built = (config, middleware)
        return middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config_of(scope) if scope["type"] == "http" else None
        if config is None or not config.enabled:
            await self.app(scope, receive, send)
            return
        await self._middleware(config)(scope, receive, send)
