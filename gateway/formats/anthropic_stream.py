"""Anthropic Messages streams ⇄ canonical ``chat.completion.chunk`` streams: two small state machines.

Anthropic streams typed server-sent events::

    message_start
    (content_block_start, content_block_delta*, content_block_stop)*
    message_delta, message_stop

- :class:`MessageEvents` (the ``/v1/messages`` route) turns canonical chunks into that sequence: text deltas
  open a ``text`` block, each new tool call closes the open block and opens a ``tool_use`` block, the finish
  reason and the final usage chunk become ``message_delta``. Canonical streams carry usage only at the end,
  so ``message_start`` reports zero tokens and ``message_delta`` the real counts (input tokens included).
- :class:`ChunkTranslator` (the ``anthropic`` provider) turns Anthropic events back into canonical chunks,
  ending with a usage-only chunk as every provider does.

Both keep per-stream state, so each stream gets its own instance.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import GatewayError, upstream_error
from gateway.formats.anthropic import (
    FINISH_OF_STOP_REASON,
    STOP_REASON_OF_FINISH,
    error_body,
    obj,
    usage_to_anthropic,
    usage_to_chat,
)
from gateway.schema import chat_chunk

Event = tuple[str, dict[str, Any]]


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One Anthropic server-sent event: an ``event:`` line naming its ``type``, then its ``data:``."""
    return (
        b"event: " + name.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    )


def error_event(error: GatewayError) -> bytes:
    """The in-band ``error`` event a stream ends with when it fails after its headers were sent."""
    return sse("error", error_body(error))


class MessageEvents:
    """Canonical chunks → Anthropic stream events, for one stream."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.started = False
        self.index = -1  # the index of the last block opened
        self.open: str | None = None  # "text", "tool:<n>" or None
        self.tool_blocks: dict[int, int] = {}  # canonical tool-call index → block index
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _begin(self, block: dict[str, Any], name: str) -> list[Event]:
        events = self._close()
        self.index += 1
        self.open = name
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        return events

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events for one canonical chunk (``message_start`` before the first)."""
        events = self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has one answer per message; n > 1 is not expressible
            delta = obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != "text":
                    events += self._begin({"type": "text", "text": ""}, "text")
                events.append(self._delta(self.index, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self.stop_reason = STOP_REASON_OF_FINISH.get(finish, "end_turn")
        return events

    def _tool_call(self, call: Any) -> list[Event]:
        if not isinstance(call, dict):
            return []
        position = call.get("index", 0)
        function = obj(call.get("function"))
        events: list[Event] = []
        if position not in self.tool_blocks:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": {},
            }
            events += self._begin(block, f"tool:{position}")
            self.tool_blocks[position] = self.index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(self._delta(self.tool_blocks[position], delta))
        return events

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def finish(self) -> list[Event]:
        """The closing events: the open block's stop, ``message_delta`` (stop reason, usage), the stop."""
        events = self._start() + self._close()
        usage = usage_to_anthropic(self.usage)
        delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events


class ChunkTranslator:
    """Anthropic stream events → canonical chunks, for one stream (at most one chunk per event)."""

    def __init__(self, created: int) -> None:
        self.created = created
        self.id = ""
        self.model = ""
        self.usage: dict[str, Any] = {}
        self.tool_positions: dict[int, int] = {}  # block index → canonical tool-call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chat_chunk(self.id, self.created, self.model, delta, finish)

    def feed(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The canonical chunk for one Anthropic event, or None; raises on an ``error`` event."""
        kind = event.get("type")
        if kind == "message_start":
            message = obj(event.get("message"))
            self.id = str(message.get("id") or "")
            self.model = str(message.get("model") or "")
            self.usage.update(obj(message.get("usage")))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = obj(event.get("content_block"))
            if block.get("type") == "tool_use":
                position = self.tool_positions[event.get("index", 0)] = len(self.tool_positions)
                call = {
                    "index": position,
                    "id": block.get("id") or "",
                    "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return None
        if kind == "content_block_delta":
            delta = obj(event.get("delta"))
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                position = self.tool_positions.get(event.get("index", 0), 0)
                call = {"index": position, "function": {"arguments": delta["partial_json"]}}
                return self._chunk({"tool_calls": [call]})
            return None  # thinking and signature deltas have no canonical place
        if kind == "message_delta":
            # Counts on message_delta are cumulative totals: they replace message_start's.
            self.usage.update({k: v for k, v in obj(event.get("usage")).items() if v is not None})
            stop = obj(event.get("delta")).get("stop_reason")
            return self._chunk(
                {}, FINISH_OF_STOP_REASON.get(stop, "stop") if isinstance(stop, str) else "stop"
            )
        if kind == "message_stop":
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = usage_to_chat(self.usage)
            return chunk
        if kind == "error":
            error = obj(event.get("error"))
            status = 503 if error.get("type") == "overloaded_error" else 502
            raise upstream_error(
                status, f"Upstream stream error: {error.get('message', 'unknown')}", "upstream_stream"
            )
        return None  # ping, and event types added after this gateway was written
