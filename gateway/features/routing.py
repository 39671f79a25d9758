"""The routing stage: load balancing, retries, failover, cooldowns and fallbacks across a model's routes.

The last stage of the pipeline. For each call it walks the model alias's routes in the order the configured
:mod:`strategy <gateway.features.routing_strategies>` gives, skipping routes whose circuit is open
(:mod:`gateway.features.cooldown`, shared by replicas through the state store), and calls the provider of
each through :func:`gateway.router.attempt` until one answers:

- **Retried** on the next route: connection errors and timeouts (502/504 from the provider), upstream 5xx,
  upstream 429, and upstream credential failures (502), which another route may not share. **Never
  retried**: client errors (4xx other than 429), which would fail the same way everywhere.
- **Another route first**: a retry goes to a route this request has not tried yet when one takes traffic;
  a route already tried is retried only after a full-jitter back-off (the one tried longest ago first).
- **Bounded**: at most ``max_attempts`` per alias, and nothing starts after ``deadline_seconds``.
- **retry-after**: an upstream 429 with ``retry-after`` holds that route (for every replica) for that long,
  at most ``retry_after_cap_seconds``. The router waits for a held route only up to ``max_wait_seconds``.
- **The last option**: when no route of the alias or its fallbacks could be tried because circuits are open,
  an open circuit is a hint rather than a wall: one request at a time probes such a route (a model with one
  route is never shut out by its own breaker); the others fail fast with 503 (or 429 when every route is
  rate limited) and ``retry-after``, without calling a dead upstream.
- **Fallbacks**: when an alias's routes are exhausted, its ``fallbacks`` aliases are tried in order (and
  theirs, breadth first, each alias once).
- **Streams**: the router pulls the first chunk inside the attempt loop, so a stream that fails before its
  first chunk fails over like any request. After the first chunk is on its way to the client, an upstream
  break is recorded and re-raised, and the route layer ends the stream with an SSE error event.

``x-gateway-route`` (the route that answered) and ``x-gateway-attempts`` (upstream calls made) are set on
every response, errors included.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from gateway.admission import Claim
from gateway.config import ModelConfig, RouteConfig
from gateway.errors import GatewayError
from gateway.features.cooldown import Admission, CooldownTracker, RouteHealth, state_of
from gateway.features.regions import allowed, restriction_message, tiered_order
from gateway.features.routing_config import CooldownConfig, RoutingConfig
from gateway.features.routing_strategies import RouteStats, RouteTarget, make_strategy
from gateway.params import drop_allowed, refusal, support_of
from gateway.pipeline import Call, Handler, Response, Result, Stream
from gateway.providers.base import Provider
from gateway.router import attempt
from gateway.stores.after_writes import after_answer
from gateway.stores.base import Store

if TYPE_CHECKING:
    from gateway.features.cooldown_events import CooldownEvents
    from gateway.metrics import GatewayMetrics

Chunk = dict[str, Any]
__all__ = ["CooldownConfig", "RoutingConfig", "RoutingStage", "routes_endpoint"]


class Deadline:
    """``asyncio.timeout(delay)`` around one attempt, as two plain calls: the same timer on the loop, the
    same cancellation of the current task and the same ``uncancel`` bookkeeping, without the context
    manager's two coroutines, state enum and lookups (40 % of its cost, about 1 % of a production request's
    CPU). ``stop`` after the awaited call, with the exception it raised if any; when it answers True the
    caller raises ``TimeoutError`` (as ``asyncio.timeout`` would)."""

    __slots__ = ("cancelling", "expired", "handle", "task")

    def __init__(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Deadline should be used inside a task")
        self.task = task
        self.cancelling = task.cancelling()
        self.expired = False
        self.handle = loop.call_at(loop.time() + delay, self._expire)

    def _expire(self) -> None:
        self.task.cancel()
        self.expired = True

    def stop(self, error: BaseException | None = None) -> bool:
        """Cancel the timer; True when ``error`` is the cancellation this deadline caused and no other
        cancellation of the task is pending (an outer cancel stays a ``CancelledError``)."""
        self.handle.cancel()
        return (
            self.expired
            and self.task.uncancel() <= self.cancelling
            and isinstance(error, asyncio.CancelledError)
        )


def is_retryable(error: GatewayError) -> bool:
    """Whether another attempt may succeed: upstream rate limits and upstream faults, never client errors."""
    return error.status == 429 or error.status >= 500


def retry_after_seconds(error: GatewayError) -> float | None:
    """The upstream's ``retry-after`` in seconds (delta form), or None."""
    value = error.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form is rare from APIs; treat it as absent
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def fallback_chain(alias: str, models: Mapping[str, ModelConfig]) -> list[str]:
    """``alias`` then its fallbacks, breadth first, each alias once (cycles are harmless)."""
    chain: list[str] = []
    queue = [alias]
    while queue:
        name = queue.pop(0)
        if name in chain or name not in models:
            continue
        chain.append(name)
        queue.extend(getattr(models[name], "fallbacks", None) or [])
    return chain


def targets(model: ModelConfig) -> list[tuple[RouteTarget, RouteConfig]]:
    """The alias's routes as strategy targets, each with its config (``model`` filled with the alias)."""
    out = []
    for route in model.routes:
        resolved = route if route.model else route.model_copy(update={"model": model.name})
        assert resolved.model is not None
        out.append((RouteTarget(route.provider, resolved.model, route.weight, route.region), resolved))
    return out


CLAIM = "routing.claim"
HEALTH = "routing.health"
_UNREAD = b"\x00unread"  # no health read with the admission for this route (never a stored value: JSON)


@dataclass
class _Outcome:
    """What one alias's attempts ended with, for the final answer when nothing succeeded."""

    last_error: GatewayError | None = None
    retry_at: float | None = None
    all_rate_limited: bool = True
    attempts: int = 0
    # A route was skipped because its circuit is open after failures (not held by a rate limit).
    open_skipped: bool = False
    # The 400 of the first route skipped because its provider cannot honour a parameter (gateway/params.py).
    refused: GatewayError | None = None
    # Routes left out because they are outside the key's allowed_regions (gateway/features/regions.py).
    outside: list[RouteTarget] = field(default_factory=list)


class RoutingStage:
    """The router: picks routes, retries, fails over and records route health; see the module docstring.

    ``rng``, ``clock`` (wall-clock seconds, shared with other replicas), ``monotonic`` and ``sleep`` are
    injectable so tests are deterministic and never sleep.
    """

    def __init__(
        self,
        config: RoutingConfig,
        providers: Mapping[str, Provider],
        models: Mapping[str, ModelConfig],
        store: Store,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        metrics: GatewayMetrics | None = None,
        region: str | None = None,
        events: CooldownEvents | None = None,
    ) -> None:
        """``region`` is this replica's (``server.region``): its routes are tried first. ``events``: the
        cooldowns other regions publish, and where this one publishes its own (multi-region)."""
        self.config = config
        self.region = region
        self.metrics = metrics
        self.providers = providers
        self.models = models
        self.rng = rng if rng is not None else random.Random()
        self.stats = RouteStats(alpha=config.latency_alpha)
        self.strategy = make_strategy(
            config.strategy,
            rng=self.rng,
            stats=self.stats,
            latency_buffer=config.latency_buffer,
            latency_explore=config.latency_explore,
        )
        self.events = events
        self.cooldowns = CooldownTracker(
            store, config.cooldown.policy(), clock, on_open=events.publish if events is not None else None
        )
        # Per alias, its model and its routes as targets, made once rather than per request (_routes_of), and
        # its routes' keys with the store keys of their health, read with the admission.
        self._targets = {alias: (model, targets(model)) for alias, model in models.items()}
        self._health_keys = {
            alias: [(target.key, self.cooldowns.key_of(target.key)) for target, _ in routes]
            for alias, (_, routes) in self._targets.items()
        }
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep

    async def snapshot(self) -> dict[str, Any]:
        """The routing state for the admin API: per route, its circuit state and the window's requests and
        failures (shared by replicas), and this replica's requests in flight and latency average."""
        now = self.clock()
        models: dict[str, Any] = {}
        for alias, model in self.models.items():
            rows = []
            for target, _ in targets(model):
                health = await self.cooldowns.health(target.key)
                requests, failures = await self.cooldowns.counts(target.key)
                latency = self.stats.latency_ewma.get(target.key)
                until = (
                    health.open_until if health.open_until is not None and health.open_until > now else None
                )
                rows.append(
                    {
                        "route": target.key,
                        "weight": target.weight,
                        "region": target.region,
                        "state": state_of(health, now),
                        "cooling_for_s": None if until is None else round(until - now, 3),
                        "rate_limited": health.rate_limited,
                        "recent_requests": requests,
                        "recent_failures": failures,
                        "in_flight": self.stats.in_flight.get(target.key, 0),
                        "latency_ms": None if latency is None else round(latency * 1000, 3),
                    }
                )
            models[alias] = {"fallbacks": list(model.fallbacks), "routes": rows}
        return {"strategy": self.config.strategy, "models": models}

    async def start(self) -> None:
        """Adopt other regions' cooldowns of this config's routes from now on (with cooldown events)."""
        if self.events is not None:
            self.events.attach(self.adopt)

    async def adopt(self, route: str, health: RouteHealth) -> None:
        """Another region opened ``route``: take it out here too, if this config has it."""
        if route in self.route_keys():
            await self.cooldowns.adopt(route, health)

    def route_keys(self) -> set[str]:
        """Every configured route as ``provider/model`` (what ``snapshot`` lists)."""
        return {target.key for model in self.models.values() for target, _ in targets(model)}

    def admission(self, call: Call) -> Claim | None:
        """The health of the model's routes, read in the request's admission round trip (``_choose`` uses
        each once, for the route's first look; a later look reads it again)."""
        routes = self._health_keys.get(call.model)
        # In process a read is no round trip: the memory store is read when a route is looked at.
        remote = self.cooldowns.store.backend != "memory"
        claim = Claim(self.cooldowns.store, reads=[key for _, key in routes]) if routes and remote else None
        call.scratch[CLAIM] = claim
        return claim

    async def handle(self, call: Call, next: Handler) -> Result:
        """Serve ``call`` from the first route that answers; ``next`` is never called (the router is last)."""
        claim = call.scratch.get(CLAIM)
        if claim is not None and claim.done and not claim.unavailable:
            routes = self._health_keys[call.model]
            call.scratch[HEALTH] = {route: raw for (route, _), raw in zip(routes, claim.values, strict=True)}
        deadline = self.monotonic() + self.config.deadline_seconds
        outcome = _Outcome()
        call.response_headers["x-gateway-attempts"] = str(call.attempts)
        chain = fallback_chain(call.model, self.models)
        # A second pass only when the first could try nothing because circuits were open: then they are the
        # last option, and one request at a time probes them rather than every request failing unanswered.
        for last_option in (False, True):
            if last_option and (outcome.attempts or not outcome.open_skipped):
                break
            for alias in chain:
                result = await self._try_alias(call, alias, deadline, outcome, last_option)
                if result is not None:
                    if alias != call.model:
                        call.scratch["routing.fallback"] = alias
                    return result
                if self.monotonic() >= deadline:
                    raise self._final_error(call, outcome)
        raise self._final_error(call, outcome)

    def _final_error(self, call: Call, outcome: _Outcome) -> GatewayError:
        attempts = {"x-gateway-attempts": str(call.attempts)}
        regions = call.key.allowed_regions
        if regions is not None and outcome.outside and (outcome.refused is None or outcome.last_error):
            # Failing over further would cross the key's residency boundary: say so rather than leave the
            # client guessing why a model with healthy routes elsewhere answers 503.
            message = restriction_message(call.model, call.key.name, regions, outcome.outside)
            if outcome.last_error is not None:
                message += f" Last upstream error: {outcome.last_error.message}"
            headers = dict(attempts)
            if outcome.retry_at is not None:
                headers["retry-after"] = str(max(1, math.ceil(outcome.retry_at - self.clock())))
            code = "no_route_in_allowed_regions"
            return GatewayError(503, message, "upstream_error", code, headers=headers)
        if outcome.last_error is not None:
            outcome.last_error.headers.update(attempts)
            return outcome.last_error
        if outcome.refused is not None:
            return outcome.refused
        if outcome.retry_at is None:
            return GatewayError(
                503,
                f"Model '{call.model}' has no route taking traffic (every route has weight 0).",
                "upstream_error",
                "no_route_available",
                headers=attempts,
            )
        wait = max(1, math.ceil(outcome.retry_at - self.clock()))
        headers = {**attempts, "retry-after": str(wait)}
        if outcome.all_rate_limited:
            return GatewayError(
                429,
                f"Every route of model '{call.model}' is rate limited upstream; retry after {wait} s.",
                "rate_limit_error",
                "upstream_rate_limited",
                headers=headers,
            )
        return GatewayError(
            503,
            f"Every route of model '{call.model}' is cooling down after upstream failures; "
            f"retry after {wait} s.",
            "upstream_error",
            "all_routes_cooling_down",
            headers=headers,
        )

    async def _try_alias(
        self, call: Call, alias: str, deadline: float, outcome: _Outcome, last_option: bool = False
    ) -> Result | None:
        # Residency first: a route outside the key's allowed regions is never a candidate, not even a
        # failover or fallback one.
        candidates, outside = allowed(self._routes_of(alias), call.key.allowed_regions)
        outcome.outside.extend(outside)
        routes = {
            target.key: (target, config)
            for target, config in candidates
            if self._can_serve(call, config, outcome)
        }
        order = tiered_order(
            [target for target, _ in routes.values()],
            self.region,
            self.config.region_preference,
            self.strategy.order,
        )
        tried: list[str] = []  # route keys, the one tried longest ago first
        held_until: dict[str, float] = {}
        made = 0
        waited = False  # a retry-after wait already spaced this retry out
        while made < self.config.max_attempts and order:
            chosen, probe = await self._choose(order, tried, outcome, last_option, call.scratch.get(HEALTH))
            if chosen is None:
                if not await self._wait_for_held(held_until, deadline):
                    return None
                waited = True
                continue
            if chosen.key in tried and not waited:
                await self._backoff(len(tried), deadline)
            waited = False
            if self.monotonic() >= deadline:
                return None
            made += 1
            outcome.attempts += 1
            if chosen.key in tried:
                tried.remove(chosen.key)
            tried.append(chosen.key)
            route = routes[chosen.key][1]
            result = await self._attempt(call, chosen, route, deadline, outcome, held_until, probe)
            if result is not None:
                return result
        return None

    def _routes_of(self, alias: str) -> list[tuple[RouteTarget, RouteConfig]]:
        """``targets`` of the alias's model, as made at start unless the model table was changed since."""
        model = self.models[alias]
        known = self._targets.get(alias)
        if known is not None and known[0] is model:
            return known[1]
        return targets(model)

    def _can_serve(self, call: Call, route: RouteConfig, outcome: _Outcome) -> bool:
        """Whether ``route``'s provider honours every parameter of ``call`` (or may drop what it cannot)."""
        if call.endpoint != "chat":
            return True
        names = support_of(self.providers[route.provider]).unsupported(call.body)
        if not names or drop_allowed(call, route, self.config.drop_params):
            return True
        if outcome.refused is None:
            outcome.refused = refusal(names, route.provider)
        return False

    async def _choose(
        self,
        order: list[RouteTarget],
        tried: list[str],
        outcome: _Outcome,
        last_option: bool,
        read: dict[str, bytes | None] | None = None,
    ) -> tuple[RouteTarget | None, bool]:
        """The route for the next attempt and whether it is a probe, or None when no route may be used now.

        Routes this request has not tried come first, in the strategy's order, then the ones it tried, the
        one tried longest ago first. ``last_option`` (nothing in the fallback chain could be tried): a route
        whose circuit is open (not rate limited) may be probed, one request at a time (see
        :meth:`CooldownTracker.admit`). ``read``: route health read with the admission, each used once.
        """
        if tried:
            fresh = [target for target in order if target.key not in tried]
            again = sorted(
                (target for target in order if target.key in tried), key=lambda t: tried.index(t.key)
            )
            candidates = [*fresh, *again]
        else:  # a request's first attempt (nearly every one): the strategy's order as it is
            candidates = order
        last_options: list[tuple[float, RouteTarget]] = []
        for target in candidates:
            known = read.pop(target.key, _UNREAD) if read else _UNREAD
            admission = await self.cooldowns.admit(
                target.key, health=None if known is _UNREAD else RouteHealth.from_json(known)
            )
            if admission.allowed:
                return target, admission.probe
            self._blocked(admission, outcome)
            if not admission.rate_limited and target.key not in tried:
                outcome.open_skipped = True
                last_options.append((admission.retry_at or 0.0, target))
        if not last_option:
            return None, False
        for _, target in sorted(last_options, key=lambda item: item[0]):
            admission = await self.cooldowns.admit(target.key, last_option=True)
            if admission.allowed:
                return target, admission.probe
            self._blocked(admission, outcome)
        return None, False

    @staticmethod
    def _blocked(admission: Admission, outcome: _Outcome) -> None:
        """Note when a route that may not be used now could be used again, for the fail-fast answer."""
        if admission.retry_at is not None:
            if outcome.retry_at is None or admission.retry_at < outcome.retry_at:
                outcome.retry_at = admission.retry_at
            outcome.all_rate_limited = outcome.all_rate_limited and admission.rate_limited

    async def _wait_for_held(self, held_until: dict[str, float], deadline: float) -> bool:
        """Wait for a route this request saw rate limited, if within ``max_wait_seconds`` and the deadline."""
        if not held_until:
            return False
        wait = min(held_until.values()) - self.clock()
        if wait > self.config.max_wait_seconds or self.monotonic() + wait >= deadline:
            return False
        held_until.clear()
        await self.sleep(max(0.0, wait))
        return True

    async def _backoff(self, retries: int, deadline: float) -> None:
        cap = min(self.config.backoff_max_seconds, self.config.backoff_base_seconds * 2**retries)
        delay = min(self.rng.uniform(0, cap), max(0.0, deadline - self.monotonic()))
        if delay > 0:
            await self.sleep(delay)

    async def _attempt(
        self,
        call: Call,
        target: RouteTarget,
        route: RouteConfig,
        deadline: float,
        outcome: _Outcome,
        held_until: dict[str, float],
        probe: bool,
    ) -> Result | None:
        """One upstream call; the result, or None after recording a retryable failure."""
        provider = self.providers[route.provider]
        began = self.monotonic()
        self.stats.started(target.key)
        try:
            # In the request's own task: asyncio.wait_for (Python 3.11) would start a task per attempt, a
            # measured 1.3% of a production request's CPU, for a deadline a timeout scope keeps as well.
            timer = Deadline(max(0.001, deadline - began))
            try:
                result = await self._first(call, route, provider)
            except BaseException as exc:
                if timer.stop(exc):
                    raise TimeoutError from exc
                raise
            timer.stop()
        except TimeoutError:
            error = GatewayError(
                504,
                f"Upstream '{route.provider}' did not answer within the deadline.",
                "upstream_error",
                "upstream_timeout",
            )
            if self.metrics is not None:
                self.metrics.upstream_error(target.key, error.code, error.status)
            await self.cooldowns.failure(target.key, probe=probe)
            outcome.last_error = error
            return None
        except GatewayError as error:
            if self.metrics is not None:
                self.metrics.upstream_error(target.key, error.code, error.status)
            if not is_retryable(error):
                # The upstream answered (a client error): for the breaker the route is up.
                await self.cooldowns.success(target.key, probe=probe)
                raise
            hold = retry_after_seconds(error) if error.status == 429 else None
            if hold is not None:
                hold = min(hold, self.config.retry_after_cap_seconds)
                held_until[target.key] = self.clock() + hold
            await self.cooldowns.failure(target.key, hold_s=hold or None, probe=probe)
            outcome.last_error = error
            return None
        finally:
            self.stats.finished(target.key)
        # Latency to the answer (streams: to the first chunk), the signal the latency strategy compares.
        latency = self.monotonic() - began
        if isinstance(result, Response):
            # A complete answer's count and figures wait for it to be out (in process; see after_answer).
            work = partial(self._answered, call, target, latency, probe)
            pending = after_answer(call, self.cooldowns.store, work)
            if pending is not None:
                await pending
            return result
        pending = self._answered(call, target, latency, probe)
        if pending is not None:
            await pending
        if isinstance(result, Stream):
            self.stats.started(target.key)  # in flight again until the stream ends
            return result.pipe(lambda chunks: self._watch(chunks, target))
        return result

    def _answered(
        self, call: Call, target: RouteTarget, latency: float, probe: bool
    ) -> Awaitable[None] | None:
        """Count an answer of ``target`` after ``latency`` seconds: its latency for the latency strategy and
        the metrics, its success for the circuit breaker (a probe's answer also closes the circuit)."""
        self.stats.observe_latency(target.key, latency)
        if self.metrics is not None:
            self.metrics.upstream(call.model, target.key, latency)
        return self.cooldowns.success_now(target.key, probe=probe, call=call)

    async def _first(self, call: Call, route: RouteConfig, provider: Provider) -> Result:
        """Call the provider; for a stream, also wait for its first chunk so a failure there fails over."""
        result = await attempt(call, route, provider, drop_params=self.config.drop_params)
        if not isinstance(result, Stream):
            return result
        began = time.perf_counter()
        try:
            first = await anext(aiter(result))
        except StopAsyncIteration:
            return Stream.from_chunks([])
        except BaseException:
            await result.aclose()
            raise
        finally:
            call.upstream_s += time.perf_counter() - began
        return Stream(_prepend(first, result))

    async def _watch(self, chunks: AsyncIterator[Chunk], target: RouteTarget) -> AsyncIterator[Chunk]:
        """Pass chunks through; a break after the first chunk is a route failure, reported in-band."""
        try:
            async for chunk in chunks:
                yield chunk
        except GatewayError as error:
            if self.metrics is not None:
                self.metrics.upstream_error(target.key, error.code, error.status)
            await self.cooldowns.failure(target.key, late=True)
            raise
        finally:
            self.stats.finished(target.key)


def routes_endpoint(gateway: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``GET /admin/routes``: every model's routes, their shared cooldown state and this replica's load."""

    async def routes() -> dict[str, Any]:
        stage = next(s for s in gateway.stages if isinstance(s, RoutingStage))
        return await stage.snapshot()

    return routes


async def _prepend(first: Chunk, stream: Stream) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()
