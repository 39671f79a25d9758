"""The ``openai`` provider: any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, another gateway).

``base_url`` is the API root including ``/v1`` (default ``https://api.openai.com/v1``), ``api_key`` is
sent as a Bearer token. Requests pass through unchanged except ``model`` (the route's upstream model) and
``stream_options.include_usage``, which is always on so usage is known for every stream. With
``options.responses: native``, ``/v1/responses`` requests go to the upstream's ``/responses`` unchanged
(gateway/providers/openai_responses.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway import jsonio
from gateway.config import ProviderConfig, RouteConfig
from gateway.errors import GatewayError, upstream_error
from gateway.pipeline import Call, Result
from gateway.providers.base import (
    DONE,
    ConfigProblems,
    HttpProvider,
    UpstreamRequest,
    map_upstream_status,
    options_problems,
    upstream_rate_limited,
)
from gateway.providers.openai_responses import NATIVE, ResponsesUpstream

OPENAI_BASE_URL = "https://api.openai.com/v1"
_PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}


class OpenAIOptions(BaseModel):
    """``options:`` of an openai provider."""

    model_config = ConfigDict(extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict)  # extra headers, e.g. OpenAI-Organization
    organization: str | None = None
    # /v1/responses: "translate" to chat (any upstream), or "native": sent to the upstream's /responses
    # unchanged, for upstreams that speak the Responses API (gateway/providers/openai_responses.py).
    responses: Literal["translate", "native"] = "translate"


class OpenAIAdapter:
    """Translation for OpenAI-compatible upstreams: mostly the identity."""

    def build_request(self, endpoint: str, body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
        """The client's body with the upstream model name (and usage always on for streams)."""
        payload = {**body, "model": model}
        if stream:
            options = body.get("stream_options")
            payload["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return UpstreamRequest(_PATHS[endpoint], payload, {})

    def parse_response(self, endpoint: str, data: Any) -> dict[str, Any]:
        """The upstream body is already canonical."""
        if not isinstance(data, dict):
            raise upstream_error(502, "Upstream answered with a non-object JSON body.", "upstream_invalid")
        return data

    def parse_stream_line(self, line: str) -> dict[str, Any] | object | None:
        """``data: {...}`` lines are chunks; ``data: [DONE]`` ends; comments and other fields are skipped."""
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            return DONE
        try:
            chunk = jsonio.loads(payload)
        except ValueError:
            return None
        if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise upstream_error(
                502, f"Upstream stream error: {error.get('message', 'unknown')}", "upstream_stream"
            )
        return chunk

    def map_error(self, status: int, data: Any, headers: Mapping[str, str]) -> GatewayError:
        """Client-side errors pass through; upstream auth problems and faults become 502/503/504."""
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = message if isinstance(message, str) else f"HTTP {status}"
        if status == 429:
            return upstream_rate_limited(detail, headers)
        if status in (400, 404, 409, 413, 422):
            code = (
                error.get("code") if isinstance(error, dict) and isinstance(error.get("code"), str) else None
            )
            param = (
                error.get("param")
                if isinstance(error, dict) and isinstance(error.get("param"), str)
                else None
            )
            return GatewayError(
                400 if status != 413 else 413, detail, "invalid_request_error", code, param=param
            )
        return map_upstream_status(status, detail)


class OpenAIProvider(HttpProvider):
    """An OpenAI-compatible upstream over HTTP (``type: openai``)."""

    adapter = OpenAIAdapter()

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(config, transport)
        self.base_url = config.base_url or OPENAI_BASE_URL
        # Read by the /v1/responses route: an alias whose every route is native is not translated.
        self.native_responses = config.options.get("responses") == "native"
        self._responses = (
            ResponsesUpstream(
                config, transport, chat=self.adapter, base_url=self.base_url, headers=self.auth_headers
            )
            if self.native_responses
            else None
        )

    async def chat(self, call: Call, route: RouteConfig) -> Result:
        """A chat request, or the client's Responses request when the route marked the call native."""
        if self._responses is not None and call.scratch.get(NATIVE):
            return await self._responses.chat(call, route)
        return await super().chat(call, route)

    @classmethod
    def default_headers(cls, config: ProviderConfig) -> dict[str, str]:
        """Bearer credentials plus configured extra headers."""
        options = OpenAIOptions.model_validate(config.options)
        headers = dict(options.headers)
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        if options.organization:
            headers["openai-organization"] = options.organization
        return headers

    @classmethod
    def config_problems(cls, config: ProviderConfig) -> ConfigProblems:
        """Validate ``options`` against :class:`OpenAIOptions`."""
        return options_problems(OpenAIOptions, config.options)
