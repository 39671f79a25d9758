"""Anthropic in, Anthropic upstream: the client's own request and the upstream's own answer, carried as is.

The canonical (OpenAI chat) request cannot hold Claude-only fields: ``cache_control`` on blocks, tools
and ``system``, ``thinking`` and the thinking blocks of earlier turns, ``top_k``, ``metadata`` beyond
``user_id``, the ``anthropic-beta`` header. So the ``/v1/messages`` route keeps the client's body next to the
canonical one, on the call (:data:`SCRATCH_KEY`), as a :class:`NativeExchange`:

- every stage still reads the canonical body (keys, limits, budgets, routing, usage), and a route to a
  non-Anthropic provider gets the canonical translation, with what it lost named in
  ``x-gateway-dropped-params`` (:func:`lost_fields`);
- the ``anthropic`` provider sends the client's body instead (only ``model`` replaced by the route's, and
  ``stream``), forwards the client's ``anthropic-version`` and ``anthropic-beta`` headers, and records the
  upstream's message or stream events here, still translating them to canonical for the pipeline;
- the route then answers the upstream's message or events unchanged when the provider that answered was the
  one that recorded them (:meth:`NativeExchange.answered`); a failover to another format, or a cache hit,
  is translated back from the canonical answer as before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.formats.anthropic import dropped_params

SCRATCH_KEY = "anthropic.native"
"""The ``call.scratch`` key holding the :class:`NativeExchange` of a ``/v1/messages`` request."""

FORWARDED_HEADERS: tuple[str, ...] = ("anthropic-version", "anthropic-beta")
"""Client headers an Anthropic upstream receives as sent (they select API behaviour and beta features)."""

_BLOCK_FIELDS: tuple[str, ...] = ("cache_control", "citations")
"""Fields of content blocks, tools and system blocks that the canonical translation drops."""


@dataclass(slots=True)
class NativeExchange:
    """One ``/v1/messages`` request as the client sent it, and what an Anthropic upstream answered."""

    body: dict[str, Any]
    headers: dict[str, str]
    lost: tuple[str, ...]
    # Set by the anthropic provider on each attempt that sent ``body``: its name, then its answer.
    provider: str | None = None
    message: dict[str, Any] | None = None
    events: deque[tuple[str, str]] = field(default_factory=deque)  # (event type, raw data line)

    def begin(self, provider: str) -> None:
        """A new attempt by ``provider`` starts: forget what an earlier (failed) attempt recorded."""
        self.provider = provider
        self.message = None
        self.events.clear()

    def answered(self, route_provider: str | None) -> bool:
        """Whether the provider that answered the call is the one that sent the client's body."""
        return route_provider is not None and route_provider == self.provider

    def drain(self) -> list[tuple[str, str]]:
        """The upstream events recorded since the last drain, oldest first."""
        events = list(self.events)
        self.events.clear()
        return events


def exchange_for(body: dict[str, Any], headers: Any) -> NativeExchange:
    """The exchange for a client ``body`` (already checked by ``request_to_chat``) and its request headers."""
    forwarded = {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}
    return NativeExchange(body=body, headers=forwarded, lost=tuple(lost_fields(body)))


def lost_fields(body: dict[str, Any]) -> list[str]:
    """What the canonical translation of ``body`` loses, sorted: top-level fields it has no place for,
    ``metadata`` keys beyond ``user_id``, ``cache_control`` (and ``citations``) anywhere in blocks, tools or
    system, and ``thinking`` when earlier assistant turns carry thinking blocks."""
    lost = set(dropped_params(body))
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and set(metadata) - {"user_id"}:
        lost.add("metadata")
    holders: list[Any] = []
    for name in ("system", "tools"):
        if isinstance(body.get(name), list):
            holders.extend(body[name])
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            holders.extend(content)
            for block in content:
                if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
                    lost.add("thinking")
                nested = block.get("content") if isinstance(block, dict) else None
                if isinstance(nested, list):
                    holders.extend(nested)  # tool_result blocks hold blocks too
    for holder in holders:
        if isinstance(holder, dict):
            lost.update(name for name in _BLOCK_FIELDS if name in holder)
    return sorted(lost)


def upstream_body(exchange: NativeExchange, model: str, stream: bool) -> dict[str, Any]:
    """The client's body as an Anthropic upstream receives it: only ``model`` (the route's) and ``stream``
    (the gateway decides how it reads the answer) are the gateway's."""
    body = {**exchange.body, "model": model}
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body
