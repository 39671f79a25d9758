"""The ``azure`` provider: Azure OpenAI deployments.

Azure OpenAI speaks OpenAI's request and response format, so this adapter is the OpenAI one with Azure's
URL shape and credentials:

- ``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``, required); a route's
  ``model`` is the **deployment** name. Requests go to
  ``{base_url}/openai/deployments/{deployment}/chat/completions?api-version=<options.api_version>``
  (``/embeddings`` likewise).
- ``api_key`` is sent as the ``api-key`` header, not as a Bearer token.
- Azure's content filter refuses prompts with 400 ``code: content_filter``: the client sees that 400 and code
  (never retried, like any invalid request). Stream chunks that carry only ``prompt_filter_results`` (no
  choices, no usage) are skipped so the canonical stream holds only OpenAI chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.config import ProviderConfig
from gateway.errors import GatewayError
from gateway.providers.base import ConfigProblems, HttpProvider, UpstreamRequest, options_problems
from gateway.providers.openai import OpenAIAdapter

AZURE_API_VERSION = "2024-10-21"
"""The default ``api-version``: Azure OpenAI's generally available version with streamed usage."""

_SUFFIXES = {"chat": "/chat/completions", "embeddings": "/embeddings"}


class AzureOptions(BaseModel):
    """``options:`` of an azure provider."""

    model_config = ConfigDict(extra="forbid")

    api_version: str = Field(default=AZURE_API_VERSION, min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)  # extra headers on every request

    @field_validator("api_version", mode="before")
    @classmethod
    def _unquoted_date(cls, value: Any) -> Any:
        # YAML reads an unquoted `api_version: 2024-10-21` as a date; it means the string.
        return value.isoformat() if isinstance(value, date) else value


class AzureAdapter(OpenAIAdapter):
    """The OpenAI translation with Azure's deployment URL and content-filter handling."""

    def __init__(self, api_version: str = AZURE_API_VERSION) -> None:
        self.query = "?api-version=" + quote(api_version, safe="")

    def build_request(self, endpoint: str, body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
        """OpenAI's body, sent to the deployment named by the route's ``model``."""
        spec = super().build_request(endpoint, body, model, stream)
        path = f"/openai/deployments/{quote(model, safe='')}{_SUFFIXES[endpoint]}{self.query}"
        return UpstreamRequest(path, spec.json, spec.headers)

    def parse_stream_line(self, line: str) -> dict[str, Any] | object | None:
        """OpenAI's stream, without Azure's filter-results-only chunks."""
        chunk = super().parse_stream_line(line)
        if isinstance(chunk, dict) and not chunk.get("choices") and not chunk.get("usage"):
            return None
        return chunk

    def map_error(self, status: int, data: Any, headers: Mapping[str, str]) -> GatewayError:
        """OpenAI's mapping; a content-filter refusal keeps its 400 and ``content_filter`` code."""
        error = data.get("error") if isinstance(data, dict) else None
        if status == 400 and isinstance(error, dict) and error.get("code") == "content_filter":
            message = error.get("message")
            detail = (
                message if isinstance(message, str) else "The request was refused by Azure's content filter."
            )
            return GatewayError(400, detail, "invalid_request_error", "content_filter")
        return super().map_error(status, data, headers)


class AzureOpenAIProvider(HttpProvider):
    """An Azure OpenAI resource over HTTP (``type: azure``)."""

    adapter: AzureAdapter

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(config, transport)
        self.adapter = AzureAdapter(AzureOptions.model_validate(config.options).api_version)

    @classmethod
    def default_headers(cls, config: ProviderConfig) -> dict[str, str]:
        """``api-key`` credentials plus configured extra headers."""
        headers = dict(AzureOptions.model_validate(config.options).headers)
        if config.api_key:
            headers["api-key"] = config.api_key
        return headers

    @classmethod
    def config_problems(cls, config: ProviderConfig) -> ConfigProblems:
        """``base_url`` is required (the resource endpoint); ``options`` follow :class:`AzureOptions`."""
        if not config.base_url:
            yield ("base_url",), "is required for an azure provider: https://<resource>.openai.azure.com"
        yield from options_problems(AzureOptions, config.options)
