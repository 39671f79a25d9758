"""Every provider adapter turns any upstream JSON into a canonical answer or a GatewayError, never a crash
(which a client would see as a 500): property tests with arbitrary JSON, Anthropic- and Cohere-shaped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.azure import AzureAdapter
from gateway.providers.cohere import CohereAdapter
from gateway.providers.openai import OpenAIAdapter

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(
        ["text", "tool_use", "message_start", "content_block_delta", "COMPLETE", "content-delta"]
    ),
)
keys = st.sampled_from(
    ["choices", "usage", "content", "type", "message", "delta", "index", "text", "data", "id", "input",
     "stop_reason", "finish_reason", "tool_calls", "function", "name", "arguments", "input_tokens",
     "output_tokens", "tokens", "billed_units", "embeddings", "float", "content_block", "error"]
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(keys | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
ADAPTERS = {
    "openai": OpenAIAdapter,
    "azure": AzureAdapter,
    "anthropic": AnthropicAdapter,
    "cohere": CohereAdapter,
}


@pytest.mark.parametrize("name", ADAPTERS)
@given(data=values)
@settings(max_examples=150, deadline=None)
def test_parse_response_never_crashes(name: str, data: Any) -> None:
    adapter = ADAPTERS[name]()
    for endpoint in ("chat", "embeddings"):
        try:
            body = adapter.parse_response(endpoint, data)
        except GatewayError:
            continue
        assert isinstance(body, dict)


@pytest.mark.parametrize("name", ADAPTERS)
@given(events=st.lists(values, max_size=4))
@settings(max_examples=150, deadline=None)
def test_parse_stream_line_never_crashes(name: str, events: list[Any]) -> None:
    adapter = ADAPTERS[name]()
    for event in events:
        try:
            adapter.parse_stream_line("data: " + json.dumps(event))
        except GatewayError:
            return
