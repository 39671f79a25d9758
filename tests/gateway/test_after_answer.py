"""Books after the answer (gateway.pipeline.later, gateway/middleware.py): on a server that writes at the end
of the loop's turn the client's answer is written before the request's books are kept (usage record, budget
settlement, rate-limit release, the cache's entry), and they are kept before the server reads the next
request; anywhere else before the request ends. On a shared store they stay before the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, MASTER_KEY, auth, chat, http_scope, run_server

from gateway.app import create_app
from gateway.config import parse_config
from gateway.logging import ERROR_LOGGER, AccessLog
from gateway.middleware import Envelope
from gateway.pipeline import Call, KeyIdentity, later
from gateway.server_protocol import HELD_WRITES, OneWriteTransport
from gateway.shutdown import Activity
from gateway.stores.after_writes import after_answer, flush_after_answer
from gateway.stores.memory import MemoryStore


def a_call(after: list[Any] | None) -> Call:
    call = Call(
        request_id="r1",
        key=KeyIdentity(name="k", key_id="k"),
        endpoint="chat",
        model="m",
        model_config=None,  # type: ignore[arg-type]
        body={},
        headers={},
    )
    call.after = after
    return call


def test_later_queues_on_a_call_with_an_after_list_and_runs_at_once_without_one() -> None:
    done: list[str] = []
    queued = a_call([])
    assert later(queued, lambda: done.append("queued")) is None
    assert done == [] and len(queued.after or []) == 1
    assert later(a_call(None), lambda: done.append("now")) is None
    assert done == ["now"]


def test_store_work_waits_for_the_answer_only_in_process() -> None:
    done: list[str] = []
    call = a_call([])
    after_answer(call, MemoryStore(), lambda: done.append("memory"))
    assert done == [] and len(call.after or []) == 1
    shared = object()  # any store but the memory one: its work is a round trip, kept before the answer
    after_answer(call, shared, lambda: done.append("shared"))  # type: ignore[arg-type]
    assert done == ["shared"]
    assert flush_after_answer(call, MemoryStore()) is True
    assert flush_after_answer(call, shared) is False  # type: ignore[arg-type]
    assert flush_after_answer(a_call(None), MemoryStore()) is False


class Wire:
    """The socket under a :class:`OneWriteTransport`: what reached it, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def answering_app(books: list[Any]) -> Any:
    """An app that queues ``books`` as after-answer work and answers 200 (as a route and its stages do)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"]["after"].extend(books)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def serve(envelope: Envelope, books: list[Any], held: bool) -> Wire:
    """Serve one request through ``envelope`` onto a one-write transport, as the gateway's server does."""
    wire = Wire()
    transport = OneWriteTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        else:
            transport.write(message["body"])

    scope = http_scope("/v1/chat/completions", [])
    if held:
        scope[HELD_WRITES] = True
    await envelope.serve(answering_app(books), scope, None, send)  # type: ignore[arg-type]
    return wire


@pytest.mark.anyio
async def test_on_a_server_that_holds_writes_the_answer_is_written_before_the_books() -> None:
    activity = Activity()
    envelope = Envelope(AccessLog(), activity)
    seen: list[int] = []
    wire_box: list[Wire] = []
    wire = await serve(envelope, [lambda: seen.append(len(wire_box[0].writes))], held=True)
    wire_box.append(wire)
    # The request has returned, its answer not yet written, its books not kept: still in flight.
    assert wire.writes == [] and seen == [] and activity.in_flight == 1
    await asyncio.sleep(0)  # the loop's turn: the held answer goes out, then the books run
    assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    assert seen == [1]  # the answer was on the wire when the books ran
    assert activity.in_flight == 0


@pytest.mark.anyio
async def test_on_any_other_server_the_books_are_kept_before_the_request_ends() -> None:
    activity = Activity()
    done: list[str] = []
    await serve(Envelope(AccessLog(), activity), [lambda: done.append("books")], held=False)
    assert done == ["books"] and activity.in_flight == 0


@pytest.mark.anyio
async def test_a_failing_book_is_logged_by_type_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    def broken() -> None:
        raise ValueError("sk-secret-in-a-message")

    with caplog.at_level(logging.ERROR, logger=ERROR_LOGGER):
        await serve(Envelope(AccessLog(), Activity()), [broken, lambda: done.append("next")], held=False)
    assert done == ["next"]
    assert "ValueError" in caplog.text and "sk-secret" not in caplog.text


@pytest.mark.anyio
async def test_a_book_that_must_await_runs_as_a_task_counted_in_flight() -> None:
    activity = Activity()
    release = asyncio.Event()
    done: list[str] = []

    async def round_trip() -> None:
        await release.wait()
        done.append("written")

    await serve(Envelope(AccessLog(), activity), [round_trip], held=False)
    assert done == [] and activity.in_flight == 1  # a graceful drain waits for it
    release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert done == ["written"] and activity.in_flight == 0


PRICED = f"""
server:
  max_body_bytes: 4096
auth:
  master_key: {MASTER_KEY}
  keys:
    - {{name: alice, key: {KEY}, max_concurrent: 1, rpm: 100000, tpm: 100000000, budget: {{limit_usd: 1000}}}}
providers:
  - {{name: mock, type: mock}}
models:
  - name: echo
    routes: [{{provider: mock, model: mock-echo-v1}}]
    pricing: {{input_per_1m: 3, output_per_1m: 15}}
features: {{cache: {{enabled: true}}, rate_limit: {{}}}}
usage: {{database: ":memory:"}}
"""


def test_a_sequential_client_never_meets_its_own_last_request_unsettled() -> None:
    """One slot (max_concurrent: 1): each request's slot is given back after its answer, yet before the
    server reads the next one; the budget's spend is every answer's cost, its reservations all settled."""
    with run_server(create_app(parse_config(PRICED))) as url, httpx.Client(base_url=url) as client:
        costs = []
        for i in range(40):
            reply = client.post("/v1/chat/completions", json=chat(f"turn {i}"), headers=auth())
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-gateway-cache"] == "MISS"
            costs.append(Decimal(reply.headers["x-gateway-cost-usd"]))
        again = client.post("/v1/chat/completions", json=chat("turn 0"), headers=auth())
        assert again.headers["x-gateway-cache"] == "HIT"  # the entry stored after the first answer
        report = client.get("/admin/budgets", headers=auth(MASTER_KEY)).json()["budgets"]
        (row,) = [r for r in report if r["name"] == "alice"]
        assert Decimal(row["spent_usd"]) == sum(costs) > 0
        assert Decimal(row["reserved_usd"]) == 0


def test_a_body_sent_late_is_the_clients_time_not_the_gateways() -> None:
    """Headers first, the body 0.3 s later (a slow upload): the overhead header and the usage record leave
    the wait out, as they leave out the upstream's."""
    with run_server(create_app(parse_config(PRICED))) as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps(chat("slow upload")).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(head.encode())
            time.sleep(0.3)
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status, _, rest = answer.partition(b"\r\n")
        assert b" 200 " in status
        headers = dict(line.decode().split(": ", 1) for line in rest.split(b"\r\n\r\n")[0].split(b"\r\n"))
        assert float(headers["x-gateway-overhead-ms"]) < 150.0  # the 300 ms are not counted


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP/1.1 answers (each with a content-length) read off ``sock``: (status, body) each."""
    buffer, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.decode().lower().split(": ", 1) for line in lines[1:])
        length = int(fields["content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed mid-body"
            buffer += chunk
        answers.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_a_pipelining_client_never_meets_its_own_last_request_unsettled() -> None:
    """Requests sent back to back on one connection before any answer is read (HTTP pipelining): each is
    served after the previous one's books, so one concurrency slot is enough for all of them."""
    with run_server(create_app(parse_config(PRICED))) as url:
        host, port = url.removeprefix("http://").split(":")
        requests = b""
        for i in range(5):
            body = json.dumps(chat(f"pipelined {i}")).encode()
            requests += (
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode() + body
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(requests)  # all five at once, in one write
            answers = read_answers(sock, 5)
    assert [status for status, _ in answers] == [200] * 5, answers
    # In order, each its own (the mock echoes the prompt).
    for i, (_, body) in enumerate(answers):
        assert f"pipelined {i}" in json.loads(body)["choices"][0]["message"]["content"]
