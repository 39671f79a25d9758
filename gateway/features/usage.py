"""Cost tracking and the usage ledger stage: every request's tokens and cost, recorded off the request path.

:class:`UsageStage` is the first stage of the chain (right after authentication), so it sees every request
the pipeline handles: answers, cache hits, rate-limit and budget refusals, upstream errors. For each it

- works out the tokens (from the upstream's ``usage``; estimated when there is none, see
  :mod:`gateway.token_estimate`) and the cost (``gateway.pricing``; 0 for a cache hit or a failure, since no
  upstream charged anything),
- sets ``x-gateway-cost-usd`` on the response. A stream's headers leave before its cost is known, so a stream
  carries the most it can cost (prompt bound plus ``max_tokens``) with ``x-gateway-cost-final: false``,
  and its real cost rides in the final usage chunk as ``usage.cost_usd`` (sent when the client asked for
  ``stream_options.include_usage``). Complete responses carry ``usage.cost_usd`` as well;
- queues one :class:`~gateway.ledger.UsageRecord` for the usage ledger (whatever its sink).

The budgets stage settles with the same numbers: :func:`account` computes a request's accounting once and
keeps it on the call, so the ledger, the header and the budget always agree.
"""

from __future__ import annotations

import logging
import time
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway import jsonio
from gateway.answers import usage_counts
from gateway.errors import GatewayError
from gateway.ledger import Ledger, UsageRecord, UsageSource
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Call, ChunkIterator, Handler, Response, Result, Stream, later
from gateway.pricing import (
    ModelPrice,
    PriceTable,
    bundled_price_table,
    cost_nanos,
    format_usd,
    max_cost_nanos,
)
from gateway.token_estimate import (
    estimate_prompt_tokens,
    estimate_text_tokens,
    max_prompt_tokens,
)
from gateway.usage_bodies import LogBodiesConfig, Redaction, body_record, prompt_text
from gateway.usage_feed import UsageFeed
from gateway.usage_sink import open_ledger

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, ModelConfig, RouteConfig

logger = logging.getLogger("gateway.usage")

COST_HEADER = "x-gateway-cost-usd"
COST_FINAL_HEADER = "x-gateway-cost-final"
USAGE_SOURCE_HEADER = "x-gateway-usage-source"
# Set by the budgets stage when a budget passed its soft limit; counted here (the budgets stage imports this).
BUDGET_WARNING_HEADER = "x-gateway-budget-warning"
CACHE_HEADER = "x-gateway-cache"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware (the default clock)."""
    return datetime.now(UTC)


class Pricing:
    """Which price applies to a route: its own ``pricing``, else its model's, else the bundled table.

    ``models`` (the config's) are priced once here, since a route's price only changes with the config: a
    request then looks its prices up instead of rebuilding them. Any other model is priced when asked.
    """

    def __init__(self, table: PriceTable, models: Sequence[ModelConfig] = ()) -> None:
        self.table = table
        # id(model) -> (model, its max price, id(route) -> (route, price)); the objects are kept to check
        # identity, so a different model that happens to reuse an id is never served another's price.
        self._known: dict[
            int, tuple[ModelConfig, ModelPrice | None, dict[int, tuple[RouteConfig, ModelPrice | None]]]
        ] = {}
        for model in models:
            routes = {id(route): (route, self._price(model, route)) for route in model.routes}
            self._known[id(model)] = (model, self._max_price(model), routes)

    def _price(self, model: ModelConfig, route: RouteConfig) -> ModelPrice | None:
        configured = getattr(route, "pricing", None) or model.pricing
        if configured is not None:
            return ModelPrice(
                input=Decimal(str(configured.input_per_1m)),
                output=Decimal(str(configured.output_per_1m)),
                cache_read=_decimal(configured.cache_read_per_1m),
                cache_write=_decimal(configured.cache_write_per_1m),
            )
        return self.table.lookup(route.model or model.name)

    def _max_price(self, model: ModelConfig) -> ModelPrice | None:
        prices = [p for p in (self._price(model, route) for route in model.routes) if p is not None]
        if not prices:
            return None
        return ModelPrice(input=max(p.input for p in prices), output=max(p.output for p in prices))

    def price(self, model: ModelConfig, route: RouteConfig) -> ModelPrice | None:
        """The price of ``route`` of ``model``, or None when nothing prices it."""
        known = self._known.get(id(model))
        if known is not None and known[0] is model:
            entry = known[2].get(id(route))
            if entry is not None and entry[0] is route:
                return entry[1]
        return self._price(model, route)

    def max_price(self, model: ModelConfig) -> ModelPrice | None:
        """The highest input and output price over ``model``'s routes: a bound whichever route answers."""
        known = self._known.get(id(model))
        if known is not None and known[0] is model:
            return known[1]
        return self._max_price(model)

    def unpriced(self, models: list[ModelConfig]) -> list[str]:
        """``alias -> provider/model`` of every route nothing prices (they cost 0 and never use budget)."""
        return [
            f"{model.name} -> {route.provider}/{route.model or model.name}"
            for model in models
            for route in model.routes
            if self.price(model, route) is None
        ]


_PROMPT_BOUND = "usage.prompt_bound"


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    """The client's output cap (``max_completion_tokens`` or ``max_tokens``), or None."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def prompt_bound(call: Call) -> int:
    """An upper bound on the prompt tokens of ``call`` (see :mod:`gateway.token_estimate`).

    Computed once per call (it serialises the prompt) and kept on its scratch: the budget's reservation and
    the usage stage's cost bound both ask, and nothing after the budget stage changes the prompt.
    """
    bound = call.scratch.get(_PROMPT_BOUND)
    if bound is None:
        if call.endpoint == "embeddings":
            bound = len(jsonio.dumps(call.body.get("input"))) + 1
        else:
            messages = call.body.get("messages") or []
            bound = max_prompt_tokens(messages, call.body.get("tools") or call.body.get("functions"))
        call.scratch[_PROMPT_BOUND] = bound
    return bound


def max_cost(call: Call, pricing: Pricing, default_max_tokens: int) -> int:
    """The most ``call`` can cost in nano-dollars: the prompt bound plus ``max_tokens`` for each of the ``n``
    choices asked for, at the dearest of the model's routes."""
    completion = 0
    if call.endpoint != "embeddings":
        n = call.body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        completion = (requested_max_tokens(call.body) or default_max_tokens) * choices
    return max_cost_nanos(pricing.max_price(call.model_config), prompt_bound(call), completion)


def _estimated_prompt(call: Call) -> int:
    if call.endpoint == "embeddings":
        data = call.body.get("input")
        texts = [data] if isinstance(data, str) else [t for t in data or [] if isinstance(t, str)]
        return sum(estimate_text_tokens(t) for t in texts)
    return estimate_prompt_tokens(call.body.get("messages") or [])


def _message_texts(body: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or {} if isinstance(choice, dict) else {}
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
        for tool_call in message.get("tool_calls") or []:
            function = tool_call.get("function") or {} if isinstance(tool_call, dict) else {}
            texts += [v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str)]
    return texts


@dataclass
class StreamMeter:
    """What went by in a stream, for estimating its completion when the upstream reports no usage."""

    characters: list[str] = field(default_factory=list)

    def observe(self, chunk: dict[str, Any]) -> None:
        """Collect the generated text of ``chunk``."""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {} if isinstance(choice, dict) else {}
            if isinstance(delta.get("content"), str):
                self.characters.append(delta["content"])
            for tool_call in delta.get("tool_calls") or []:
                function = tool_call.get("function") or {} if isinstance(tool_call, dict) else {}
                self.characters += [
                    v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str)
                ]

    def completion_tokens(self) -> int:
        """Estimated tokens generated so far."""
        return estimate_text_tokens("".join(self.characters))


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (1.6 us for these nine, against
# 0.6 us), on every request. Treat it as immutable: the ledger, the header and the budget read the same one.
@dataclass(slots=True)
class Accounting:
    """A request's tokens and cost, computed once (:func:`account`), shared by ledger, header and budget."""

    prompt_tokens: int
    completion_tokens: int
    source: UsageSource
    cost_nanos: int
    status: int
    cache_hit: bool
    route: str | None
    # Prompt tokens the upstream served from its own prompt cache (``prompt_tokens_details.cached_tokens``).
    cached_tokens: int = 0
    # A response-cache hit: what its tokens would have cost on the model's first route.
    avoided_cost_nanos: int = 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def cached_prompt_tokens(usage: dict[str, Any] | None) -> int:
    """``usage.prompt_tokens_details.cached_tokens`` when it is a sane count, else 0 (untrusted input)."""
    details = usage.get("prompt_tokens_details") if usage is not None else None
    return _count(details.get("cached_tokens") if isinstance(details, dict) else None)


_ACCOUNTING = "usage.accounting"
_METER = "usage.meter"
_TTFT = "usage.ttft_ms"


CACHE_HEADER = "x-gateway-cache"
# Where the budget stage leaves the id of the reservation a request held, for its ledger record.
RESERVATION_SCRATCH = "budget.reservation_id"


def cache_hit(call: Call) -> bool:
    """Whether the cache answered ``call`` (the cache stage's ``x-gateway-cache: HIT``)."""
    return call.response_headers.get(CACHE_HEADER, "").upper() == "HIT"


def stream_meter(call: Call, stream: Stream) -> StreamMeter:
    """The call's stream meter, piping it into ``stream`` the first time (innermost of the usage wrappers)."""
    meter = call.scratch.get(_METER)
    if meter is None:
        meter = call.scratch[_METER] = StreamMeter()

        async def observe(chunks: ChunkIterator) -> ChunkIterator:
            async for chunk in chunks:
                meter.observe(chunk)
                yield chunk

        stream.pipe(observe)
    return meter


def account(call: Call, result: Result | None, pricing: Pricing, *, status: int = 200) -> Accounting:
    """The tokens and cost of ``call`` given its ``result`` (None when it failed with ``status``).

    Computed once per call; later calls return the first answer, so every consumer sees the same numbers.
    """
    done = call.scratch.get(_ACCOUNTING)
    if done is not None:
        return done
    hit = cache_hit(call)
    route = call.route
    prompt = completion = 0
    source: UsageSource = "none"
    usage: dict[str, Any] | None = None
    if isinstance(result, Response):
        usage = result.usage
        status = result.status
    elif isinstance(result, Stream):
        usage = result.usage
    counts = usage_counts(usage) if usage is not None else None
    if isinstance(counts, str):
        # HTTP providers blank such a usage before it gets here (and log it); this catches any other source.
        logger.warning("request %s: invalid usage (%s), tokens estimated", call.request_id, counts)
    if isinstance(counts, tuple):
        prompt, completion = counts
        source = "reported"
    elif isinstance(result, Response) and status < 400:
        prompt = _estimated_prompt(call)
        completion = sum(estimate_text_tokens(t) for t in _message_texts(result.body))
        source = "estimated"
    elif isinstance(result, Stream) and route is not None:
        # Cut short or no usage chunk: the upstream still charges for what it generated.
        meter = call.scratch.get(_METER)
        prompt = _estimated_prompt(call)
        completion = meter.completion_tokens() if meter is not None else 0
        source = "estimated"
    cost = avoided = 0
    if route is not None and not hit and source != "none":
        read, written = cache_counts(usage) if source == "reported" else (0, 0)
        cost = cost_nanos(pricing.price(call.model_config, route), prompt, completion, read, written)
    saved = call.scratch.get("cache.saved_usage")  # the cache stage's saved_* counts of a hit
    if hit and isinstance(saved, dict) and call.model_config.routes:
        avoided = cost_nanos(
            pricing.price(call.model_config, call.model_config.routes[0]),
            _count(saved.get("saved_prompt_tokens")),
            _count(saved.get("saved_completion_tokens")),
        )
    accounting = Accounting(
        prompt_tokens=prompt,
        completion_tokens=completion,
        source=source,
        cost_nanos=cost,
        status=status,
        cache_hit=hit,
        route=f"{route.provider}/{route.model or call.model}" if route is not None else None,
        cached_tokens=min(cached_prompt_tokens(usage), prompt) if isinstance(counts, tuple) else 0,
        avoided_cost_nanos=avoided,
    )
    call.scratch[_ACCOUNTING] = accounting
    return accounting


def cache_counts(usage: dict[str, Any] | None) -> tuple[int, int]:
    """Prompt tokens read from and written to the provider's prompt cache, per ``usage.prompt_tokens_details``
    (``cached_tokens``, and the gateway's ``cache_creation_tokens``); 0 for anything not a count."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if not isinstance(details, dict):
        return 0, 0

    def count(name: str) -> int:
        value = details.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return count("cached_tokens"), count("cache_creation_tokens")


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _answer_text(call: Call, answer: Result | None) -> str:
    """The generated text of ``answer``: a response's messages, or what a stream sent before it ended."""
    if isinstance(answer, Response):
        return "".join(_message_texts(answer.body))
    meter = call.scratch.get(_METER)
    return "".join(meter.characters) if isinstance(answer, Stream) and meter is not None else ""


def with_cost(body: dict[str, Any], accounting: Accounting, cost_usd: str | None = None) -> dict[str, Any]:
    """``body`` with ``usage.cost_usd`` added, as a copy: the cache stage may hold on to the original.
    ``cost_usd`` is ``format_usd(accounting.cost_nanos)`` when the caller has it already (the cost header).

    When the tokens were estimated (the upstream reported none, or one that could not be trusted), the usage
    the client sees is the estimate, labelled ``usage_source: estimated``, since that is what was charged.
    """
    usage = body.get("usage")
    if accounting.source == "estimated" and "usage" in body:
        usage = {
            "prompt_tokens": accounting.prompt_tokens,
            "completion_tokens": accounting.completion_tokens,
            "total_tokens": accounting.prompt_tokens + accounting.completion_tokens,
            "usage_source": "estimated",
        }
    if not isinstance(usage, dict):
        return body
    if cost_usd is None:
        cost_usd = format_usd(accounting.cost_nanos)
    return {**body, "usage": {**usage, "cost_usd": cost_usd}}


CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection before the answer ended"


def ending_status(error: BaseException | None) -> int:
    """The status a stream's ledger record gets for how it ended (``error`` None: it completed)."""
    if error is None:
        return 200
    if isinstance(error, GatewayError):
        return error.status
    if isinstance(error, GeneratorExit | CancelledError):
        return CLIENT_CLOSED
    return 500


async def _ended(status: int) -> None:
    """A finished :class:`FinalizingIterator`'s ``on_end``: it already ran."""


class FinalizingIterator:
    """An async iterator over ``source`` that calls ``on_end(status)`` exactly once: at the end (200), on an
    error (its status), or on :meth:`aclose` (499), even when iteration never started (a client that left
    before the first chunk), which a plain async generator's ``finally`` would miss. ``on_chunk`` may
    replace each chunk.
    """

    def __init__(
        self,
        source: ChunkIterator,
        on_end: Callable[[int], Awaitable[None]],
        on_chunk: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._source = source
        self._on_end = on_end
        self._on_chunk = on_chunk
        self._ended = False

    def __aiter__(self) -> FinalizingIterator:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._ended:
            raise StopAsyncIteration
        try:
            chunk = await self._source.__anext__()
        except StopAsyncIteration:
            await self._end(200)
            raise
        except BaseException as exc:
            await self._end(ending_status(exc))
            raise
        return self._on_chunk(chunk) if self._on_chunk is not None else chunk

    async def _end(self, status: int) -> None:
        if not self._ended:
            self._ended = True
            on_end, self._on_end = self._on_end, _ended
            # Nothing is called after the end: letting go of the callbacks, which hold the stream that holds
            # this iterator, frees a finished stream by reference counting instead of the cyclic collector.
            self._on_chunk = None
            await on_end(status)

    async def aclose(self) -> None:
        """Finish (once) without consuming the rest; :meth:`Stream.aclose` closes the inner layers."""
        await self._end(CLIENT_CLOSED)


class UsageStage:
    """Pipeline stage: cost header and one ledger record per request (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        pricing: Pricing,
        timezone: ZoneInfo,
        *,
        default_max_tokens: int = 4096,
        clock: Clock = utc_now,
        metrics: GatewayMetrics | None = None,
        log_bodies: LogBodiesConfig | None = None,
        feed: UsageFeed | None = None,
        region: str | None = None,
    ) -> None:
        self.ledger = ledger
        # Live subscribers (GraphQL); None: nobody can subscribe.
        self.feed = feed
        # This replica's server.region: the region of a request no upstream answered (cache hit, refusal).
        self.region = region
        self.log_bodies = log_bodies
        self.redaction = Redaction(log_bodies.redact) if log_bodies is not None else None
        self.pricing = pricing
        self.timezone = timezone
        self.default_max_tokens = default_max_tokens
        self.clock = clock
        # (UTC minute, its local date): see local_day.
        self._day: tuple[float, str] | None = None
        # None with features.metrics.enabled off: nothing is counted.
        self.metrics = metrics

    async def start(self) -> None:
        """Open the ledger."""
        await self.ledger.start()

    async def close(self) -> None:
        """Write every queued record and close the ledger."""
        await self.ledger.close()

    async def handle(self, call: Call, next: Handler) -> Result:
        """Run the rest of the chain, then account for the call (when a stream ends, for a stream)."""
        arrived = self.clock()
        if self.metrics is not None:
            self.metrics.in_flight.inc()  # until _finish, which runs once per call (streams: at their end)
        try:
            result = await next(call)
        except GatewayError as exc:
            accounting = account(call, None, self.pricing, status=exc.status)
            self._finish(call, arrived, accounting, error_code=exc.code)
            raise
        except BaseException as exc:  # a bug (500) or a cancelled request (499)
            self._finish(call, arrived, account(call, None, self.pricing, status=ending_status(exc)))
            raise
        if isinstance(result, Response):
            accounting = account(call, result, self.pricing)
            self._cost_headers(call, accounting)
            # The record is written once the answer is out; it keeps the times of now, when it was ready.
            latency_ms, overhead_ms = self._times(call)
            later(
                call,
                partial(self._record, call, arrived, accounting, None, result, latency_ms, overhead_ms),
            )
            # The cost just put in the header, formatted once.
            result.body = with_cost(result.body, accounting, call.response_headers[COST_HEADER])
            return result
        return self._wrap_stream(call, result, arrived)

    def _wrap_stream(self, call: Call, stream: Stream, arrived: datetime) -> Stream:
        stream_meter(call, stream)
        if COST_HEADER not in call.response_headers:
            bound = 0 if cache_hit(call) else max_cost(call, self.pricing, self.default_max_tokens)
            call.response_headers[COST_HEADER] = format_usd(bound)
            call.response_headers[COST_FINAL_HEADER] = "false"

        def add_cost(chunk: dict[str, Any]) -> dict[str, Any]:
            if _TTFT not in call.scratch:
                call.scratch[_TTFT] = round((time.perf_counter() - call.started) * 1000.0, 3)
            if "usage" not in chunk:
                return chunk
            return with_cost(chunk, account(call, stream, self.pricing))

        async def on_end(status: int) -> None:
            accounting = account(call, stream, self.pricing, status=status)
            self._finish(call, arrived, accounting, header=False, answer=stream)

        return stream.pipe(lambda chunks: FinalizingIterator(chunks, on_end, add_cost))

    def local_day(self, ts: float) -> str:
        """The date at Unix time ``ts`` in the budgets' time zone (ISO), worked out once per UTC minute.

        Converting every request's time to the zone cost about 1% of a cache hit. A minute whose start and
        end fall on one local date lies wholly within it (zone offsets change at most once in a minute), so
        its date is kept for the rest of the minute; any other minute is converted request by request.
        """
        minute = ts // 60
        known = self._day
        if known is not None and known[0] == minute:
            return known[1]
        day = datetime.fromtimestamp(ts, self.timezone).date()
        first = datetime.fromtimestamp(minute * 60, self.timezone).date()
        if first == day == datetime.fromtimestamp(minute * 60 + 59.999999, self.timezone).date():
            self._day = (minute, day.isoformat())
        return day.isoformat()

    def _finish(
        self,
        call: Call,
        arrived: datetime,
        accounting: Accounting,
        *,
        header: bool = True,
        error_code: str | None = None,
        answer: Result | None = None,
    ) -> None:
        if header:
            self._cost_headers(call, accounting)
        self._record(call, arrived, accounting, error_code, answer, *self._times(call))

    @staticmethod
    def _cost_headers(call: Call, accounting: Accounting) -> None:
        call.response_headers[COST_HEADER] = format_usd(accounting.cost_nanos)
        if accounting.source != "none":
            call.response_headers[USAGE_SOURCE_HEADER] = accounting.source

    @staticmethod
    def _times(call: Call) -> tuple[float, float]:
        """The call's latency and overhead so far, in milliseconds, as the record keeps them."""
        return round((time.perf_counter() - call.started) * 1000.0, 3), round(call.overhead_ms(), 3)

    def _record(
        self,
        call: Call,
        arrived: datetime,
        accounting: Accounting,
        error_code: str | None,
        answer: Result | None,
        latency_ms: float,
        overhead_ms: float,
    ) -> None:
        """Write the call's usage record (ledger, live feed, metrics, logged bodies)."""
        ts = arrived.timestamp()
        headers = call.response_headers
        cache_status = headers.get(CACHE_HEADER)
        record = UsageRecord(
            ts=ts,
            day=self.local_day(ts),
            request_id=call.request_id,
            key_name=call.key.name,
            team=call.key.team,
            model=call.model,
            route=accounting.route,
            endpoint=call.endpoint,
            stream=call.stream,
            prompt_tokens=accounting.prompt_tokens,
            completion_tokens=accounting.completion_tokens,
            usage_source=accounting.source,
            cost_nanos=accounting.cost_nanos,
            latency_ms=latency_ms,
            status=accounting.status,
            cache_hit=accounting.cache_hit,
            attempts=call.attempts,
            ttft_ms=call.scratch.get(_TTFT),
            cached_tokens=accounting.cached_tokens,
            avoided_cost_nanos=accounting.avoided_cost_nanos,
            cache_status=cache_status,
            error_code=error_code,
            overhead_ms=overhead_ms,
            # Where the prompt was processed: the answering route's region (None when the route names none),
            # or this replica's when no upstream answered (a cache hit, a refusal).
            region=call.route.region if call.route is not None else self.region,
            reservation_id=call.scratch.get(RESERVATION_SCRATCH),
            # The request id stands in without tracing: the log's trace column then still finds the request.
            trace_id=call.trace_id or call.request_id,
        )
        self.ledger.record(record)
        if self.feed is not None:
            self.feed.publish(record)
        if self.metrics is not None:
            self.metrics.in_flight.dec()
            self.metrics.observe(
                record, cache_status, error_code, budget_warning=BUDGET_WARNING_HEADER in headers
            )
        if self.log_bodies is not None and self.redaction is not None:
            self.ledger.record_body(
                body_record(
                    self.log_bodies,
                    self.redaction,
                    ts=record.ts,
                    day=record.day,
                    request_id=record.request_id,
                    key_name=record.key_name,
                    request=prompt_text(call.body),
                    response=_answer_text(call, answer),
                )
            )


def usage_stage(
    config: GatewayConfig,
    *,
    clock: Clock = utc_now,
    ledger: Ledger | None = None,
    metrics: GatewayMetrics | None = None,
    feed: UsageFeed | None = None,
) -> UsageStage:
    """The usage stage for ``config``: ledger at ``usage.database``, config prices over the bundled table.

    ``ledger`` and ``metrics``, when given, are the app's (shared by every config a hot reload swaps in).
    """
    settings = config.features.budgets
    pricing = Pricing(bundled_price_table(), config.models)
    for route in pricing.unpriced(config.models):
        logger.warning("no price for route %s: its requests cost 0 and use no budget", route)
    return UsageStage(
        ledger if ledger is not None else open_ledger(config.usage),
        pricing,
        settings.zone,
        default_max_tokens=settings.default_max_tokens,
        clock=clock,
        metrics=metrics,
        log_bodies=config.usage.log_bodies,
        feed=feed,
        region=config.server.region,
    )
