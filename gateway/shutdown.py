"""Graceful shutdown: report draining, let requests and streams finish within a deadline, then exit.

On SIGTERM (or the first Ctrl-C) ``gateway run`` does not stop listening at once, as uvicorn would (it
closes the listening socket and cuts every WebSocket with 1012 straight away). Instead:

1. ``/ready`` answers ``503 {"status": "draining"}`` so a load balancer takes the replica out of rotation;
   requests that still arrive are served, but a WebSocket refuses new ``chat.request`` frames (a socket
   would otherwise keep the drain going forever).
2. Requests and streams in flight, HTTP and WebSocket, get until ``server.drain_timeout_s`` (default 30 s)
   to finish; the gateway waits on a counter of them, not on a sleep.
3. Each WebSocket is closed with 1012 (service restart) once its streams ended (at the deadline, streams
   still running are cancelled first, settled as a client cancel would be).
4. uvicorn's own shutdown follows: listeners closed, anything left cancelled, the lifespan's close hooks
   (ledger flush, transports, store) run, the process exits.

A second SIGTERM or Ctrl-C skips the drain. The drain lives here, outside uvicorn, because uvicorn offers
no hook between the signal and closing its listeners; :class:`DrainingServer` is the one seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Protocol

import uvicorn

logger = logging.getLogger("gateway.shutdown")

CLOSE_SERVICE_RESTART = 1012
"""RFC 6455 close code: the server is restarting; the client may reconnect (to another replica)."""

SOCKET_CLOSE_SECONDS = 5.0
"""How long closed WebSockets get to finish their closing handshake after the drain."""


class Drainable(Protocol):
    """A WebSocket connection the drain can close (gateway/routes/ws.py's ``Connection``)."""

    async def going_away(self, code: int, reason: str) -> None:
        """Cancel what still runs, send a close frame with ``code``, and return once it is queued."""

    async def finished(self) -> None:
        """Return once the connection's handler has ended."""


class Activity:
    """What is in flight in one gateway: HTTP requests, WebSocket streams, open sockets; and whether the
    gateway is draining. One per app (no module-level state)."""

    def __init__(self) -> None:
        self.draining = False
        # Set when the drain deadline passed and the HTTP requests still running are being stopped.
        self.stopping = False
        self.in_flight = 0
        self.sockets: set[Drainable] = set()
        self._http: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self, task: asyncio.Task[object] | None = None) -> None:
        """A request or stream starts; ``task`` (an HTTP request's) is stopped at the drain deadline."""
        self.in_flight += 1
        self._idle.clear()
        if task is not None:
            self._http.add(task)

    def exit(self, task: asyncio.Task[object] | None = None) -> None:
        """A request or stream ended (its whole response sent)."""
        self.in_flight -= 1
        if task is not None:
            self._http.discard(task)
        if self.in_flight <= 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Mark draining, wait until nothing is in flight (at most ``timeout`` seconds), then close every
        WebSocket with 1012 and wait for them to go. True when everything finished in time."""
        self.draining = True
        finished = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            finished = False
            logger.warning(
                "shutdown: %d request(s) still running after the %.1f s drain deadline; stopping them",
                self.in_flight,
                timeout,
            )
            # Cancelled here rather than by uvicorn, which would log each as a failed application: the
            # middleware ends each response in-band (gateway/middleware.py).
            self.stopping = True
            for task in list(self._http):
                task.cancel()
        sockets = list(self.sockets)
        # Bounded: a client that stopped reading must not hold the process up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SOCKET_CLOSE_SECONDS):
                await asyncio.gather(
                    *(c.going_away(CLOSE_SERVICE_RESTART, "server shutting down") for c in sockets)
                )
                await asyncio.gather(*(c.finished() for c in sockets))
        return finished


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain between the first SIGTERM/SIGINT and its own shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[object]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Future[None] | None = None
        self._drain_requested = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self._drain_requested and not self.should_exit
        if first and sig in (signal.SIGTERM, signal.SIGINT) and self._loop is not None and self.started:
            self._drain_requested = True
            # Called from the signal handler, between two bytecodes of the loop's thread: schedule, don't run.
            self._loop.call_soon_threadsafe(self._begin_drain)
            return
        super().handle_exit(sig, frame)  # a second signal (or before serving): uvicorn's immediate shutdown

    def _begin_drain(self) -> None:
        logger.info("shutdown: draining (readiness reports 503)")
        # Held: the event loop keeps only weak references to tasks.
        self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        except Exception as exc:  # fail open on purpose: a broken drain must not keep the process up
            logger.error("shutdown: drain failed: %s", type(exc).__name__)
        finally:
            self.should_exit = True
