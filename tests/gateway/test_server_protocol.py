"""gateway/server_protocol.py: a response's head written with its body's first piece, everything else at once,
in order, and nothing held past the event loop's turn (a stream reaches the client while the app waits)."""

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

    def pause_reading(self) -> None:
        self.paused = True


async def one_turn() -> None:
    await asyncio.sleep(0)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n"


@pytest.mark.anyio
async def test_a_head_goes_out_with_the_bodys_first_piece_and_later_pieces_at_once() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    assert recorder.calls == []
    assert transport.get_write_buffer_size() == 7 + len(HEAD)  # the transport's own and the head held
    transport.writelines([b"{", memoryview(b'"a": 1')])
    transport.write(bytearray(b"}"))
    # Not held to the end of the turn: a burst of stream chunks reaches the client chunk by chunk.
    assert recorder.calls == [("write", HEAD + b"{"), ("write", memoryview(b'"a": 1')), ("write", b"}")]
    await one_turn()
    assert len(recorder.calls) == 3  # nothing was left to flush


@pytest.mark.anyio
async def test_a_head_without_a_body_in_its_turn_goes_out_at_the_end_of_the_turn() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    await one_turn()
    assert recorder.calls == [("write", HEAD)]
    transport.write(b"data: later\n\n")
    assert recorder.calls[1:] == [("write", b"data: later\n\n")]


@pytest.mark.anyio
async def test_closing_or_ending_writes_the_held_head_first_and_an_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    transport = OneWriteTransport(recorder, loop)  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.write_eof()
    transport.write(HEAD)
    transport.close()
    await one_turn()  # the scheduled flushes find nothing left
    assert recorder.calls == [("write", HEAD), ("write_eof", None), ("write", HEAD), ("close", None)]

    aborted = Recorder()
    transport = OneWriteTransport(aborted, loop)  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.abort()
    await one_turn()
    assert aborted.calls == [("abort", None)]


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
