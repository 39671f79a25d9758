"""gateway/server_protocol.py: a response written to the socket once per event-loop turn, in order, and
nothing held past the turn (a stream's head and chunks reach the client while the app still waits)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn_server import run_server

from gateway.server_protocol import OneWriteHttpToolsProtocol, OneWriteTransport


class Recorder:
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.paused = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def close(self) -> None:
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.closed_under_us

    closed_under_us = False

    def pause_reading(self) -> None:
        self.paused = True


async def one_turn() -> None:
    await asyncio.sleep(0)


@pytest.mark.anyio
async def test_what_one_turn_writes_reaches_the_transport_as_one_write_in_order() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.writelines([b"HTTP/1.1 200 OK\r\n\r\n", memoryview(b'{"a": 1}')])
    assert recorder.calls == []
    assert transport.get_write_buffer_size() == 7 + 19 + 8  # the transport's own and what is held
    await one_turn()
    assert recorder.calls == [("write", b'HTTP/1.1 200 OK\r\n\r\n{"a": 1}')]
    transport.write(bytearray(b"next turn"))
    await one_turn()
    assert recorder.calls[1:] == [("write", b"next turn")]


@pytest.mark.anyio
async def test_a_burst_of_stream_chunks_goes_out_at_the_third_piece_not_at_the_end_of_the_turn() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"data: 1\n\n")
    assert recorder.calls == []  # a JSON answer's head and body: held to the end of the turn
    transport.write(b"data: 2\n\n")
    assert recorder.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\ndata: 2\n\n")]
    transport.write(b"data: 3\n\n")
    await one_turn()
    assert recorder.calls[1:] == [("write", b"data: 3\n\n")]


@pytest.mark.anyio
async def test_closing_or_ending_writes_what_is_held_first_and_an_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    transport = OneWriteTransport(recorder, loop)  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.write_eof()
    transport.write(b"bye")
    transport.close()
    await one_turn()  # the scheduled flush finds nothing left
    expected = [("write", b"last words"), ("write_eof", None), ("write", b"bye"), ("close", None)]
    assert recorder.calls == expected

    aborted = Recorder()
    transport = OneWriteTransport(aborted, loop)  # type: ignore[arg-type]
    transport.write(b"never sent")
    transport.abort()
    await one_turn()
    assert aborted.calls == [("abort", None)]


@pytest.mark.anyio
async def test_what_is_held_when_the_connection_closes_under_it_is_dropped_not_written() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    recorder.closed_under_us = True  # the client reset the connection before the end of the turn
    await one_turn()
    assert recorder.calls == []


@pytest.mark.anyio
async def test_anything_else_is_the_transports_own() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.pause_reading()
    assert recorder.paused


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {data!r}")
        data += chunk
    return data


def test_a_stream_reaches_the_client_while_the_app_still_waits_and_keep_alive_holds() -> None:
    # Served by uvicorn with the protocol: each piece of a stream must be on the wire before the app sends the
    # next (nothing is held past a turn), and a second request reuses the connection.
    go_on = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        if scope["path"] == "/stream":
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            while not go_on.is_set():  # the client must have read the first event before the rest is sent
                await asyncio.sleep(0.005)
            await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": False})
            return
        body = b'{"ok": true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with run_server(app, http=OneWriteHttpToolsProtocol) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            first = read_until(sock, b"data: one")
            assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in first
            go_on.set()
            read_until(sock, b"0\r\n\r\n")
            sock.sendall(b"GET /json HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = read_until(sock, b'{"ok": true}')
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 12" in answer
