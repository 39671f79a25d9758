"""Native Responses API passthrough: ``openai`` providers with ``options.responses: native``.

For an alias whose every route (fallbacks included) is such a provider, ``/v1/responses`` does not translate
the request to chat: the route puts the client's Responses request in the canonical body under
:data:`REQUEST_FIELD` (so the cache key covers all of it) and sets :data:`NATIVE` in ``call.scratch`` (so no
client can ask for it), and the provider sends that request to the upstream's ``/responses``. The stages still
work on the canonical form: the answer is folded into a ``chat.completion`` (text, tool calls, usage from the
Responses ``usage``) that carries the upstream's response object under :data:`ANSWER_FIELD`, and each stream
event into a ``chat.completion.chunk`` that carries the event under :data:`EVENT_FIELD`. Usage, budgets,
the cache (which replays the carried answer or events) and routing apply unchanged; the route answers the
carried object or events, so reasoning items and built-in tool calls reach the client as the upstream sent
them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from gateway.config import ProviderConfig
from gateway.errors import GatewayError, upstream_error
from gateway.pipeline import Call
from gateway.providers.base import DONE, HttpAdapter, HttpProvider, UpstreamRequest

NATIVE = "responses.native"
"""``call.scratch`` flag: this call goes to upstream ``/responses`` unchanged."""

REQUEST_FIELD = "responses"
"""Canonical body field holding the Responses request of a native call."""

ANSWER_FIELD = "responses_answer"
"""Canonical answer field holding the upstream's ``response`` object."""

EVENT_FIELD = "responses_event"
"""Canonical chunk field holding the upstream's stream event."""

_FINISH: Mapping[str | None, str] = {"max_output_tokens": "length", "content_filter": "content_filter"}
"""``incomplete_details.reason`` -> chat ``finish_reason``."""


def usage_to_chat(usage: Any) -> dict[str, Any] | None:
    """Chat ``usage`` from a Responses ``usage`` (what the usage ledger, budgets and limits read)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "prompt_tokens_details": {"cached_tokens": details.get("cached_tokens") or 0},
        "completion_tokens_details": {"reasoning_tokens": output_details.get("reasoning_tokens") or 0},
    }


def _finish(response: Mapping[str, Any], has_calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return _FINISH.get(reason, "length")
    return "tool_calls" if has_calls else "stop"


def _failed(response: Mapping[str, Any]) -> GatewayError:
    raw = response.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = error.get("message") if isinstance(error.get("message"), str) else "the response failed"
    return upstream_error(502, f"Upstream response failed: {message}", "upstream_error")


def response_to_chat(response: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical ``chat.completion`` a Responses object means, carrying the object itself."""
    output = response.get("output")
    if not isinstance(output, list):
        raise upstream_error(502, "Upstream response has no 'output' array.", "upstream_invalid")
    if response.get("status") == "failed":
        raise _failed(response)
    text = "".join(
        part.get("text") or ""
        for item in output
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "output_text"
    )
    calls = [
        {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments")},
        }
        for item in output
        if isinstance(item, dict) and item.get("type") == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    chat: dict[str, Any] = {
        "id": response.get("id"),
        "object": "chat.completion",
        "created": response.get("created_at"),
        "model": response.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(response, bool(calls))}],
        ANSWER_FIELD: dict(response),
    }
    usage = usage_to_chat(response.get("usage"))
    if usage is not None:
        chat["usage"] = usage
    return chat


class EventParser:
    """One upstream Responses stream, line by line, as canonical chunks carrying each event."""

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}  # function_call item id -> chat tool_calls index

    def __call__(self, line: str) -> dict[str, Any] | object | None:
        """A chunk for a ``data:`` line's event, ``DONE`` for ``[DONE]``, None for anything else."""
        if not line.startswith("data:"):
            return None  # "event:" lines repeat the type the data names
        payload = line[5:].strip()
        if payload == "[DONE]":
            return DONE
        try:
            event = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return None
        return self._chunk(event)

    def _chunk(self, event: dict[str, Any]) -> dict[str, Any]:
        kind = event["type"]
        if kind == "error":
            raise upstream_error(
                502, f"Upstream stream error: {event.get('message', 'unknown')}", "upstream_stream"
            )
        if kind == "response.failed":
            raise _failed(event.get("response") or {})
        delta: dict[str, Any] | None = None
        finish: str | None = None
        usage: dict[str, Any] | None = None
        raw_item = event.get("item")
        item: dict[str, Any] = raw_item if isinstance(raw_item, dict) else {}
        if kind == "response.output_text.delta":
            delta = {"content": event.get("delta") or ""}
        elif kind == "response.output_item.added" and item.get("type") == "function_call":
            index = self._calls[str(item.get("id"))] = len(self._calls)
            function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
            delta = {
                "tool_calls": [
                    {"index": index, "id": item.get("call_id"), "type": "function", "function": function}
                ]
            }
        elif kind == "response.function_call_arguments.delta":
            index = self._calls.get(str(event.get("item_id")), 0)
            delta = {"tool_calls": [{"index": index, "function": {"arguments": event.get("delta") or ""}}]}
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            finish = _finish(response, bool(self._calls))
            usage = usage_to_chat(response.get("usage"))
            delta = {}
        chunk: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [], EVENT_FIELD: event}
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        if usage is not None:
            chunk["usage"] = usage
        return chunk


def native_body(request: Mapping[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The canonical body of a native call: the Responses request sent upstream under
    :data:`REQUEST_FIELD`, and for the stages (token estimates, the cache key) one message holding it.

    The gateway resolves ``previous_response_id`` itself (the key must own it), so the upstream gets the
    whole conversation in ``input`` and ``store: false``: it keeps nothing the gateway could not scope to a
    key. Everything else is the client's, unchanged.
    """
    upstream = {
        name: value for name, value in request.items() if name not in ("previous_response_id", "store")
    }
    upstream["input"] = items
    upstream["store"] = False
    shown = {name: upstream[name] for name in ("instructions", "input", "tools") if upstream.get(name)}
    body: dict[str, Any] = {
        "model": request.get("model"),
        "messages": [{"role": "user", "content": json.dumps(shown, separators=(",", ":"))}],
        REQUEST_FIELD: upstream,
    }
    for name, canonical in (("stream", "stream"), ("max_output_tokens", "max_completion_tokens")):
        if request.get(name) is not None:
            body[canonical] = request[name]
    return body


class ResponsesAdapter:
    """Requests to upstream ``/responses``; answers and errors read with the OpenAI adapter's rules."""

    def __init__(self, chat: HttpAdapter) -> None:
        self._chat = chat

    def build_request(self, endpoint: str, body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
        """The client's Responses request (as the route left it) with the route's upstream model."""
        payload = {**body[REQUEST_FIELD], "model": model}
        if stream:
            payload["stream"] = True
        else:
            payload.pop("stream", None)
        return UpstreamRequest("/responses", payload, {})

    def parse_response(self, endpoint: str, data: Any) -> dict[str, Any]:
        """The canonical answer carrying the upstream's response object."""
        if not isinstance(data, dict):
            raise upstream_error(502, "Upstream answered with a non-object JSON body.", "upstream_invalid")
        return response_to_chat(data)

    def parse_stream_line(self, line: str) -> dict[str, Any] | object | None:
        """Unused: every stream gets its own :class:`EventParser` (it keeps the tool-call indexes)."""
        return EventParser()(line)

    def map_error(self, status: int, data: Any, headers: Mapping[str, str]) -> GatewayError:
        """Upstream errors map as on the chat endpoint (400s pass through naming their ``param``)."""
        return self._chat.map_error(status, data, headers)


class ResponsesUpstream(HttpProvider):
    """The ``/responses`` side of one ``openai`` provider: its URL and credentials, the native adapter."""

    def __init__(
        self,
        config: ProviderConfig,
        transport: httpx.AsyncBaseTransport,
        *,
        chat: HttpAdapter,
        base_url: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(config, transport)
        self.adapter = ResponsesAdapter(chat)
        self.base_url = base_url
        self.auth_headers = dict(headers)

    def stream_parser(self, call: Call) -> Callable[[str], dict[str, Any] | object | None]:
        """A fresh :class:`EventParser` per stream (every native stream is parsed alike)."""
        return EventParser()
