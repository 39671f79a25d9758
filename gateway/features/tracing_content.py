"""Opt-in content capture for traces (``features.tracing.capture_content``): prompts and completions in
the OpenTelemetry GenAI semantic conventions' message form.

``gen_ai.input.messages`` and ``gen_ai.output.messages`` are span attributes holding JSON (the
conventions allow a JSON string on spans): a list of ``{"role", "parts": [...]}`` (outputs add
``finish_reason``), parts being ``{"type": "text", "content"}``, ``{"type": "tool_call", "id", "name",
"arguments"}`` or ``{"type": "tool_call_response", "id", "result"}``; other parts (images, audio) keep
their type only, never their data. Every text is redacted of the config's credentials first, then the
texts of one attribute share a budget of ``max_content_chars`` characters: what is past it is cut, and
the attribute ``gateway.content.truncated`` says so.

Nothing here runs unless the config asks: with ``capture_content: false`` no content is read at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.redact import Redactor

INPUT = "gen_ai.input.messages"
OUTPUT = "gen_ai.output.messages"
TRUNCATED = "gateway.content.truncated"
_CUT = "…"


@dataclass
class Budget:
    """The characters of text one attribute may still take, redacting each text on the way in."""

    redactor: Redactor
    left: int
    truncated: bool = False

    def take(self, text: Any) -> str:
        """``text`` redacted, cut to what is left of the budget."""
        value = self.redactor.text(text if isinstance(text, str) else json.dumps(text, default=str))
        if len(value) <= self.left:
            self.left -= len(value)
            return value
        self.truncated = True
        kept, self.left = value[: self.left], 0
        return kept + _CUT


def input_messages(messages: Any, budget: Budget) -> str:
    """The request's ``messages`` (OpenAI chat form) as ``gen_ai.input.messages`` JSON."""
    out = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        role = message.get("role") if isinstance(message.get("role"), str) else "user"
        parts = _content_parts(message.get("content"), budget)
        if role == "tool":
            parts = [
                {
                    "type": "tool_call_response",
                    "id": message.get("tool_call_id"),
                    "result": "".join(p.get("content", "") for p in parts),
                }
            ]
        parts.extend(_tool_calls(message.get("tool_calls"), budget))
        out.append({"role": role, "parts": parts})
    return json.dumps(out, ensure_ascii=False)


def output_messages(choices: Any, budget: Budget) -> str:
    """A chat completion's ``choices`` as ``gen_ai.output.messages`` JSON (one message per choice)."""
    out = []
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if not isinstance(message, dict):
            message = {}
        parts = _content_parts(message.get("content"), budget)
        parts.extend(_tool_calls(message.get("tool_calls"), budget))
        out.append({"role": "assistant", "parts": parts, "finish_reason": choice.get("finish_reason")})
    return json.dumps(out, ensure_ascii=False)


@dataclass
class StreamedOutput:
    """A stream's choices put together from its chunks' deltas, bounded by ``limit`` characters each."""

    limit: int
    choices: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, chunk: dict[str, Any]) -> None:
        """Add one chunk's deltas (text past the limit is not kept: the budget would cut it anyway)."""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                continue
            kept = self.choices.setdefault(choice.get("index", 0), {"content": "", "finish_reason": None})
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and len(kept["content"]) <= self.limit:
                kept["content"] += text
            if isinstance(choice.get("finish_reason"), str):
                kept["finish_reason"] = choice["finish_reason"]

    def as_choices(self) -> list[dict[str, Any]]:
        """The choices in the non-streamed response's form."""
        return [
            {"message": {"content": c["content"]}, "finish_reason": c["finish_reason"]}
            for _, c in sorted(self.choices.items())
        ]


def _content_parts(content: Any, budget: Budget) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": budget.take(content)}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "content": budget.take(part.get("text", ""))})
        elif isinstance(kind, str):
            parts.append({"type": kind})  # an image or audio: its kind, never its bytes or URL
    return parts


def _tool_calls(calls: Any, budget: Budget) -> list[dict[str, Any]]:
    parts = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": budget.take(function.get("arguments", "")),
                }
            )
    return parts
