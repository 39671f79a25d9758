"""The ``anthropic`` provider: an upstream speaking Anthropic's Messages API (``POST /v1/messages``).

``base_url`` is the API root without ``/v1`` (default ``https://api.anthropic.com``; a trailing ``/v1`` is
accepted too), ``api_key`` is sent as ``x-api-key`` with the ``anthropic-version`` header. The canonical
request is translated with the tables of :mod:`gateway.formats.anthropic` (system messages to ``system``,
``stop`` to ``stop_sequences``, tools and tool results to content blocks, temperature clamped to 0-1,
``max_tokens`` required upstream so a default fills it); answers and streams come back canonical, the stream
ending with a usage chunk like every provider's. Anthropic has no embeddings endpoint: such requests get 400.

A request that came in on ``/v1/messages`` carries the client's own body
(:mod:`gateway.formats.anthropic_native`): that body is sent instead of the translation, with the client's
``anthropic-version`` and ``anthropic-beta`` headers, so Claude-only fields (``cache_control``, ``thinking``,
``top_k``...) reach the upstream unchanged; the upstream's message or stream events are recorded for the
route to answer unchanged, and still translated to canonical for the pipeline (usage, budgets, cache).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway.config import ProviderConfig, RouteConfig
from gateway.errors import GatewayError, invalid_request, upstream_error
from gateway.formats.anthropic import ANTHROPIC_VERSION, chat_to_request, message_to_chat
from gateway.formats.anthropic_native import SCRATCH_KEY, NativeExchange, upstream_body
from gateway.formats.anthropic_stream import ChunkTranslator
from gateway.params import ParamSupport
from gateway.pipeline import Call
from gateway.providers.base import (
    ConfigProblems,
    HttpProvider,
    UpstreamRequest,
    map_upstream_status,
    now,
    options_problems,
    upstream_rate_limited,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
"""Sent as ``max_tokens`` (required by Anthropic) when the canonical request sets no limit."""

INVALID_STATUSES = frozenset({400, 404, 409, 422})

ANTHROPIC_PARAMS = ParamSupport(
    frozenset(
        {
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "temperature",
            "top_p",
            "tools",
            "tool_choice",
            "parallel_tool_calls",  # false → disable_parallel_tool_use
            "user",  # → metadata.user_id
        }
    )
)
"""What :func:`~gateway.formats.anthropic.chat_to_request` translates. Not ``n`` > 1, ``logprobs``, ``seed``,
``response_format`` (no JSON mode in the Messages API), penalties, ``logit_bias``, OpenAI's ``metadata``."""


class AnthropicOptions(BaseModel):
    """``options:`` of an anthropic provider."""

    model_config = ConfigDict(extra="forbid")

    version: str = ANTHROPIC_VERSION  # the anthropic-version header
    beta: list[str] = Field(default_factory=list)  # anthropic-beta flags, joined with commas
    headers: dict[str, str] = Field(default_factory=dict)  # extra headers


class AnthropicAdapter:
    """Translation between the canonical format and the Messages API.

    Requests, answers and errors are stateless; a stream's events carry state (message id, tool-call
    positions, usage) from line to line, so :meth:`AnthropicProvider.stream_parser` uses a fresh adapter
    for every stream.
    """

    def __init__(self) -> None:
        self._stream = ChunkTranslator(now())

    def build_request(self, endpoint: str, body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
        """``POST /v1/messages`` with the translated body; embeddings are refused (400)."""
        if endpoint != "chat":
            raise invalid_request(
                "Anthropic upstreams have no embeddings endpoint.", code="unsupported_endpoint"
            )
        return UpstreamRequest("/v1/messages", chat_to_request(body, model, stream, DEFAULT_MAX_TOKENS), {})

    def parse_response(self, endpoint: str, data: Any) -> dict[str, Any]:
        """The canonical chat completion for an Anthropic ``message``."""
        if not isinstance(data, dict) or data.get("type") != "message":
            raise upstream_error(
                502, "Upstream answered with something other than a message.", "upstream_invalid"
            )
        return message_to_chat(data, now())

    def parse_stream_line(self, line: str) -> dict[str, Any] | object | None:
        """``data:`` lines are events (each names its ``type``); ``event:`` lines and comments are skipped."""
        if not line.startswith("data:"):
            return None
        try:
            event = json.loads(line[5:])
        except ValueError:
            return None
        return self._stream.feed(event) if isinstance(event, dict) else None

    def map_error(self, status: int, data: Any, headers: Mapping[str, str]) -> GatewayError:
        """Anthropic's error envelope mapped to the gateway's statuses (529 overloaded → 503)."""
        error = data.get("error") if isinstance(data, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = message if isinstance(message, str) else f"HTTP {status}"
        if status == 429:
            return upstream_rate_limited(detail, headers)
        if status == 529 or kind == "overloaded_error":
            return upstream_error(503, f"Upstream overloaded: {detail}", "upstream_overloaded")
        if status == 413:
            return GatewayError(413, detail, "invalid_request_error", "request_too_large")
        if status in INVALID_STATUSES:
            return GatewayError(400, detail, "invalid_request_error", kind if isinstance(kind, str) else None)
        return map_upstream_status(status, detail)


class AnthropicProvider(HttpProvider):
    """An Anthropic Messages API upstream over HTTP (``type: anthropic``)."""

    adapter = AnthropicAdapter()
    params = ANTHROPIC_PARAMS

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(config, transport)
        base = config.base_url or ANTHROPIC_BASE_URL
        # The adapter's path starts with /v1, so a base URL written the OpenAI way (…/v1) loses it here.
        self.base_url = base[: -len("/v1")] if base.endswith("/v1") else base

    def stream_parser(self, call: Call) -> Callable[[str], dict[str, Any] | object | None]:
        """A fresh adapter's parser (the stream's state lives in it); for a native request it also records
        each upstream event, as received, for the ``/v1/messages`` route to send on."""
        parse = AnthropicAdapter().parse_stream_line
        exchange = _native(call)
        if exchange is None:
            return parse
        event_type = ""

        def record(line: str) -> dict[str, Any] | object | None:
            nonlocal event_type
            if line.startswith("event:"):
                event_type = line[6:].strip()
            elif line.startswith("data:"):
                exchange.events.append((event_type, line[5:].strip()))
            return parse(line)

        return record

    def upstream_request(
        self, endpoint: str, call: Call, route: RouteConfig, stream: bool
    ) -> UpstreamRequest:
        """The client's body and ``anthropic-*`` headers for a native request; the translation otherwise."""
        exchange = _native(call)
        if exchange is None or endpoint != "chat":
            return super().upstream_request(endpoint, call, route, stream)
        exchange.begin(self.name)
        headers = dict(exchange.headers)
        configured = self.auth_headers.get("anthropic-beta")
        if configured and "anthropic-beta" in headers:
            # The operator's flags and the client's: both asked for, neither may silently disappear.
            flags = [f.strip() for f in f"{configured},{headers['anthropic-beta']}".split(",") if f.strip()]
            headers["anthropic-beta"] = ",".join(dict.fromkeys(flags))
        return UpstreamRequest(
            "/v1/messages", upstream_body(exchange, route.model or call.model, stream), headers
        )

    def parse_answer(self, call: Call, endpoint: str, data: Any) -> dict[str, Any]:
        """The canonical body; for a native request the upstream's message is kept for the route too."""
        body = super().parse_answer(call, endpoint, data)
        exchange = _native(call)
        if exchange is not None and exchange.provider == self.name:
            exchange.message = data
        return body

    @classmethod
    def default_headers(cls, config: ProviderConfig) -> dict[str, str]:
        """``x-api-key``, ``anthropic-version``, ``anthropic-beta`` and configured extra headers."""
        options = AnthropicOptions.model_validate(config.options)
        headers = {**options.headers, "anthropic-version": options.version}
        if options.beta:
            headers["anthropic-beta"] = ",".join(options.beta)
        if config.api_key:
            headers["x-api-key"] = config.api_key
        return headers

    @classmethod
    def config_problems(cls, config: ProviderConfig) -> ConfigProblems:
        """Validate ``options`` against :class:`AnthropicOptions`."""
        return options_problems(AnthropicOptions, config.options)


def _native(call: Call) -> NativeExchange | None:
    exchange = call.scratch.get(SCRATCH_KEY)
    return exchange if isinstance(exchange, NativeExchange) else None
