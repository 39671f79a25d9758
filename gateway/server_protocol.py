"""uvicorn's httptools protocol with each response written to the socket once, not once per ASGI message.

uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and its body
when the app sends ``http.response.body``: two ``transport.write`` calls, and on uvloop two ``send`` system
calls for a JSON answer that fits in one. On loopback a send also runs the receiving side's TCP path, so the
second one is a measurable share of a small request (a cache hit above all). :class:`OneWriteTransport`
gathers what is written during one turn of the event loop and writes it at the end of that turn, so the
head and body of a JSON answer go out together (and the answers of all the connections served in one turn
go out after one another, which measured cheaper than writing each as soon as it is ready: a cache hit 172
against 192 µs of CPU). A stream writes more pieces: the third piece held in one turn sends what is held at
once, so the first chunk of a burst of upstream chunks waits for at most two more, not for the whole burst.

Only the gateway's server uses it (``gateway run``, through uvicorn's ``http`` option, which takes a protocol
class); the benchmark's passthrough stays on plain uvicorn, as a user would run it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HELD_WRITES = "gateway.held_writes"
"""Scope key set on every request this protocol serves: what the app writes goes out at the end of the loop's
turn, so work the app schedules with ``call_soon`` after its answer runs once the answer is written (the
envelope keeps a request's books so, gateway/middleware.py), and before the connection's next request
starts, pipelined or not."""

_MOST_HELD = 3
"""Pieces held in one turn before they are sent: a JSON answer's two (head, body) wait for the end of the
turn; a stream's third sends them."""


class OneWriteTransport:
    """A transport that holds the bytes written in one event-loop turn and writes them together after it (or
    as soon as :data:`_MOST_HELD` pieces are held).

    Everything that writes goes through the hold in order (``write``, ``writelines``); ``write_eof``,
    ``close`` and the buffer size see the held bytes first; anything else is the transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            held.append(bytes(data))
            if len(held) >= _MOST_HELD:
                self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Write what is held now (the end of the turn, or before closing)."""
        held = self._held
        if held is None:
            return
        self._held = None
        if self._transport.is_closing():
            # The connection closed since the bytes were written (the client left, or a reset): they cannot
            # be sent, and uvloop's transport raises on a write after its close.
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None  # an abort drops what was not sent, as the transport's own buffer
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (sum(map(len, held)) if held else 0)

    def __getattr__(self, name: str) -> Any:
        # Reading, flow control, extra info, set_protocol: the transport's own.
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`OneWriteTransport` (everything else is uvicorn's)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        one_write = OneWriteTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(one_write)  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[HELD_WRITES] = True  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        # uvicorn starts a pipelined request (one the client sent before reading this answer) from here, as
        # the app sends its last bytes: its task's first step would run before this request's books, which
        # the envelope schedules after the app returns, in this same turn (a slot or a reservation still
        # held, a spurious 429). One more hop of the loop starts it after them. Without one waiting, a next
        # request arrives with a later read, after this turn's callbacks: nothing to defer.
        if self.pipeline:
            self.loop.call_soon(super().on_response_complete)
        else:
            super().on_response_complete()
