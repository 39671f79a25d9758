"""Canonical ``chat.completion.chunk`` streams to the Responses API's typed event sequence.

One :class:`ResponseEvents` per stream folds the chunks into the events the OpenAI SDK expects, each with
its ``sequence_number``::

    response.created · response.in_progress
    per text answer:   response.output_item.added (message) · response.content_part.added
                       response.output_text.delta ... · response.output_text.done
                       response.content_part.done · response.output_item.done
    per tool call:     response.output_item.added (function_call)
                       response.function_call_arguments.delta ... · response.function_call_arguments.done
                       response.output_item.done
    response.completed (or response.incomplete when the answer was cut by max_output_tokens)

An error after the first event is reported in-band as one ``error`` event (:meth:`ResponseEvents.error`).
The finished ``response`` object (:attr:`ResponseEvents.response`) is the same object a non-streamed call
answers, so it can be stored for ``GET /v1/responses/{id}`` and ``previous_response_id``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gateway.formats.responses import finish, function_call_item, message_item, usage_to_response


class ResponseEvents:
    """The event state machine of one streamed response (see the module docstring)."""

    def __init__(self, shell: Mapping[str, Any]) -> None:
        self.response: dict[str, Any] = copy.deepcopy(dict(shell))
        self._suffix = str(shell["id"]).removeprefix("resp_")
        self._sequence = 0
        self._text: tuple[int, str] | None = None  # (output index, text so far) of the open message
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index, while open
        self._open: list[int] = []  # output indexes not yet done, in order
        self._finish_reason: str | None = None
        self.finished = False

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """One event of type ``kind`` with the next sequence number."""
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        """The opening events, sent before the first chunk."""
        return [
            self.event("response.created", response=copy.deepcopy(self.response)),
            self.event("response.in_progress", response=copy.deepcopy(self.response)),
        ]

    def chunk(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one canonical chunk means (none for the role-only opening delta)."""
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self.response["usage"] = usage_to_response(chunk["usage"])
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n is not a Responses parameter: a second choice never arrives
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def end(self) -> list[dict[str, Any]]:
        """The closing events once the chunks ran out: every open item done, then the final response."""
        events: list[dict[str, Any]] = []
        if not self.response["output"]:
            events += self._open_text()  # an empty answer is still one (empty) message, as unstreamed
        finish(self.response, self._finish_reason)
        for index in self._open:
            events += self._close(index)
        self._open = []
        self.finished = True
        kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        return [*events, self.event(kind, response=copy.deepcopy(self.response))]

    def error(self, error: Mapping[str, Any]) -> dict[str, Any]:
        """The in-band ``error`` event for an OpenAI error envelope's ``error`` object."""
        return self.event(
            "error", code=error.get("code"), message=error.get("message") or "", param=error.get("param")
        )

    def _item_status(self) -> str:
        return "incomplete" if self.response["status"] == "incomplete" else "completed"

    def _open_text(self) -> list[dict[str, Any]]:
        index = len(self.response["output"])
        item = {**message_item(f"msg_{self._suffix}", "", "in_progress"), "content": []}
        self.response["output"].append(item)
        self._open.append(index)
        self._text = (index, "")
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self.event("response.output_item.added", output_index=index, item=copy.deepcopy(item)),
            self.event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
        ]

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        events = self._open_text() if self._text is None else []
        assert self._text is not None
        index, so_far = self._text
        self._text = (index, so_far + text)
        item_id = self.response["output"][index]["id"]
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=item_id,
                output_index=index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        position = call.get("index", 0)
        if position not in self._calls:
            index = len(self.response["output"])
            item_id = f"fc_{self._suffix}_{len(self._calls)}"
            item = function_call_item(item_id, {**call, "function": {**(call.get("function") or {})}})
            item.update(status="in_progress", arguments="")
            self.response["output"].append(item)
            self._calls[position] = index
            self._open.append(index)
            events.append(self.event("response.output_item.added", output_index=index, item=dict(item)))
        index = self._calls[position]
        arguments = (call.get("function") or {}).get("arguments")
        if arguments:
            item = self.response["output"][index]
            item["arguments"] += arguments
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=arguments,
                )
            )
        return events

    def _close(self, index: int) -> list[dict[str, Any]]:
        item = self.response["output"][index]
        item["status"] = self._item_status()
        if item["type"] == "function_call":
            return [
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                ),
                self.event("response.output_item.done", output_index=index, item=copy.deepcopy(item)),
            ]
        assert self._text is not None
        text = self._text[1]
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item["content"] = [part]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self.event("response.output_text.done", **where, text=text, logprobs=[]),
            self.event("response.content_part.done", **where, part=copy.deepcopy(part)),
            self.event("response.output_item.done", output_index=index, item=copy.deepcopy(item)),
        ]
