"""The routing stage with fake providers: failover, retry rules, cooldowns, fallbacks and streams.

Time is injected (a fake clock that `sleep` advances), randomness is seeded, and no test waits for real.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.config import ModelConfig, RouteConfig
from gateway.errors import GatewayError, upstream_error
from gateway.features.routing import RoutingConfig, RoutingStage, fallback_chain, retry_after_seconds
from gateway.pipeline import Call, KeyIdentity, Response, Stream
from gateway.stores import MemoryStore


class Clock:
    """Wall clock, monotonic clock and sleep in one: sleeping advances time instantly."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


Behaviour = Callable[[Call, RouteConfig], Any]


class FakeProvider:
    """Answers by a script: each call pops the next behaviour (an exception, or 'ok'), repeating the last."""

    def __init__(self, name: str, *script: Any, clock: Clock | None = None, cost: float = 0.0) -> None:
        self.name = name
        self.script = list(script) or ["ok"]
        self.calls = 0
        self.clock = clock
        self.cost = cost

    def _next(self) -> Any:
        item = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.cost
        return item

    async def chat(self, call: Call, route: RouteConfig) -> Response | Stream:
        item = self._next()
        if isinstance(item, BaseException):
            raise item
        if call.stream:
            return Stream(_chunks(self.name, item))
        return Response({"answered_by": self.name, "model": route.model})

    async def embeddings(self, call: Call, route: RouteConfig) -> Response:
        item = self._next()
        if isinstance(item, BaseException):
            raise item
        return Response({"answered_by": self.name})


async def _chunks(name: str, item: Any) -> AsyncIterator[dict[str, Any]]:
    # item: "ok", or ("break_after", n) to fail after n chunks, or ("fail_first",) to fail before any chunk.
    if isinstance(item, tuple) and item[0] == "fail_first":
        raise upstream_error(502, f"{name} broke before the first chunk", "upstream_stream")
    for i in range(3):
        if isinstance(item, tuple) and item[0] == "break_after" and i == item[1]:
            raise upstream_error(502, f"{name} broke off the stream", "upstream_stream")
        yield {"choices": [{"delta": {"content": f"{name}-{i}"}}]}


def unreachable(name: str = "x") -> GatewayError:
    return upstream_error(502, f"Upstream '{name}' is unreachable (ConnectError).", "upstream_unreachable")


def rate_limited(retry_after: str | None = "2") -> GatewayError:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return GatewayError(
        429, "Upstream rate limit", "rate_limit_error", "rate_limit_exceeded", headers=headers
    )


def bad_request() -> GatewayError:
    return GatewayError(400, "bad request upstream", "invalid_request_error")


def model(name: str, *routes: tuple[str, float], fallbacks: list[str] | None = None) -> ModelConfig:
    data: dict[str, Any] = {
        "name": name,
        "routes": [{"provider": p, "model": f"{p}-m", "weight": w} for p, w in routes],
    }
    if fallbacks is not None:
        data["fallbacks"] = fallbacks
    return ModelConfig.model_validate(data)


def make_call(alias: str, *, stream: bool = False, endpoint: str = "chat") -> Call:
    return Call(
        request_id="req-1",
        key=KeyIdentity(name="t", key_id="kid"),
        endpoint=endpoint,
        model=alias,
        model_config=None,  # type: ignore[arg-type]  # the routing stage reads its own model table
        body={"model": alias, "messages": [{"role": "user", "content": "hi"}]},
        headers={},
        stream=stream,
    )


def stage(
    providers: list[FakeProvider], models: list[ModelConfig], clock: Clock, **settings: Any
) -> RoutingStage:
    settings.setdefault("strategy", "round_robin")
    return RoutingStage(
        RoutingConfig.model_validate(settings),
        {p.name: p for p in providers},
        {m.name: m for m in models},
        MemoryStore(clock=clock),
        rng=random.Random(0),
        clock=clock,
        monotonic=clock,
        sleep=clock.sleep,
    )


async def no_next(call: Call) -> Response:
    raise AssertionError("the router must end the chain")


def run(stage_: RoutingStage, call: Call) -> Any:
    return asyncio.run(stage_.handle(call, no_next))


async def collect(stream: Stream) -> list[str]:
    out = []
    async for chunk in stream:
        out.append(chunk["choices"][0]["delta"]["content"])
    return out


def test_connection_error_fails_over_to_the_next_route() -> None:
    clock = Clock()
    a, b = FakeProvider("a", unreachable("a")), FakeProvider("b")
    router = stage([a, b], [model("chat", ("a", 1), ("b", 1))], clock)
    call = make_call("chat")
    result = run(router, call)
    assert result.body["answered_by"] == "b"
    assert call.response_headers["x-gateway-attempts"] == "2"
    assert call.response_headers["x-gateway-route"] == "b/b-m"
    assert (a.calls, b.calls) == (1, 1)


@pytest.mark.parametrize(
    "error",
    [
        unreachable(),
        upstream_error(504, "timed out", "upstream_timeout"),
        upstream_error(503, "unavailable", "upstream_unavailable"),
        rate_limited(None),
    ],
)
def test_retryable_errors_are_retried(error: GatewayError) -> None:
    clock = Clock()
    a, b = FakeProvider("a", error), FakeProvider("b")
    result = run(stage([a, b], [model("chat", ("a", 1), ("b", 1))], clock), make_call("chat"))
    assert result.body["answered_by"] == "b"


def test_client_errors_are_never_retried() -> None:
    clock = Clock()
    a, b = FakeProvider("a", bad_request()), FakeProvider("b")
    router = stage([a, b], [model("chat", ("a", 1), ("b", 1))], clock)
    call = make_call("chat")
    with pytest.raises(GatewayError) as caught:
        run(router, call)
    assert caught.value.status == 400
    assert b.calls == 0
    assert call.response_headers["x-gateway-attempts"] == "1"


def test_client_errors_do_not_cool_a_route_down() -> None:
    clock = Clock()
    a = FakeProvider("a", bad_request(), bad_request(), bad_request(), "ok")
    router = stage([a], [model("chat", ("a", 1))], clock)
    for _ in range(3):
        with pytest.raises(GatewayError):
            run(router, make_call("chat"))
    assert run(router, make_call("chat")).body["answered_by"] == "a"


def test_attempts_are_bounded_and_the_last_error_is_returned() -> None:
    clock = Clock()
    providers = [FakeProvider(n, unreachable(n)) for n in "abcd"]
    router = stage(providers, [model("chat", *((n, 1) for n in "abcd"))], clock, max_attempts=2)
    call = make_call("chat")
    with pytest.raises(GatewayError) as caught:
        run(router, call)
    assert caught.value.status == 502
    assert caught.value.headers["x-gateway-attempts"] == "2"
    assert sum(p.calls for p in providers) == 2


def test_no_attempt_starts_after_the_deadline() -> None:
    clock = Clock()
    providers = [FakeProvider(n, unreachable(n), clock=clock, cost=4.0) for n in "abcd"]
    router = stage(
        providers, [model("chat", *((n, 1) for n in "abcd"))], clock, max_attempts=4, deadline_seconds=10
    )
    with pytest.raises(GatewayError):
        run(router, make_call("chat"))
    # Attempts start at 0 s, 4 s and 8 s; at 12 s the deadline has passed, so the fourth never starts.
    assert sum(p.calls for p in providers) == 3
    assert clock.now - 1_000_000.0 == 12.0


def test_a_slow_upstream_is_cut_off_at_the_deadline() -> None:
    class Hang(FakeProvider):
        async def chat(self, call: Call, route: RouteConfig) -> Response:
            self.calls += 1
            await asyncio.sleep(30)
            raise AssertionError("unreachable")

    slow = Hang("slow")
    router = RoutingStage(
        RoutingConfig(deadline_seconds=0.05),
        {"slow": slow},
        {"chat": model("chat", ("slow", 1))},
        MemoryStore(),
    )
    with pytest.raises(GatewayError) as caught:
        asyncio.run(router.handle(make_call("chat"), no_next))
    assert caught.value.status == 504
    assert slow.calls == 1


def test_an_attempt_runs_in_the_requests_own_task_and_is_cancelled_with_it() -> None:
    # The attempt is awaited in the request's task (no task per attempt): the provider sees the caller's
    # task, and cancelling the request cancels the attempt without counting a route failure or a timeout.
    seen: list[asyncio.Task[Any] | None] = []
    started = asyncio.Event()

    class Hang(FakeProvider):
        async def chat(self, call: Call, route: RouteConfig) -> Response:
            self.calls += 1
            seen.append(asyncio.current_task())
            started.set()
            await asyncio.sleep(30)
            raise AssertionError("unreachable")

    slow = Hang("slow")
    models = {"chat": model("chat", ("slow", 1))}
    router = RoutingStage(RoutingConfig(deadline_seconds=60), {"slow": slow}, models, MemoryStore())

    async def scenario() -> None:
        request = asyncio.create_task(router.handle(make_call("chat"), no_next))
        await started.wait()
        assert seen == [request]
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert router.stats.in_flight.get("slow/slow-m", 0) == 0
        assert await router.cooldowns.counts("slow/slow-m") == (0, 0)

    asyncio.run(scenario())


def test_same_route_is_retried_after_a_backoff() -> None:
    clock = Clock()
    only = FakeProvider("a", unreachable(), "ok")
    result = run(stage([only], [model("chat", ("a", 1))], clock), make_call("chat"))
    assert result.body["answered_by"] == "a"
    assert only.calls == 2
    assert len(clock.slept) == 1 and 0 <= clock.slept[0] <= 0.2


def test_failing_route_cools_down_and_is_skipped_then_probed() -> None:
    clock = Clock()
    a = FakeProvider("a", unreachable("a"))
    b = FakeProvider("b")
    router = stage(
        [a, b], [model("chat", ("a", 1), ("b", 1))], clock, cooldown={"min_requests": 2, "seconds": 10}
    )
    for _ in range(6):
        assert run(router, make_call("chat")).body["answered_by"] == "b"
    # Round robin puts `a` first every other request; after two failures it is skipped.
    assert a.calls == 2
    clock.now += 10
    a.script = ["ok"]
    answers = {run(router, make_call("chat")).body["answered_by"] for _ in range(4)}
    assert answers == {"a", "b"}
    assert a.calls >= 3


def test_every_route_open_probes_each_once_per_cooldown_and_fails_fast_in_between() -> None:
    clock = Clock()
    a, b = FakeProvider("a", unreachable("a")), FakeProvider("b", unreachable("b"))
    router = stage(
        [a, b], [model("chat", ("a", 1), ("b", 1))], clock, cooldown={"min_requests": 1, "seconds": 20}
    )
    with pytest.raises(GatewayError) as first:
        run(router, make_call("chat"))  # a and b fail: both circuits open
    assert first.value.status == 502
    assert (a.calls, b.calls) == (1, 1)  # the third attempt found no route to try
    # Every route is open: the last option. One request probes each route (the open circuit is a hint).
    with pytest.raises(GatewayError) as probed:
        run(router, make_call("chat"))
    assert probed.value.status == 502 and probed.value.headers["x-gateway-attempts"] == "2"
    assert (a.calls, b.calls) == (2, 2)
    # Until a first cooldown has passed since those probes, requests fail fast without calling upstream.
    with pytest.raises(GatewayError) as fast:
        run(router, make_call("chat"))
    assert fast.value.status == 503
    assert fast.value.code == "all_routes_cooling_down"
    assert fast.value.headers["retry-after"] == "20"
    assert fast.value.headers["x-gateway-attempts"] == "0"
    assert (a.calls, b.calls) == (2, 2)
    # b comes back: the next probe finds it and closes its circuit at once, before its grown cooldown.
    b.script = ["ok"]
    clock.now += 20
    assert run(router, make_call("chat")).body["answered_by"] == "b"
    assert run(router, make_call("chat")).body["answered_by"] == "b"  # closed: b serves, a stays out
    assert a.calls <= 3


def test_a_single_route_model_is_never_shut_out_by_its_own_breaker() -> None:
    clock = Clock()
    a = FakeProvider("a", unreachable("a"))
    router = stage([a], [model("chat", ("a", 1))], clock, cooldown={"min_requests": 3, "seconds": 30})
    with pytest.raises(GatewayError):
        run(router, make_call("chat"))  # three failed attempts open the circuit for 30 s
    a.script = ["ok"]
    # The upstream is back at once; the model serves at once, not after 30 s of 503s.
    call = make_call("chat")
    assert run(router, call).body["answered_by"] == "a"
    assert call.response_headers["x-gateway-attempts"] == "1"
    assert run(router, make_call("chat")).body["answered_by"] == "a"


def test_an_open_route_is_a_wall_while_a_fallback_serves() -> None:
    clock = Clock()
    a, b = FakeProvider("a", unreachable("a")), FakeProvider("b")
    router = stage(
        [a, b],
        [model("chat", ("a", 1), fallbacks=["spare"]), model("spare", ("b", 1))],
        clock,
        cooldown={"min_requests": 1, "seconds": 10},
    )
    for _ in range(5):
        assert run(router, make_call("chat")).body["answered_by"] == "b"
    assert a.calls == 1  # not the last option: no probe before the cooldown ends
    a.script = ["ok"]
    clock.now += 10
    assert run(router, make_call("chat")).body["answered_by"] == "a"  # the half-open probe closes it


def test_a_low_failure_rate_never_takes_a_single_route_out() -> None:
    clock = Clock()
    # One upstream call in ten fails: the route stays closed and retries hide every failure.
    a = FakeProvider("a", *([unreachable("a")] + ["ok"] * 9) * 30)
    router = stage([a], [model("chat", ("a", 1))], clock)
    answers = [run(router, make_call("chat")).body["answered_by"] for _ in range(250)]
    assert answers == ["a"] * 250
    assert a.calls == 278  # 250 answers, and the 28 failures met on the way (one call in ten)


def test_retries_go_to_routes_not_tried_yet_then_to_the_one_tried_longest_ago() -> None:
    clock = Clock()
    seen: list[str] = []

    class Logged(FakeProvider):
        async def chat(self, call: Call, route: RouteConfig) -> Response | Stream:
            seen.append(self.name)
            return await super().chat(call, route)

    providers = [Logged(name, unreachable(name)) for name in "abc"]
    router = stage(providers, [model("chat", ("a", 1), ("b", 1), ("c", 1))], clock, max_attempts=5)
    with pytest.raises(GatewayError):
        run(router, make_call("chat"))
    assert seen == ["a", "b", "c", "a", "b"]


def test_retry_after_holds_the_route_capped_and_all_rate_limited_is_429() -> None:
    clock = Clock()
    a = FakeProvider("a", rate_limited("500"))
    router = stage([a], [model("chat", ("a", 1))], clock, retry_after_cap_seconds=7)
    with pytest.raises(GatewayError) as first:
        run(router, make_call("chat"))
    assert first.value.status == 429
    assert a.calls == 1  # not retried: the only route is held, and waiting is off by default
    with pytest.raises(GatewayError) as second:
        run(router, make_call("chat"))
    assert second.value.status == 429
    assert second.value.code == "upstream_rate_limited"
    assert second.value.headers["retry-after"] == "7"
    assert a.calls == 1
    clock.now += 7
    a.script = ["ok"]
    assert run(router, make_call("chat")).body["answered_by"] == "a"


def test_router_waits_for_a_short_retry_after_when_allowed() -> None:
    clock = Clock()
    a = FakeProvider("a", rate_limited("1"), "ok")
    router = stage([a], [model("chat", ("a", 1))], clock, max_wait_seconds=2)
    call = make_call("chat")
    assert run(router, call).body["answered_by"] == "a"
    assert clock.slept == [1.0]
    assert call.response_headers["x-gateway-attempts"] == "2"


def test_router_does_not_wait_longer_than_allowed() -> None:
    clock = Clock()
    a = FakeProvider("a", rate_limited("5"), "ok")
    router = stage([a], [model("chat", ("a", 1))], clock, max_wait_seconds=2)
    with pytest.raises(GatewayError) as caught:
        run(router, make_call("chat"))
    assert caught.value.status == 429
    assert clock.slept == []


def test_weight_zero_drains_and_all_drained_is_503() -> None:
    clock = Clock()
    a, b = FakeProvider("a"), FakeProvider("b")
    router = stage(
        [a, b], [model("chat", ("a", 0), ("b", 1)), model("off", ("a", 0))], clock, strategy="weighted"
    )
    for _ in range(20):
        assert run(router, make_call("chat")).body["answered_by"] == "b"
    assert a.calls == 0
    with pytest.raises(GatewayError) as caught:
        run(router, make_call("off"))
    assert caught.value.status == 503
    assert caught.value.code == "no_route_available"


def test_fallback_alias_answers_when_all_routes_fail() -> None:
    clock = Clock()
    a, b, c = FakeProvider("a", unreachable("a")), FakeProvider("b", unreachable("b")), FakeProvider("c")
    models = [
        model("primary", ("a", 1), ("b", 1), fallbacks=["secondary"]),
        model("secondary", ("c", 1), fallbacks=["primary"]),
    ]
    call = make_call("primary")
    result = run(stage([a, b, c], models, clock), call)
    assert result.body["answered_by"] == "c"
    assert call.response_headers["x-gateway-route"] == "c/c-m"
    assert call.response_headers["x-gateway-attempts"] == "4"  # a, b, a again (max 3), then c
    assert call.scratch["routing.fallback"] == "secondary"


def test_fallback_chain_is_breadth_first_and_cycle_safe() -> None:
    models = {
        "a": model("a", ("p", 1), fallbacks=["b", "c"]),
        "b": model("b", ("p", 1), fallbacks=["d", "a"]),
        "c": model("c", ("p", 1)),
        "d": model("d", ("p", 1), fallbacks=["a"]),
    }
    assert fallback_chain("a", models) == ["a", "b", "c", "d"]


def test_client_error_on_primary_does_not_fall_back() -> None:
    clock = Clock()
    a, c = FakeProvider("a", bad_request()), FakeProvider("c")
    models = [model("primary", ("a", 1), fallbacks=["secondary"]), model("secondary", ("c", 1))]
    with pytest.raises(GatewayError):
        run(stage([a, c], models, clock), make_call("primary"))
    assert c.calls == 0


def test_stream_fails_over_before_the_first_chunk() -> None:
    clock = Clock()
    a, b = FakeProvider("a", ("fail_first",)), FakeProvider("b")
    router = stage([a, b], [model("chat", ("a", 1), ("b", 1))], clock)
    call = make_call("chat", stream=True)

    async def scenario() -> list[str]:
        result = await router.handle(call, no_next)
        assert isinstance(result, Stream)
        try:
            return await collect(result)
        finally:
            await result.aclose()

    assert asyncio.run(scenario()) == ["b-0", "b-1", "b-2"]
    assert call.response_headers["x-gateway-route"] == "b/b-m"
    assert call.response_headers["x-gateway-attempts"] == "2"


def test_stream_break_after_the_first_chunk_is_an_error_not_a_truncation() -> None:
    clock = Clock()
    a, b = FakeProvider("a", ("break_after", 2)), FakeProvider("b")
    router = stage([a, b], [model("chat", ("a", 1), ("b", 1))], clock, cooldown={"min_requests": 1})
    call = make_call("chat", stream=True)

    async def scenario() -> tuple[list[str], GatewayError | None]:
        result = await router.handle(call, no_next)
        assert isinstance(result, Stream)
        seen: list[str] = []
        try:
            async for chunk in result:
                seen.append(chunk["choices"][0]["delta"]["content"])
        except GatewayError as exc:
            return seen, exc
        finally:
            await result.aclose()
        return seen, None

    seen, error = asyncio.run(scenario())
    assert seen == ["a-0", "a-1"]
    assert error is not None and error.status == 502
    assert b.calls == 0  # no failover once the client has text
    # The break counted as a route failure: one request, failed, is over min_requests=1 and 50 %.
    assert run(router, make_call("chat")).body["answered_by"] == "b"
    assert a.calls == 1


def test_streams_track_in_flight_until_they_end() -> None:
    clock = Clock()
    a = FakeProvider("a")
    router = stage([a], [model("chat", ("a", 1))], clock, strategy="least_inflight")

    async def scenario() -> None:
        result = await router.handle(make_call("chat", stream=True), no_next)
        assert isinstance(result, Stream)
        assert router.stats.in_flight["a/a-m"] == 1
        await collect(result)
        await result.aclose()
        assert router.stats.in_flight["a/a-m"] == 0

    asyncio.run(scenario())


def test_embeddings_fail_over_too() -> None:
    clock = Clock()
    a, b = FakeProvider("a", unreachable("a")), FakeProvider("b")
    result = run(
        stage([a, b], [model("emb", ("a", 1), ("b", 1))], clock), make_call("emb", endpoint="embeddings")
    )
    assert result.body["answered_by"] == "b"


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), ("0.5", 0.5), ("soon", None), ("-1", None)])
def test_retry_after_parsing(value: str, seconds: float | None) -> None:
    error = GatewayError(429, "x", headers={"retry-after": value})
    assert retry_after_seconds(error) == seconds


def test_replicas_share_cooldowns_through_redis(redis_url: str) -> None:
    from gateway.stores import RedisStore

    clock = Clock()
    suffix = f"{id(clock)}"
    models = [model("chat", (f"dead{suffix}", 1), (f"live{suffix}", 1))]

    async def scenario() -> tuple[FakeProvider, FakeProvider]:
        store_a, store_b = RedisStore(redis_url), RedisStore(redis_url)
        dead_a, live_a = FakeProvider(f"dead{suffix}", unreachable()), FakeProvider(f"live{suffix}")
        dead_b, live_b = FakeProvider(f"dead{suffix}", unreachable()), FakeProvider(f"live{suffix}")
        settings = RoutingConfig(strategy="round_robin", cooldown={"min_requests": 2, "seconds": 60})
        common: dict[str, Any] = {"clock": clock, "monotonic": clock, "sleep": clock.sleep}
        replica_a = RoutingStage(
            settings, {p.name: p for p in (dead_a, live_a)}, {m.name: m for m in models}, store_a, **common
        )
        replica_b = RoutingStage(
            settings, {p.name: p for p in (dead_b, live_b)}, {m.name: m for m in models}, store_b, **common
        )
        try:
            for _ in range(4):  # replica A alone trips the breaker on the dead route
                await replica_a.handle(make_call("chat"), no_next)
            assert dead_a.calls == 2
            for _ in range(6):  # replica B never tries the dead route: the cooldown is shared
                result = await replica_b.handle(make_call("chat"), no_next)
                assert result.body["answered_by"] == f"live{suffix}"
            return dead_b, live_b
        finally:
            await store_a.close()
            await store_b.close()

    dead_b, live_b = asyncio.run(scenario())
    assert dead_b.calls == 0
    assert live_b.calls == 6


def test_admin_routes_shows_cooldown_state_and_load() -> None:
    from gateway.app import create_app
    from gateway.config import parse_config

    config = parse_config(
        """
auth:
  master_key: sk-admin-routes-0001
  keys: [{name: t, key: sk-routes-key-0001}]
providers:
  - {name: dead, type: mock, options: {fail_rate: 1.0, fail_status: 502}}
  - {name: live, type: mock}
models:
  - name: chat
    routes: [{provider: dead, model: d}, {provider: live, model: l, weight: 2, region: eu}]
    fallbacks: [other]
  - name: other
    routes: [{provider: live, model: o}]
features:
  routing: {strategy: round_robin, cooldown: {min_requests: 1, seconds: 60}}  # `dead` gets a turn
usage: {database: ":memory:"}
""",
        "routes.yaml",
    )

    async def scenario() -> tuple[int, int, dict[str, Any]]:
        app = create_app(config)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
        ):
            for _ in range(4):
                answer = await client.post(
                    "/v1/chat/completions",
                    json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": "Bearer sk-routes-key-0001"},
                )
                assert answer.status_code == 200
            denied = await client.get("/admin/routes", headers={"authorization": "Bearer sk-routes-key-0001"})
            shown = await client.get(
                "/admin/routes", headers={"authorization": "Bearer sk-admin-routes-0001"}
            )
            return denied.status_code, shown.status_code, shown.json()

    denied, status, body = asyncio.run(scenario())
    assert denied == 401
    assert status == 200
    assert body["strategy"] == "round_robin"
    chat = body["models"]["chat"]
    assert chat["fallbacks"] == ["other"]
    dead, live = chat["routes"]
    assert dead["route"] == "dead/d" and dead["state"] == "open" and 0 < dead["cooling_for_s"] <= 60
    assert (dead["recent_requests"], dead["recent_failures"]) == (1, 1)
    assert live == {
        "route": "live/l",
        "weight": 2.0,
        "region": "eu",
        "state": "closed",
        "cooling_for_s": None,
        "rate_limited": False,
        "recent_requests": 4,
        "recent_failures": 0,
        "in_flight": 0,
        "latency_ms": live["latency_ms"],
    }
    assert live["latency_ms"] is not None and live["latency_ms"] >= 0


def test_a_probe_answered_with_a_client_error_closes_the_circuit() -> None:
    clock = Clock()
    a = FakeProvider("a", unreachable(), bad_request(), "ok")
    router = stage(
        [a], [model("chat", ("a", 1))], clock, max_attempts=1, cooldown={"min_requests": 1, "seconds": 5}
    )
    with pytest.raises(GatewayError):
        run(router, make_call("chat"))  # opens the circuit
    clock.now += 5
    with pytest.raises(GatewayError) as probe:
        run(router, make_call("chat"))  # the probe gets a 400: the upstream is reachable
    assert probe.value.status == 400
    assert run(router, make_call("chat")).body["answered_by"] == "a"  # closed again, no 30 s probe lease


def test_a_deadline_that_fires_leaves_the_task_as_it_found_it() -> None:
    # The attempt's deadline cancels the request's task and turns that cancellation into a 504: afterwards
    # the task has no cancellation pending, so the request's own later awaits (settling, the next alias)
    # run normally, as with asyncio.timeout.
    class Hang(FakeProvider):
        async def chat(self, call: Call, route: RouteConfig) -> Response:
            self.calls += 1
            await asyncio.sleep(30)
            raise AssertionError("unreachable")

    router = RoutingStage(
        RoutingConfig(deadline_seconds=0.05),
        {"slow": Hang("slow")},
        {"chat": model("chat", ("slow", 1))},
        MemoryStore(),
    )

    async def scenario() -> int:
        with pytest.raises(GatewayError) as caught:
            await router.handle(make_call("chat"), no_next)
        assert caught.value.code == "upstream_timeout"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0)  # not cancelled
        return caught.value.status

    assert asyncio.run(scenario()) == 504


def test_a_deadline_keeps_an_outer_cancellation_that_came_with_it() -> None:
    # The request is cancelled (client gone) in the same loop turn as its deadline fires: the attempt ends
    # in CancelledError, not a 504, because a cancellation other than the deadline's is pending.
    from gateway.features.routing import Deadline

    async def scenario() -> None:
        async def body() -> None:
            timer = Deadline(0)
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)
            try:
                await asyncio.sleep(30)
            except BaseException as exc:
                assert not timer.stop(exc)
                raise

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(body())

    asyncio.run(scenario())
