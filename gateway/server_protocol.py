"""uvicorn's httptools protocol with a response's head written together with its body's first piece.

uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and its body
when the app sends ``http.response.body``: two ``transport.write`` calls, and on uvloop two ``send`` system
calls for a JSON answer that fits in one. On loopback a send also runs the receiving side's TCP path, so the
second one is a measurable share of a small request (a cache hit above all). :class:`OneWriteTransport`
holds the head until the body's first piece is written and writes both at once; if no piece comes in the
same turn of the event loop (a stream waiting for its upstream), the head goes out at the end of that turn.
Every other write goes straight to the socket, as uvicorn's does: a stream's chunks are never held, so a
burst of chunks that arrived together reaches the client chunk by chunk, the first one first.

Only the gateway's server uses it (``gateway run``, through uvicorn's ``http`` option, which takes a protocol
class); the benchmark's passthrough stays on plain uvicorn, as a user would run it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/"  # how uvicorn's status line, so every head it writes, begins


class OneWriteTransport:
    """A transport that holds a response's head until the next write (the body's first piece) or the end of
    the event loop's turn, whichever comes first, and writes everything else at once.

    What is held goes out first, in order, before any later write, ``write_eof`` or ``close``, and counts in
    the buffer size; anything else is the transport's own. (A body piece that happens to begin like a head is
    held the same way: at most until the next write or the end of the turn, never reordered.)
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:5] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Write the head held, if any (the end of the turn, or before closing)."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

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
        return self._transport.get_write_buffer_size() + (len(held) if held is not None else 0)

    def __getattr__(self, name: str) -> Any:
        # Reading, flow control, extra info, set_protocol: the transport's own.
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`OneWriteTransport` (everything else is uvicorn's)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        one_write = OneWriteTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(one_write)  # type: ignore[arg-type]
