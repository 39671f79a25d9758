"""A TCP proxy on loopback that delays every byte by a fixed one-way latency: a simulated long link.

Multi-region tests and `bench/multi_region.py` put it in front of the global Redis, so a replica pays a
cross-region round trip (40 ms each way = 80 ms RTT by default) for every command it sends there, exactly
where the real deployment would. Each direction of each connection is a queue of (due time, bytes): data is
forwarded in order, no earlier than `delay` after it arrived, and never throttled, so pipelined commands
share one delay as they would on a real link (latency, not bandwidth).

The proxy runs its own event loop in a background thread, so synchronous tests and an asyncio program
(the gateway in process) can both use it. `start()` returns once it listens; `stop()` closes every
connection and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

CHUNK = 65536


class DelayProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`, delaying each direction by `delay_ms`."""

    def __init__(self, target_port: int, *, delay_ms: float = 40.0, target_host: str = "127.0.0.1") -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        self.target = (target_host, target_port)
        self.delay = delay_ms / 1000.0
        self.port = 0
        self.connections = 0  # accepted so far (tests and the bench read it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The `redis://` URL of the delayed path to the target (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Listen on a free loopback port (kept across `stop()`/`start()`) and return once listening."""
        if self._thread is not None:
            raise RuntimeError("the delay proxy is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, "127.0.0.1", self.port or 0)
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except OSError as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"delay-proxy-{self.target[1]}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"the delay proxy did not start: {failure[0] if failure else 'timeout'}")

    def stop(self) -> None:
        """Close the listener and every proxied connection; the thread is joined."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writers = [client_writer]
        try:
            # A dead target closes the client's connection, as it would be refused without the proxy.
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            writers.append(upstream_writer)
            _nodelay(client_writer)
            _nodelay(upstream_writer)
            await _until_first_done(
                self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
            )
        except OSError:
            pass
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy `reader` to `writer`, each chunk released `delay` after it was read (order kept)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        releaser = asyncio.create_task(release())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((time.monotonic() + self.delay, data))
                if not data:  # end of stream, after what was already in flight
                    break
            await releaser
        except (ConnectionError, OSError):
            pass
        finally:
            releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await releaser

    def __enter__(self) -> DelayProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _until_first_done(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the two directions; when either ends (a side closed), cancel the other."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    """Disable Nagle on a proxied socket: the proxy's own delay must be the only one added."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
