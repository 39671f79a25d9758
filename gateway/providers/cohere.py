"""The ``cohere`` provider: Cohere's v2 API (``POST /v2/chat``, ``POST /v2/embed``).

``base_url`` is the API root without ``/v2`` (default ``https://api.cohere.com``), ``api_key`` is sent as a
Bearer token. Cohere v2 messages are close to OpenAI's (the same roles, ``tool_calls`` and ``tool`` messages),
so messages pass through with only the fields Cohere knows; parameters and values are translated with the
tables below. Streams (``message-start``, ``content-delta``, ``tool-call-start``/``-delta``, ``message-end``
with usage) are folded into canonical chunks by a per-stream adapter. Embeddings send ``input`` as ``texts``
with ``options.input_type`` and answer OpenAI's ``list`` of vectors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway.config import ProviderConfig, RouteConfig
from gateway.errors import GatewayError, invalid_request, upstream_error
from gateway.params import ParamSupport
from gateway.pipeline import Call, Response, Result
from gateway.providers.base import ConfigProblems, HttpProvider, UpstreamRequest, now, options_problems
from gateway.providers.openai import OpenAIAdapter
from gateway.schema import chat_chunk

COHERE_BASE_URL = "https://api.cohere.com"

RENAMED_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "max_tokens": "max_tokens",
        "max_completion_tokens": "max_tokens",  # after max_tokens: it wins when both are set
        "temperature": "temperature",
        "top_p": "p",
        "seed": "seed",
        "frequency_penalty": "frequency_penalty",
        "presence_penalty": "presence_penalty",
    }
)
"""Canonical request field → Cohere v2 field (same value); ``stop`` becomes the list ``stop_sequences``."""

FINISH_OF_COHERE: Mapping[str, str] = MappingProxyType(
    {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls"}
)
"""Cohere ``finish_reason`` → canonical ``finish_reason`` (``ERROR`` and ``TIMEOUT`` are upstream errors)."""

TOOL_CHOICE_TO_COHERE: Mapping[str, str | None] = MappingProxyType(
    {"auto": None, "required": "REQUIRED", "none": "NONE"}
)
"""Canonical ``tool_choice`` → Cohere ``tool_choice`` (None: leave it out, Cohere's default is auto)."""

MESSAGE_FIELDS = ("role", "content", "tool_calls", "tool_call_id")
"""The message fields Cohere v2 accepts; ``developer`` messages are sent as ``system``."""


class CohereOptions(BaseModel):
    """``options:`` of a cohere provider."""

    model_config = ConfigDict(extra="forbid")

    input_type: str = "search_document"  # embeddings: search_document, search_query, classification...
    headers: dict[str, str] = Field(default_factory=dict)  # extra headers on every request


COHERE_PARAMS = ParamSupport(frozenset({*RENAMED_PARAMS, "stop", "tools", "tool_choice"}))
"""What :func:`chat_to_cohere` translates. Not ``n`` > 1, ``logprobs``, ``response_format`` (Cohere's JSON
mode is not mapped), ``parallel_tool_calls: false``, ``logit_bias``, ``user``, ``metadata``."""


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: wire data is walked without trusting it."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> int:
    # Cohere counts billed units as floats (12.0); an infinite or NaN one (JSON's 1e400) is not a count.
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else -1
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(usage: Any) -> dict[str, int]:
    # tokens: what the model used; billed_units: what Cohere bills (older answers carry only that).
    counts = _obj(_obj(usage).get("tokens") or _obj(usage).get("billed_units"))
    prompt, completion = _number(counts.get("input_tokens")), _number(counts.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(reason: Any) -> str:
    if reason in ("ERROR", "TIMEOUT"):
        raise upstream_error(502, f"Upstream ended the answer with {reason}.", "upstream_error")
    return FINISH_OF_COHERE.get(reason, "stop") if isinstance(reason, str) else "stop"


def chat_to_cohere(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The Cohere v2 chat request for a canonical chat request sent to upstream ``model``."""
    messages = []
    for message in body.get("messages") or []:
        out = {k: message[k] for k in MESSAGE_FIELDS if message.get(k) is not None}
        if out.get("role") == "developer":
            out["role"] = "system"
        messages.append(out)
    request: dict[str, Any] = {"model": model, "messages": messages}
    for name, cohere in RENAMED_PARAMS.items():
        if body.get(name) is not None:
            request[cohere] = body[name]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if isinstance(tools, list) and tools:
        if isinstance(choice, dict):
            # Cohere cannot name the tool to call: offer only that one and require a call.
            name = _obj(choice.get("function")).get("name") or ""
            tools = [t for t in tools if isinstance(t, dict) and _obj(t.get("function")).get("name") == name]
            request["tool_choice"] = "REQUIRED"
        elif isinstance(choice, str) and TOOL_CHOICE_TO_COHERE.get(choice):
            request["tool_choice"] = TOOL_CHOICE_TO_COHERE[choice]
        request["tools"] = tools
    if stream:
        request["stream"] = True
    return request


def cohere_to_chat(data: dict[str, Any], created: int) -> dict[str, Any]:
    """The canonical chat completion for a Cohere v2 chat answer."""
    message = _obj(data.get("message"))
    content = message.get("content")
    text = "".join(
        p.get("text", "") for p in content or [] if isinstance(p, dict) and isinstance(p.get("text"), str)
    )
    calls = message.get("tool_calls") or []
    canonical: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        canonical["tool_calls"] = [
            {"id": c.get("id") or "", "type": "function", "function": c.get("function") or {}}
            for c in calls
            if isinstance(c, dict)
        ]
    return {
        "id": data.get("id") or "",
        "object": "chat.completion",
        "created": created,
        "model": "",
        "choices": [
            {
                "index": 0,
                "message": canonical,
                "logprobs": None,
                "finish_reason": _finish(data.get("finish_reason")),
            }
        ],
        "usage": _usage(data.get("usage")),
    }


class CohereAdapter:
    """Translation between the canonical format and Cohere v2; one instance per stream (its state)."""

    def __init__(self, input_type: str = "search_document", model: str = "") -> None:
        self.input_type = input_type
        self.model = model
        self.id = ""
        self.created = now()
        self.tool_calls = 0

    def build_request(self, endpoint: str, body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
        """``/v2/chat`` with the translated body, or ``/v2/embed`` with ``texts``."""
        if endpoint == "chat":
            return UpstreamRequest("/v2/chat", chat_to_cohere(body, model, stream), {})
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise invalid_request("Cohere embeddings take text input, not token arrays.", param="input")
        payload = {
            "model": model,
            "texts": texts,
            "input_type": self.input_type,
            "embedding_types": ["float"],
        }
        if body.get("dimensions") is not None:
            # v2 embed's output_dimension (embed-v4.0 and later); models without it answer Cohere's 400.
            payload["output_dimension"] = body["dimensions"]
        return UpstreamRequest("/v2/embed", payload, {})

    def parse_response(self, endpoint: str, data: Any) -> dict[str, Any]:
        """The canonical chat completion or embeddings list."""
        if not isinstance(data, dict):
            raise upstream_error(502, "Upstream answered with a non-object JSON body.", "upstream_invalid")
        if endpoint == "chat":
            return cohere_to_chat(data, now())
        vectors = _obj(data.get("embeddings")).get("float") or []
        if not isinstance(vectors, list):
            raise upstream_error(502, "Upstream embeddings.float is not a list.", "upstream_invalid")
        tokens = _number(_obj(_obj(data.get("meta")).get("billed_units")).get("input_tokens"))
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": "",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chat_chunk(self.id, self.created, self.model, delta, finish)

    def parse_stream_line(self, line: str) -> dict[str, Any] | object | None:
        """One event (an SSE ``data:`` line, or a bare JSON line) as a canonical chunk, or None."""
        payload = line[5:] if line.startswith("data:") else line
        try:
            event = json.loads(payload)
        except ValueError:
            return None  # event: lines, comments
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        delta = _obj(event.get("delta"))
        message = _obj(delta.get("message"))
        if kind == "message-start":
            self.id = str(event.get("id") or "")
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content-delta":
            text = _obj(message.get("content")).get("text")
            return self._chunk({"content": text}) if isinstance(text, str) and text else None
        if kind == "tool-call-start":
            call = _obj(message.get("tool_calls"))
            function = _obj(call.get("function"))
            self.tool_calls += 1
            start = {
                "index": self.tool_calls - 1,
                "id": call.get("id") or "",
                "type": "function",
                "function": {
                    "name": function.get("name") or "",
                    "arguments": function.get("arguments") or "",
                },
            }
            return self._chunk({"tool_calls": [start]})
        if kind == "tool-call-delta":
            arguments = _obj(_obj(message.get("tool_calls")).get("function")).get("arguments")
            if not isinstance(arguments, str) or not arguments:
                return None
            return self._chunk(
                {"tool_calls": [{"index": self.tool_calls - 1, "function": {"arguments": arguments}}]}
            )
        if kind == "message-end":
            finish = self._chunk({}, _finish(delta.get("finish_reason")))
            # One event becomes one chunk, so the usage rides on the finish chunk (OpenAI clients accept it).
            finish["usage"] = _usage(delta.get("usage"))
            return finish
        return None  # content-start/-end, tool-plan-delta, tool-call-end, citations

    def map_error(self, status: int, data: Any, headers: Mapping[str, str]) -> GatewayError:
        """Cohere's ``{"message": ...}`` errors, mapped like OpenAI's (429 passes, 5xx become 502/503/504)."""
        message = data.get("message") if isinstance(data, dict) else None
        shaped = {"error": {"message": message}} if isinstance(message, str) else data
        return OpenAIAdapter().map_error(status, shaped, headers)


class CohereProvider(HttpProvider):
    """A Cohere v2 upstream over HTTP (``type: cohere``)."""

    params = COHERE_PARAMS

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(config, transport)
        self.base_url = config.base_url or COHERE_BASE_URL
        self.options = CohereOptions.model_validate(config.options)
        self.adapter = CohereAdapter(self.options.input_type)

    def stream_parser(self, call: Call) -> Callable[[str], dict[str, Any] | object | None]:
        """A fresh adapter's parser: the stream's id and tool-call count live in it."""
        return CohereAdapter(self.options.input_type).parse_stream_line

    async def chat(self, call: Call, route: RouteConfig) -> Result:
        """Cohere's answers do not name the model: the route's upstream model is filled in."""
        result = await super().chat(call, route)
        if isinstance(result, Response):
            result.body["model"] = route.model or call.model
        return result

    async def embeddings(self, call: Call, route: RouteConfig) -> Response:
        """Cohere's embed answers do not name the model either: the route's upstream model is filled in."""
        result = await super().embeddings(call, route)
        result.body["model"] = route.model or call.model
        return result

    @classmethod
    def default_headers(cls, config: ProviderConfig) -> dict[str, str]:
        """Bearer credentials plus configured extra headers."""
        headers = dict(CohereOptions.model_validate(config.options).headers)
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        return headers

    @classmethod
    def config_problems(cls, config: ProviderConfig) -> ConfigProblems:
        """Validate ``options`` against :class:`CohereOptions`."""
        return options_problems(CohereOptions, config.options)
