"""The request pipeline: the extension point every gateway feature plugs into.

A request to ``/v1/chat/completions`` or ``/v1/embeddings`` becomes one :class:`Call` and flows through
an ordered chain of :class:`Stage` objects built once at startup (``gateway/app.py``, ``build_stages``)::

    auth → usage → admission → rate limit → budget → cache → router → provider adapter → upstream

Authentication and model resolution happen when the route builds the :class:`Call` (so every stage sees
an authenticated ``call.key`` and a resolved ``call.model_config``); the remaining stages are features,
each configured under ``features:`` in the config file, and the router is always last. The router calls
``gateway.router.attempt(call, route, provider)`` once per provider attempt.

The Stage contract
==================

A stage is any object with::

    async def handle(self, call: Call, next: Handler) -> Result

- ``call`` is the per-request state (see :class:`Call`). Stages may read everything, may mutate
  ``call.body`` (the canonical OpenAI request dict; copy before changing nested structures you do not own),
  add response headers to ``call.response_headers`` and keep per-request notes in ``call.scratch`` (use
  your feature name as a key prefix, e.g. ``scratch["cache.key"]``).
- ``next(call)`` runs the rest of the chain and returns a :class:`Result`. A stage may short-circuit by
  returning its own result without calling ``next`` (a cache hit), call ``next`` more than once (never
  needed before the router; the router calls providers per attempt), or raise :class:`GatewayError`
  (rate limited: ``GatewayError(429, ..., headers={"retry-after": "3"})``).
- A :class:`Result` is either a :class:`Response` (a complete body dict with ``usage``) or a
  :class:`Stream` (an async iterator of OpenAI ``chat.completion.chunk`` dicts). Check ``call.stream`` or
  ``isinstance(result, Stream)``.
- Stages that need the whole response (cache store, usage ledger, budget settlement) must **not** buffer a
  stream before returning it: wrap it with :meth:`Stream.pipe` and do the work when the wrapped iterator
  finishes. ``stream.usage`` holds the final usage once the stream completed (the provider layer always
  obtains usage, whatever the client asked). Use ``try/finally`` in the wrapper if you must account for
  streams the client abandoned: a client disconnect closes the whole chain with ``aclose()``, which also
  cancels the upstream request.
- Response headers for a stream are sent when the stream *starts*, so add them before returning it.
- Stages must be safe for concurrent calls: keep per-request data on ``call``, never on ``self``; state
  shared by replicas goes through ``gateway.stores``.

Admission
---------

A stage that needs the shared store before the upstream may also define
``async def admission(self, call) -> Claim | None``: what it needs (an atomic step, keys to read), which the
admission stage runs for every such stage at once, in one round trip per store. See ``gateway/admission.py``.

Lifecycle hooks
---------------

A stage may also define ``async def start(self) -> None`` and ``async def close(self) -> None``. The app
calls every ``start`` (in chain order) before serving and every ``close`` (in reverse order) on shutdown,
e.g. to open a database or flush the usage ledger. Both are optional; :func:`run_hooks` finds them.

After the answer
----------------

Work a stage does once an answer is known but that the answer does not need (settling a budget, giving back
rate-limit slots, storing a cache entry, writing the usage record) goes through :func:`later`: on a request
served over HTTP, ``call.after`` is a list the request's envelope (gateway/middleware.py) runs once the
response is written, so the client does not wait for the books; elsewhere (``call.after`` is None: a
WebSocket message, a stage in a unit test) the work runs at once. A piece of work is a callable returning
None when done or an awaitable to await (a store round trip); it must never raise for an expected failure
(it logs and carries on, as the stages already do for a store that is down). Work registered by inner stages
runs first, in the order the chain returns.

Timing
------

``call.started`` is the ``time.perf_counter()`` when the request arrived; whoever waits on an upstream adds
the wait to ``call.upstream_s`` (the router does this around every provider attempt), and ``call.client_s``
is the time spent waiting for the rest of the client's request body (a client that writes its headers and
its body separately, or a large upload). The gateway's own overhead, sent as ``x-gateway-overhead-ms``, is
the total minus both.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.errors import GatewayError

CLIENT_WAIT = "client_s"
"""``scope["state"]`` key: seconds the request waited for the client's body (set by its reader, before the
call exists; the call takes it as ``client_s``)."""

After = Callable[[], "Awaitable[None] | None"]
"""Work for after the answer (see "After the answer"): None when done, else an awaitable to await."""

if TYPE_CHECKING:
    from gateway.config import ModelConfig, RouteConfig
    from gateway.features.budgets import BudgetConfig


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who is calling: the authenticated virtual key, never the raw key.

    ``key_id`` is a short stable hash of the key (safe to log and to store in ledgers); ``models`` is the
    set of aliases this key may use, ``None`` for every model.
    """

    name: str
    key_id: str
    team: str | None = None
    models: frozenset[str] | None = None
    is_master: bool = False
    # Limits and budget a key made through the admin API carries (config-file keys' are in the config).
    rpm: int | None = None
    tpm: int | None = None
    budget: BudgetConfig | None = field(default=None, compare=False)
    # What a team made through the admin API brings (a config-file team's budget is in the config): one
    # budget and one rpm/tpm allowance shared by every key of the team. Its model list is already folded
    # into ``models``.
    team_budget: BudgetConfig | None = field(default=None, compare=False)
    team_rpm: int | None = None
    team_tpm: int | None = None
    # Data residency (auth.keys[].allowed_regions): the router never calls a route outside these regions.
    allowed_regions: frozenset[str] | None = None

    def may_use(self, model: str) -> bool:
        """Whether this key may call ``model``."""
        return self.models is None or model in self.models


@dataclass(slots=True, eq=False)
class Call:
    """One request flowing through the pipeline.

    ``endpoint`` is ``"chat"`` or ``"embeddings"``. ``body`` is the canonical OpenAI request body as sent
    by the client (unknown fields included: they are passed through to the provider). ``headers`` are the
    client's request headers (case-insensitive mapping). ``stream`` is the client's ``stream`` flag and
    ``include_usage`` its ``stream_options.include_usage``.
    """

    request_id: str
    key: KeyIdentity
    endpoint: str
    model: str
    model_config: ModelConfig
    body: dict[str, Any]
    headers: Mapping[str, str]
    stream: bool = False
    include_usage: bool = False
    response_headers: dict[str, str] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0
    # Waiting for the client's request body (gateway/routes/openai.py, read_body): not the gateway's time.
    client_s: float = 0.0
    # Set by the router for the attempt that answered.
    route: RouteConfig | None = None
    attempts: int = 0
    # The request's trace id when features.tracing is on (its spans'), for the usage record.
    trace_id: str | None = None
    # Work for after the response is written (see "After the answer"); None: :func:`later` runs it at once.
    after: list[After] | None = None

    def overhead_ms(self) -> float:
        """Milliseconds spent in the gateway so far, the waits on the upstream and the client excluded."""
        return (time.perf_counter() - self.started - self.upstream_s - self.client_s) * 1000.0


@dataclass(slots=True)
class Response:
    """A complete (non-streamed) response: the OpenAI response body, with ``usage`` when known."""

    body: dict[str, Any]
    status: int = 200

    @property
    def usage(self) -> dict[str, Any] | None:
        """The ``usage`` object of the body, if any."""
        usage = self.body.get("usage")
        return usage if isinstance(usage, dict) else None


ChunkIterator = AsyncIterator[dict[str, Any]]


class Stream:
    """A streamed response: an async iterator of ``chat.completion.chunk`` dicts.

    ``usage`` is ``None`` until a chunk carrying usage has gone by (providers always emit one at the end);
    ``completed`` is True once the source finished normally. Wrap with :meth:`pipe`; close with
    :meth:`aclose` (closes every layer, innermost last, which cancels the upstream request).
    """

    __slots__ = ("_iterator", "_layers", "completed", "usage")

    def __init__(self, source: ChunkIterator) -> None:
        self.usage: dict[str, Any] | None = None
        self.completed = False
        self._layers: list[Any] = [source]
        self._iterator: ChunkIterator = self._observe(source)
        self._layers.append(self._iterator)

    @classmethod
    def from_chunks(cls, chunks: Iterable[dict[str, Any]]) -> Stream:
        """A stream replaying ``chunks`` (e.g. a cache hit)."""

        async def replay() -> ChunkIterator:
            for chunk in chunks:
                yield chunk

        return cls(replay())

    async def _observe(self, source: ChunkIterator) -> ChunkIterator:
        async for chunk in source:
            usage = chunk.get("usage")
            if usage:
                self.usage = usage
            yield chunk
        self.completed = True

    def pipe(self, wrap: Callable[[ChunkIterator], ChunkIterator]) -> Stream:
        """Replace the iterator with ``wrap(iterator)`` (an async generator over the chunks); returns self."""
        self._iterator = wrap(self._iterator)
        self._layers.append(self._iterator)
        return self

    def __aiter__(self) -> ChunkIterator:
        return self._iterator

    async def aclose(self) -> None:
        """Close every layer from the outside in; safe to call more than once."""
        for layer in reversed(self._layers):
            close = getattr(layer, "aclose", None)
            if close is not None:
                await close()


async def client_chunks(call: Call, stream: Stream) -> ChunkIterator:
    """The chunks of ``stream`` its client receives, whatever the transport (SSE or WebSocket frames).

    Providers always end with a usage-only chunk (stages need the usage); the client gets it only when it
    asked (``stream_options.include_usage``), as OpenAI does.
    """
    async for chunk in stream:
        if not call.include_usage and not chunk.get("choices") and "usage" in chunk:
            continue
        yield chunk


Result = Response | Stream
Handler = Callable[[Call], Awaitable[Result]]


def later(call: Call, work: After) -> Awaitable[None] | None:
    """Run ``work`` once ``call``'s response is written (queued on ``call.after``) or, where nothing runs
    that list, now: returns what the caller must then await (None when done or queued)."""
    if call.after is not None:
        call.after.append(work)
        return None
    return work()


@runtime_checkable
class Stage(Protocol):
    """One pipeline step; see the module docstring for the full contract."""

    async def handle(self, call: Call, next: Handler) -> Result:
        """Handle ``call``: return ``await next(call)``, possibly wrapped, or a result of your own."""
        ...


async def _end_of_chain(call: Call) -> Result:
    # Only reachable when the chain has no router, which build_stages never produces.
    raise GatewayError(500, "No router stage is configured.", "server_error")


def build_chain(stages: list[Stage]) -> Handler:
    """Bind ``stages`` into one handler once, at startup, so the hot path is plain awaits."""
    handler: Handler = _end_of_chain
    for stage in reversed(stages):
        handler = partial(stage.handle, next=handler)
    return handler


async def run_hooks(stages: Iterable[object], name: str) -> None:
    """Await ``stage.<name>()`` on every stage that defines it (``start`` or ``close``)."""
    for stage in stages:
        hook = getattr(stage, name, None)
        if hook is not None:
            result = hook()
            if inspect.isawaitable(result):
                await result
