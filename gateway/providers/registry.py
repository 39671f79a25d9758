"""Provider ``type`` → adapter class. Adding a provider: one module, one line here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import httpx

from gateway.config import GatewayConfig
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import Provider, ProviderType
from gateway.providers.cohere import CohereProvider
from gateway.providers.mock import MockProvider
from gateway.providers.openai import OpenAIProvider

PROVIDER_TYPES: Mapping[str, ProviderType] = MappingProxyType(
    {
        "anthropic": AnthropicProvider,
        "azure": AzureOpenAIProvider,
        "cohere": CohereProvider,
        "mock": MockProvider,
        "openai": OpenAIProvider,
    }
)


def build_providers(config: GatewayConfig, transport: httpx.AsyncBaseTransport) -> dict[str, Provider]:
    """One provider instance per ``providers:`` entry, by name, sharing the pooled transport."""
    return {p.name: PROVIDER_TYPES[p.type](p, transport) for p in config.providers}
