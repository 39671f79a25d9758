"""Parameter honesty: a chat parameter a route's upstream cannot honour is refused or, when asked, dropped
and reported, never silently ignored.

Each provider declares a :class:`ParamSupport`: the canonical (OpenAI chat) parameters it sends upstream,
as is or translated (``stop`` → ``stop_sequences``), or ``None`` for providers that pass every field through
to an upstream speaking OpenAI's format (openai, azure) or that honour them themselves (mock). For a route
whose provider lacks a parameter the request sets (a value other than the neutral default: ``n: 1``,
``logprobs: false`` and ``response_format: {"type": "text"}`` ask for nothing):

- the router skips the route; when no route of the alias (or its fallbacks) can serve the request, the
  answer is a 400 ``unsupported_parameter`` naming the parameter and the provider;
- with ``drop_params`` (the request header ``x-gateway-drop-params: true``, or ``drop_params: true`` on the
  route, its model or ``features.routing``, spelled as in LiteLLM) the parameter is removed from what this
  route's upstream receives and named in the ``x-gateway-dropped-params`` response header.

Only chat requests are checked: embeddings parameters are all translated (``dimensions``,
``encoding_format``) or passed through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError, invalid_request

if TYPE_CHECKING:
    from gateway.config import RouteConfig
    from gateway.pipeline import Call

DROP_HEADER = "x-gateway-drop-params"
"""Request header: ``true`` lets this request's unsupported parameters be dropped (and reported)."""

DROP_SCRATCH = "params.drop"
"""A ``call.scratch`` flag a route sets when its format's contract is to drop and report what a route cannot
honour (``/v1/messages``: Anthropic clients send ``metadata.user_id`` on every request)."""

DROPPED_HEADER = "x-gateway-dropped-params"
"""Response header: the comma-separated parameters the answering route did not receive."""

GATEWAY_PARAMS: frozenset[str] = frozenset({"model", "messages", "stream", "stream_options"})
"""Handled by the gateway itself for every provider (streams, usage chunks)."""

NEUTRAL: Mapping[str, Callable[[Any], bool]] = MappingProxyType(
    {
        "n": lambda v: v == 1,
        "logprobs": lambda v: v is False,
        "top_logprobs": lambda v: v == 0,
        "response_format": lambda v: isinstance(v, dict) and v.get("type") == "text",
        "parallel_tool_calls": lambda v: v is True,
        "presence_penalty": lambda v: v == 0,
        "frequency_penalty": lambda v: v == 0,
        "logit_bias": lambda v: v == {},
        "store": lambda v: v is False,
        "metadata": lambda v: v == {},
    }
)
"""Values that ask for the default behaviour: harmless to leave out, so never refused."""


def _never(value: Any) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ParamSupport:
    """The canonical chat parameters a provider honours; ``supported=None``: every one (passed through)."""

    supported: frozenset[str] | None = None

    def unsupported(self, body: Mapping[str, Any]) -> list[str]:
        """The parameters of ``body`` this provider would not honour, sorted (``null`` values ask nothing)."""
        if self.supported is None:
            return []
        return sorted(
            name
            for name, value in body.items()
            if name not in self.supported
            and name not in GATEWAY_PARAMS
            and value is not None
            and not NEUTRAL.get(name, _never)(value)
        )


PASS_THROUGH = ParamSupport()
"""For upstreams that receive the canonical body as is."""


def support_of(provider: object) -> ParamSupport:
    """A provider's declared :class:`ParamSupport`; one that declares none passes everything through."""
    params = getattr(provider, "params", None)
    return params if isinstance(params, ParamSupport) else PASS_THROUGH


def drop_allowed(call: Call, route: RouteConfig, default: bool) -> bool:
    """Whether ``call``'s unsupported parameters may be dropped on ``route``: the request header (or its
    route's :data:`DROP_SCRATCH`), else the route's ``drop_params``, else its model's, else ``default``
    (``features.routing.drop_params``)."""
    if call.scratch.get(DROP_SCRATCH) or call.headers.get(DROP_HEADER, "").strip().lower() == "true":
        return True
    for setting in (route.drop_params, call.model_config.drop_params):
        if setting is not None:
            return setting
    return default


def refusal(names: list[str], provider: str) -> GatewayError:
    """The 400 for parameters a route's provider cannot honour."""
    listed = ", ".join(f"'{n}'" for n in names)
    return invalid_request(
        f"Parameter {listed} is not supported by provider '{provider}' and was not sent. Remove it, or "
        f"allow dropping it with the header '{DROP_HEADER}: true' or 'drop_params: true' in the config.",
        param=names[0],
        code="unsupported_parameter",
    )


def without(body: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``body`` without ``names`` (a copy; the call's own body stays whole for other routes)."""
    return {k: v for k, v in body.items() if k not in names}
