"""The provider interface: one adapter module per kind of upstream.

A provider turns a canonical OpenAI request (``call.body``) into an upstream call for one route and
returns a canonical :class:`~gateway.pipeline.Result`. Two levels:

- :class:`Provider` is what the router calls: ``chat(call, route)`` and ``embeddings(call, route)``.
  The ``mock`` provider implements it directly (no HTTP).
- :class:`HttpAdapter` is the small, mostly-pure interface an HTTP upstream implements (build request,
  parse response, parse stream chunk, map error); :class:`HttpProvider` does the HTTP with the shared
  transport (connection pooling, timeouts, streaming, cancellation) for every adapter, through a
  :class:`~gateway.transport.Sender` (the gateway's own HTTP client, ``gateway/upstream_client.py``, over
  the gateway's own transport; httpx's transport interface over an injected one).

Adding a provider is one module with a class following :class:`ProviderType` plus one line in
``registry.py``. Providers raise :class:`~gateway.errors.GatewayError` with the status the client should
see (429 passes through with ``retry-after``; upstream faults become 502/503/504).

:class:`HttpProvider` treats what comes back as untrusted input (:mod:`gateway.answers`): a malformed answer
or stream chunk is a 502 (in-band for a stream already under way), and a usage that cannot be trusted is
blanked so the usage stage estimates it instead of charging it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ValidationError

from gateway import __version__, jsonio
from gateway.answers import answer_problem, checked_usage, chunk_problem, malformed
from gateway.config import PathPart, ProviderConfig, RouteConfig, did_you_mean
from gateway.errors import GatewayError, upstream_error
from gateway.features.tracing_config import SCRATCH_KEY
from gateway.params import PASS_THROUGH, ParamSupport
from gateway.pipeline import Call, Response, Result, Stream
from gateway.tls import UpstreamTransport
from gateway.transport import Reply, Sender, sender

logger = logging.getLogger("gateway.upstream")

USER_AGENT = f"llm-gateway/{__version__}"
# Set on the call once its upstream's usage was rejected, so a stream logs it once, not per chunk.
_USAGE_REJECTED = "upstream.usage_rejected"
ConfigProblems = Iterable[tuple[tuple[PathPart, ...], str]]


class Provider(Protocol):
    """What the router calls for one attempt on one route.

    A provider may also declare ``params``, the :class:`~gateway.params.ParamSupport` of the chat
    parameters it honours; one that declares none is taken to pass every parameter through.
    """

    name: str

    async def chat(self, call: Call, route: RouteConfig) -> Result:
        """Answer a chat completion: a :class:`Response`, or a :class:`Stream` when ``call.stream``."""
        ...

    async def embeddings(self, call: Call, route: RouteConfig) -> Response:
        """Answer an embeddings request."""
        ...


class ProviderType(Protocol):
    """A provider class as the registry sees it: validates its config, then is constructed per provider."""

    def __call__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> Provider: ...

    def config_problems(self, config: ProviderConfig) -> ConfigProblems:
        """Problems with ``config`` (key path under the provider entry, message); empty when valid."""
        ...


def options_problems(model: type[BaseModel], options: dict[str, Any]) -> ConfigProblems:
    """Validate ``options`` against an adapter's options model, as config problems under ``options``."""
    try:
        model.model_validate(options)
    except ValidationError as exc:
        for error in exc.errors():
            loc = ("options", *error["loc"])
            if error["type"] == "extra_forbidden":
                key = str(error["loc"][-1])
                yield loc, f"unknown option '{key}'{did_you_mean(key, list(model.model_fields))}"
            else:
                yield loc, error["msg"]


def upstream_rate_limited(detail: str, headers: Mapping[str, str]) -> GatewayError:
    """An upstream 429 passed on as a 429, keeping the upstream's ``retry-after``."""
    retry = {"retry-after": headers["retry-after"]} if "retry-after" in headers else {}
    return GatewayError(
        429,
        f"Upstream rate limit: {detail}",
        "rate_limit_error",
        "rate_limit_exceeded",
        headers=retry,
    )


def map_upstream_status(status: int, detail: str) -> GatewayError:
    """The error for an upstream status no adapter special-cased: auth problems and faults as 502/503/504.

    Adapters handle their own statuses (rate limits, invalid requests, overload...) first and call this
    for the rest.
    """
    if status in (401, 403):
        # The gateway's upstream credentials are wrong: the client's key is fine, so not a 401.
        return upstream_error(
            502, f"Upstream rejected the gateway's credentials (HTTP {status}).", "upstream_auth"
        )
    if status in (408, 504):
        return upstream_error(504, f"Upstream timed out: {detail}", "upstream_timeout")
    if status == 503:
        return upstream_error(503, f"Upstream unavailable: {detail}", "upstream_unavailable")
    return upstream_error(502, f"Upstream error: {detail}", "upstream_error")


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """What an :class:`HttpAdapter` asks :class:`HttpProvider` to send."""

    path: str
    json: dict[str, Any]
    headers: dict[str, str]


# What a stream may be labelled; a missing content-type is let through (some servers send none).
_STREAM_TYPES = frozenset({"text/event-stream", "text/plain", "application/octet-stream"})

DONE = object()
"""Returned by :meth:`HttpAdapter.parse_stream_line` at the end of the stream."""


class HttpAdapter(Protocol):
    """The translation between the canonical OpenAI format and one HTTP upstream's format."""

    def build_request(self, endpoint: str, body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
        """The upstream request for ``endpoint`` ("chat" or "embeddings") with upstream ``model``."""
        ...

    def parse_response(self, endpoint: str, data: Any) -> dict[str, Any]:
        """The canonical OpenAI response body from the upstream's decoded JSON."""
        ...

    def parse_stream_line(self, line: str) -> dict[str, Any] | object | None:
        """One line of the upstream stream: a canonical chunk dict, ``DONE``, or None to skip it."""
        ...

    def map_error(self, status: int, data: Any, headers: Mapping[str, str]) -> GatewayError:
        """The error the client sees for an upstream error response (``headers``: case-insensitive)."""
        ...


class HttpProvider:
    """Runs an :class:`HttpAdapter` over the gateway's shared, pooled transport.

    Requests go through a :class:`~gateway.transport.Sender`, never httpx's ``AsyncClient`` layer
    (redirects, cookies, auth flows, URL merging cost about 0.14 ms per request and the gateway needs none
    of it: ``gateway/transport.py``). The transport stays the one seam tests replace.
    """

    # A class attribute for stateless adapters; one that needs the provider's options is set per instance.
    adapter: HttpAdapter
    # The chat parameters the adapter sends upstream (gateway/params.py); OpenAI-format upstreams get all.
    params: ParamSupport = PASS_THROUGH

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        self.name = config.name
        self.config = config
        self.transport = transport
        self.base_url = config.base_url or ""
        self.timeout = {
            "connect": config.connect_timeout_s,
            "read": config.timeout_s,
            "write": config.timeout_s,
            "pool": config.connect_timeout_s,
        }
        self.auth_headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **self.default_headers(config),
        }
        self._sender: Sender | None = None  # made on first use: subclasses set base_url after __init__
        self._usage_warned: set[str] = set()  # usage fields this provider already got wrong (logged)
        self.propagate_trace = config.propagate_trace

    @classmethod
    def default_headers(cls, config: ProviderConfig) -> dict[str, str]:
        """Headers sent on every request (credentials); override per adapter."""
        return {}

    def sender(self) -> Sender:
        """How this provider's requests are sent: the pool of its origin (per-origin TLS settings), directly
        through the gateway's own client when it is the gateway's own transport."""
        if self._sender is None:
            transport = self.transport
            if isinstance(transport, UpstreamTransport):
                transport = transport.transport_for(self.base_url)
            self._sender = sender(transport, self.base_url, self.timeout)
        return self._sender

    def upstream_request(
        self, endpoint: str, call: Call, route: RouteConfig, stream: bool
    ) -> UpstreamRequest:
        """What to send for ``call``: the adapter's translation of the canonical body.

        A provider that can use more of the call than the canonical body (the ``anthropic`` provider sends
        an Anthropic client's own body) overrides this.
        """
        return self.adapter.build_request(endpoint, call.body, route.model or call.model, stream)

    def parse_answer(self, call: Call, endpoint: str, data: Any) -> dict[str, Any]:
        """The canonical body for the upstream's decoded answer ``data`` (the adapter's translation)."""
        return self.adapter.parse_response(endpoint, data)

    async def _send(self, endpoint: str, call: Call, route: RouteConfig, stream: bool) -> Reply:
        """Send ``call`` upstream; the reply with its headers read (body not yet), errors as GatewayError."""
        spec = self.upstream_request(endpoint, call, route, stream)
        # The request id travels upstream so one request can be followed across gateways.
        headers = {**self.auth_headers, **spec.headers, "x-request-id": call.request_id}
        tracing = call.scratch.get(SCRATCH_KEY) if self.propagate_trace else None
        if tracing is not None:
            tracing.inject(headers)  # traceparent of this attempt's span (features.tracing)
        try:
            # The upstream body, encoded once.
            reply = await self.sender().post(spec.path, headers, jsonio.dumps(spec.json))
        except httpx.TimeoutException:
            raise upstream_error(504, f"Upstream '{self.name}' timed out.", "upstream_timeout") from None
        except (httpx.HTTPError, OSError) as exc:
            raise upstream_error(
                502,
                f"Upstream '{self.name}' is unreachable ({unreachable_reason(exc)}).",
                "upstream_unreachable",
            ) from None
        if reply.status >= 400:
            data = _json_or_text(await self._read(reply))
            raise self.adapter.map_error(reply.status, data, reply.headers)
        return reply

    async def _read(self, reply: Reply) -> bytes:
        try:
            return await reply.body()
        except httpx.HTTPError as exc:
            raise upstream_error(
                502, f"Upstream '{self.name}' broke off the response ({type(exc).__name__}).", "upstream_read"
            ) from None

    async def _json(self, reply: Reply) -> Any:
        # The body as bytes straight to the parser: no decoding to text first.
        try:
            return jsonio.loads(await self._read(reply))
        except ValueError:
            raise upstream_error(
                502, f"Upstream '{self.name}' answered with invalid JSON.", "upstream_invalid"
            ) from None

    async def chat(self, call: Call, route: RouteConfig) -> Result:
        """Send the chat request; a stream returns as soon as the upstream sent its headers."""
        reply = await self._send("chat", call, route, call.stream)
        if not call.stream:
            body = self.parse_answer(call, "chat", await self._json(reply))
            return Response(self._checked(call, "chat", body))
        kind = reply.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and kind not in _STREAM_TYPES:
            # An HTML error page or a JSON body with status 200: nothing to stream, and the client's
            # headers are not sent yet, so this is still a plain 502.
            await self._read(reply)
            raise malformed(self.name, f"a stream request was answered with {kind}, not text/event-stream")
        return Stream(self._chunks(call, reply))

    async def embeddings(self, call: Call, route: RouteConfig) -> Response:
        """Send the embeddings request."""
        reply = await self._send("embeddings", call, route, False)
        body = self.parse_answer(call, "embeddings", await self._json(reply))
        return Response(self._checked(call, "embeddings", body))

    def _checked(self, call: Call, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` if it is a well-formed answer (its usage blanked when untrustworthy); 502 otherwise."""
        problem = answer_problem(endpoint, body)
        if problem is not None:
            raise malformed(self.name, problem)
        return self._checked_usage(call, body)

    def _checked_usage(self, call: Call, holder: dict[str, Any]) -> dict[str, Any]:
        checked, problem = checked_usage(holder)
        if problem is not None and not call.scratch.get(_USAGE_REJECTED):
            call.scratch[_USAGE_REJECTED] = True
            # A warning the first time a field goes wrong on this provider, debug after: an upstream that
            # always sends a bad usage must not flood the log with one line per request.
            field = problem.split(" ", 1)[0]
            level = logging.DEBUG if field in self._usage_warned else logging.WARNING
            self._usage_warned.add(field)
            logger.log(
                level, "upstream '%s' sent an invalid usage for request %s (%s): its tokens are estimated",
                self.name, call.request_id, problem,
            )  # fmt: skip
        return checked

    def stream_parser(self, call: Call) -> Callable[[str], dict[str, Any] | object | None]:
        """The line parser for ``call``'s stream; adapters whose streams keep state across lines make a fresh
        one."""
        return self.adapter.parse_stream_line

    async def _chunks(self, call: Call, reply: Reply) -> AsyncIterator[dict[str, Any]]:
        # Closing this generator (client disconnect) closes the upstream response: the request is cancelled.
        parse = self.stream_parser(call)
        sent = 0
        try:
            async for line in reply.lines():
                if not line:
                    continue
                chunk = parse(line)
                if chunk is DONE:
                    break
                if chunk is None:
                    continue
                problem = chunk_problem(chunk)
                if problem is not None:
                    raise malformed(self.name, problem)
                assert isinstance(chunk, dict)  # chunk_problem said so
                sent += 1
                yield self._checked_usage(call, chunk)
        except httpx.HTTPError as exc:
            raise upstream_error(
                502, f"Upstream '{self.name}' broke off the stream ({type(exc).__name__}).", "upstream_stream"
            ) from None
        finally:
            await reply.aclose()
        if not sent:
            # An upstream that ends a stream without one chunk answered nothing: not an empty success.
            raise malformed(self.name, "the stream ended with no chunk")


def unreachable_reason(exc: BaseException) -> str:
    """Why a connection failed, from the exception's causes; never the error text (it may hold a URL)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    for error in seen:
        if isinstance(error, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted"
        if isinstance(error, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(error, socket.gaierror):
            return "host name not resolved"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
    return type(exc).__name__


def _json_or_text(body: bytes) -> Any:
    """An error body: its JSON, else the start of its text (what the error message may quote)."""
    try:
        return jsonio.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]


def now() -> int:
    """Unix time in seconds, for the ``created`` field."""
    return int(time.time())
