"""Cohere v2 wire format as a server speaks it: the reverse of :mod:`gateway.providers.cohere`.

The ``cohere`` provider translates canonical requests into Cohere v2 requests and Cohere answers back. The
mock upstream (``gateway mock-upstream``) plays Cohere, so it needs the other direction: a Cohere v2 chat or
embed request → the canonical request, and a canonical answer, stream or embeddings list → Cohere v2's. The
tables here are the provider's read backwards; the round trip canonical → Cohere → canonical is tested to be
the identity on the fields both formats keep (tests/gateway/test_cohere_format.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.errors import invalid_request
from gateway.providers.cohere import MESSAGE_FIELDS
from gateway.providers.mock import MAX_EMBEDDING_DIMS as MAX_DIMS

CHAT_PARAMS_OF_COHERE: Mapping[str, str] = MappingProxyType(
    {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "p": "top_p",
        "seed": "seed",
        "frequency_penalty": "frequency_penalty",
        "presence_penalty": "presence_penalty",
    }
)
"""Cohere v2 request field → canonical field (the provider's ``RENAMED_PARAMS`` read backwards);
``stop_sequences`` becomes ``stop``."""

TOOL_CHOICE_OF_COHERE: Mapping[str, str] = MappingProxyType({"REQUIRED": "required", "NONE": "none"})
"""Cohere ``tool_choice`` → canonical ``tool_choice`` (absent is auto in both)."""

COHERE_FINISH: Mapping[str, str] = MappingProxyType(
    {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL", "content_filter": "ERROR"}
)
"""Canonical ``finish_reason`` → Cohere ``finish_reason``."""

ROLES = frozenset({"system", "user", "assistant", "tool"})

Event = tuple[str, dict[str, Any]]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical chat request for a Cohere v2 chat request; 400 naming the field when invalid."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid_request("'messages' must be a non-empty array.", param="messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            where = f"messages[{i}].role"
            raise invalid_request(f"'{where}' must be one of {', '.join(sorted(ROLES))}.", param=where)
        messages.append({k: message[k] for k in MESSAGE_FIELDS if message.get(k) is not None})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    for cohere, canonical in CHAT_PARAMS_OF_COHERE.items():
        if body.get(cohere) is not None:
            chat[canonical] = body[cohere]
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid_request("'stop_sequences' must be an array of strings.", param="stop_sequences")
        if stop:
            chat["stop"] = stop
    if body.get("tools") is not None:
        if not isinstance(body["tools"], list):
            raise invalid_request("'tools' must be an array.", param="tools")
        chat["tools"] = body["tools"]
    choice = body.get("tool_choice")
    if choice is not None:
        if choice not in TOOL_CHOICE_OF_COHERE:
            raise invalid_request("'tool_choice' must be REQUIRED or NONE.", param="tool_choice")
        chat["tool_choice"] = TOOL_CHOICE_OF_COHERE[choice]
    if body.get("stream") is True:
        chat["stream"] = True
    return chat


def _usage(usage: Any) -> dict[str, Any]:
    usage = _obj(usage)
    counts = {
        "input_tokens": usage.get("prompt_tokens", 0),
        "output_tokens": usage.get("completion_tokens", 0),
    }
    # Cohere answers both: what the model used and what is billed (equal for a mock).
    return {"billed_units": dict(counts), "tokens": counts}


def _finish(reason: Any) -> str:
    return COHERE_FINISH.get(reason, "COMPLETE") if isinstance(reason, str) else "COMPLETE"


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = _obj(call.get("function"))
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
    }


def chat_to_response(body: dict[str, Any]) -> dict[str, Any]:
    """The Cohere v2 chat answer for a canonical chat completion (its first choice: Cohere has one)."""
    choices = body.get("choices")
    choice = _obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = _obj(choice.get("message"))
    out: dict[str, Any] = {"role": "assistant"}
    text = message.get("content")
    if isinstance(text, str) and text:
        out["content"] = [{"type": "text", "text": text}]
    calls = [_tool_call(c) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if calls:
        out["tool_calls"] = calls
    return {
        "id": body.get("id") or "",
        "finish_reason": _finish(choice.get("finish_reason")),
        "message": out,
        "usage": _usage(body.get("usage")),
    }


class ChatEvents:
    """Canonical chunks → Cohere v2 stream events, for one stream (its state: open content, tool calls).

    Cohere streams ``message-start``, then per text ``content-start``/``content-delta``*/``content-end`` and
    per tool call ``tool-call-start``/``tool-call-delta``*/``tool-call-end``, then ``message-end`` carrying
    the finish reason and usage (the canonical stream's last, usage-only chunk).
    """

    def __init__(self, response_id: str) -> None:
        self.id = response_id
        self.started = False
        self.content_open = False
        self.tool_open: int | None = None  # the canonical index of the open tool call
        self.finish: Any = None
        self.usage: Any = None

    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        message = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
        return [("message-start", {"id": self.id, "type": "message-start", "delta": {"message": message}})]

    def _close(self) -> list[Event]:
        events: list[Event] = []
        if self.content_open:
            events.append(("content-end", {"type": "content-end", "index": 0}))
            self.content_open = False
        if self.tool_open is not None:
            events.append(("tool-call-end", {"type": "tool-call-end", "index": self.tool_open}))
            self.tool_open = None
        return events

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events for one canonical chunk (``message-start`` before the first)."""
        events = self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one answer per Cohere message
            delta = _obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if not self.content_open:
                    events += self._close()
                    self.content_open = True
                    start = {"message": {"content": {"type": "text", "text": ""}}}
                    events.append(("content-start", {"type": "content-start", "index": 0, "delta": start}))
                content = {"message": {"content": {"text": text}}}
                events.append(("content-delta", {"type": "content-delta", "index": 0, "delta": content}))
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(_obj(call))
            if choice.get("finish_reason") is not None:
                self.finish = choice["finish_reason"]
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[Event]:
        position = call.get("index", 0)
        function = _obj(call.get("function"))
        events: list[Event] = []
        if position != self.tool_open:
            events += self._close()
            self.tool_open = position
            opened = _tool_call({**call, "function": {**function, "arguments": ""}})
            start = {"message": {"tool_calls": opened}}
            events.append(("tool-call-start", {"type": "tool-call-start", "index": position, "delta": start}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"message": {"tool_calls": {"function": {"arguments": arguments}}}}
            events.append(("tool-call-delta", {"type": "tool-call-delta", "index": position, "delta": delta}))
        return events

    def finish_events(self) -> list[Event]:
        """The closing events: the open content or tool call's end, then ``message-end``."""
        events = self._start() + self._close()
        delta = {"finish_reason": _finish(self.finish), "usage": _usage(self.usage)}
        events.append(("message-end", {"type": "message-end", "delta": delta}))
        return events


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One Cohere v2 server-sent event: ``event:`` names its ``type``, ``data:`` holds it."""
    payload = json.dumps(data, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def embed_to_request(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical embeddings request for a Cohere v2 embed request (``texts``, float vectors only)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid_request("'texts' must be a non-empty array of strings.", param="texts")
    types = body.get("embedding_types")
    if types is not None and types != ["float"]:
        raise invalid_request("Only 'float' embeddings are served here.", param="embedding_types")
    request: dict[str, Any] = {"model": model, "input": texts}
    dimension = body.get("output_dimension")
    if dimension is not None:
        # Checked here so the error names Cohere's field, not the canonical ``dimensions``.
        if not (isinstance(dimension, int) and not isinstance(dimension, bool) and 0 < dimension <= MAX_DIMS):
            message = f"'output_dimension' must be an integer from 1 to {MAX_DIMS}."
            raise invalid_request(message, param="output_dimension")
        request["dimensions"] = dimension
    return request


def embeddings_to_response(body: dict[str, Any], texts: list[str], response_id: str) -> dict[str, Any]:
    """The Cohere v2 embed answer (``embeddings_by_type``) for a canonical embeddings list."""
    data = sorted((_obj(d) for d in body.get("data") or []), key=lambda d: d.get("index", 0))
    tokens = _obj(body.get("usage")).get("prompt_tokens", 0)
    return {
        "id": response_id,
        "embeddings": {"float": [d.get("embedding") for d in data]},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }


def error_body(message: str) -> dict[str, Any]:
    """Cohere's error envelope: just a ``message``."""
    return {"message": message}
