"""The pipeline contract: chain order, short-circuits, stream wrapping, usage, closing and hooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway import pipeline
from gateway.config import parse_config
from gateway.errors import GatewayError
from gateway.pipeline import Call, Handler, KeyIdentity, Response, Result, Stream, build_chain, run_hooks

pytestmark = pytest.mark.anyio

MODEL = parse_config(
    "providers: [{name: m, type: mock}]\nmodels: [{name: x, routes: [{provider: m}]}]"
).models[0]


def make_call(stream: bool = False) -> Call:
    return Call(
        request_id="r",
        key=KeyIdentity(name="k", key_id="id"),
        endpoint="chat",
        model="x",
        model_config=MODEL,
        body={"model": "x", "messages": []},
        headers={},
        stream=stream,
    )


CHUNKS = [
    {"choices": [{"index": 0, "delta": {"content": "a"}}]},
    {"choices": [{"index": 0, "delta": {"content": "b"}}]},
    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
]


class Recorder:
    """A stage that records the order stages run in and tags a response header."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def handle(self, call: Call, next: Handler) -> Result:
        self.log.append(f"in:{self.name}")
        result = await next(call)
        self.log.append(f"out:{self.name}")
        call.response_headers[f"x-{self.name}"] = "1"
        return result


class Terminal:
    """The router position: answers without calling next."""

    def __init__(self, result: Result | None = None) -> None:
        self.result = result
        self.calls = 0

    async def handle(self, call: Call, next: Handler) -> Result:
        self.calls += 1
        return self.result or Response({"ok": True, "usage": {"total_tokens": 1}})


async def test_stages_run_in_order_and_unwind_in_reverse() -> None:
    log: list[str] = []
    handler = build_chain([Recorder("a", log), Recorder("b", log), Terminal()])
    call = make_call()
    result = await handler(call)
    assert isinstance(result, Response) and result.usage == {"total_tokens": 1}
    assert log == ["in:a", "in:b", "out:b", "out:a"]
    assert call.response_headers == {"x-b": "1", "x-a": "1"}


async def test_a_stage_can_short_circuit() -> None:
    class Hit:
        async def handle(self, call: Call, next: Handler) -> Result:
            return Response({"cached": True})

    terminal = Terminal()
    result = await build_chain([Hit(), terminal])(make_call())
    assert isinstance(result, Response) and result.body == {"cached": True}
    assert terminal.calls == 0


async def test_a_chain_without_router_is_a_500() -> None:
    with pytest.raises(GatewayError) as info:
        await build_chain([])(make_call())
    assert info.value.status == 500


async def test_stream_usage_is_known_after_completion() -> None:
    stream = Stream.from_chunks(CHUNKS)
    assert stream.usage is None and not stream.completed
    assert [c async for c in stream] == CHUNKS
    assert stream.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert stream.completed


async def test_a_stage_wraps_a_stream_without_buffering_it() -> None:
    seen_at_end: list[Any] = []

    class Collector:
        async def handle(self, call: Call, next: Handler) -> Result:
            result = await next(call)
            assert isinstance(result, Stream)
            stream = result

            async def collect(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
                count = 0
                async for chunk in chunks:
                    count += 1
                    yield chunk
                seen_at_end.append((count, stream.usage))

            return result.pipe(collect)

    stream = await build_chain([Collector(), Terminal(Stream.from_chunks(CHUNKS))])(make_call(stream=True))
    assert isinstance(stream, Stream)
    first = await stream.__aiter__().__anext__()
    assert first == CHUNKS[0] and seen_at_end == []  # the wrapper yields chunk by chunk
    rest = [c async for c in stream]
    assert len(rest) == 2
    assert seen_at_end == [(3, CHUNKS[2]["usage"])]


async def test_aclose_closes_every_layer_down_to_the_source() -> None:
    closed: list[str] = []

    async def source() -> AsyncIterator[dict[str, Any]]:
        try:
            for chunk in CHUNKS:
                yield chunk
        finally:
            closed.append("source")

    async def wrapper(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            closed.append("wrapper")

    stream = Stream(source()).pipe(wrapper)
    await stream.__aiter__().__anext__()
    await stream.aclose()
    assert closed == ["wrapper", "source"]
    assert not stream.completed
    await stream.aclose()  # idempotent


async def test_hooks_run_when_defined() -> None:
    events: list[str] = []

    class WithHooks:
        async def start(self) -> None:
            events.append("start")

        def close(self) -> None:  # a plain function works too
            events.append("close")

    stages = [WithHooks(), Terminal()]
    await run_hooks(stages, "start")
    await run_hooks(reversed(stages), "close")
    assert events == ["start", "close"]


def test_overhead_excludes_upstream_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test's clock: 1.25 s since the request arrived, 1.2 s of it upstream, however busy the machine is.
    call = make_call()
    call.started = 100.0
    call.upstream_s = 1.2
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: 101.25)
    assert call.overhead_ms() == pytest.approx(50.0)


def test_overhead_excludes_the_wait_for_the_clients_body(monkeypatch: pytest.MonkeyPatch) -> None:
    call = make_call()
    call.started, call.upstream_s, call.client_s = 100.0, 1.2, 0.5
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: 101.75)
    assert call.overhead_ms() == pytest.approx(50.0)


def test_key_identity_model_access() -> None:
    assert KeyIdentity(name="a", key_id="1").may_use("anything")
    limited = KeyIdentity(name="b", key_id="2", models=frozenset({"x"}))
    assert limited.may_use("x") and not limited.may_use("y")
