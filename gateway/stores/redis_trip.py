"""Round trips to one Redis server: a request's commands packed into one write, their replies read in order.

The admission and the after-answer writes of every request are one trip each. Made through redis-py's
asyncio `Pipeline`, a trip cost more of the gateway's CPU than the rest of the state store (issue 20's
profile of production on Redis: the pipeline was 30% of the event loop's samples): a Pipeline object and its
command stack per request, every argument through the encoder in Python, response callbacks, retry and
observability wrappers, a pool checkout. Here the commands are packed by hiredis in C (one call per command;
keys are `str`, arguments `int`, values `bytes`, all of which it takes as they are) and sent on a connection
of the client's own pool, so what the pool does stays as it was: connecting lazily (TLS, unix socket, the
primary a Sentinel names, AUTH and SELECT), reconnecting one that was dropped.

Trips asked for together (several requests reaching their admission in the same turn of the event loop, as
they do under load) share one write and one read of the replies: under 32 concurrent clients that turned
two socket writes and two reads per request into a small fraction of one (strace), and each write's and
read's event-loop work with them. Each trip still gets exactly its own replies, in order; the server runs
each trip's commands as it would have (a script is atomic by itself; a trip's commands were never a
transaction).

A connection is never used with replies still unread: redis-py's `send_packed_command` and `read_response`
disconnect it on any failure or cancellation, and an error reply (such as NOSCRIPT) is read like any other
and returned in its command's place. A caller cancelled while it waits does not stop its trip (the write may
be out already, as with any command): the replies are read and dropped. Redis Cluster does not come here:
its commands go to the node owning their slot, which redis-py's cluster client works out (see `RedisStore`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

# One Redis command: its name, then keys and arguments as hiredis packs them.
Command = tuple[str | bytes | int, ...]

# Trips in one write at most, so a burst of requests does not make one write (and one wait for all its
# replies) of them all; 32 clients at once make batches of 10 to 20 (bench/store_trips.py --concurrency 32).
MOST_TRIPS_PER_WRITE = 64


def evalsha(sha: str, keys: Sequence[str], args: Sequence[int]) -> Command:
    """EVALSHA of the script `sha` on `keys` with `args`."""
    return ("EVALSHA", sha, len(keys), *keys, *args)


def set_value(key: str, value: bytes, ttl: float | None) -> Command:
    """SET `key` to `value`, expiring after `ttl` seconds kept to the millisecond (None: never)."""
    if ttl is None:
        return ("SET", key, value)
    return ("SET", key, value, "PX", max(1, int(ttl * 1000)))


class Trips:
    """Round trips to the server of one redis-py asyncio `ConnectionPool`, on connections kept between them.

    Borrowing a connection from the pool for each trip and giving it back cost a fifth of the trip's CPU
    (the pool's lock, its observability hooks, a connect-and-retry wrapper even when connected), so a
    connection borrowed once is kept here for the next trip, and checked as the pool checks one it lends:
    a connection the server closed is dropped (`send_packed_command` connects it again, to the primary a
    Sentinel names now), one holding unread data is never used as it is. The pool still owns every
    connection: a failed one goes back to it, and `close` gives back the rest.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._idle: list[Any] = []
        # The trips waiting for the next write, and the tasks writing and reading the batches in flight.
        self._batch: list[_Trip] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        """Send `commands` in one write and return their replies in order, an error reply as its
        `ResponseError` (e.g. `NoScriptError`).

        A lost connection raises redis-py's `ConnectionError`, no answer within the connection's socket
        timeout `TimeoutError`: the caller decides what an outage means.
        """
        # hiredis's stub types the argument as a 1-tuple; it packs a command of any length.
        packed = b"".join([hiredis.pack_command(command) for command in commands])  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        trip = _Trip(packed, len(commands), loop.create_future())
        batch = self._batch
        if batch is None or len(batch) >= MOST_TRIPS_PER_WRITE:
            # The first trip of a batch starts its sender, which runs on the event loop's next turn: the
            # trips asked for until then join the same write.
            batch = self._batch = []
            sender = loop.create_task(self._send(batch))
            self._sending.add(sender)
            sender.add_done_callback(partial(self._sent, batch))
        batch.append(trip)
        return await trip.replies

    def _sent(self, batch: list[_Trip], sender: asyncio.Task[None]) -> None:
        self._sending.discard(sender)
        # Only a sender cancelled (by `close`), perhaps before it even ran, leaves trips waiting.
        _fail(batch, asyncio.CancelledError())

    async def _send(self, batch: list[_Trip]) -> None:
        if self._batch is batch:
            self._batch = None  # the trips asked for from now on go in the next write
        try:
            connection = await self._checkout()
        except Exception as error:
            _fail(batch, error)
            return
        done = 0
        try:
            # One deadline for the batch, the connection's socket timeout, instead of redis-py's own for
            # each reply (a timer armed and cancelled per reply was most of the reading's CPU): `math.inf`
            # is redis-py's documented "no timeout of its own" for `read_response`.
            async with asyncio.timeout(connection.socket_timeout):
                await connection.send_packed_command(b"".join([trip.packed for trip in batch]))
                for trip in batch:
                    replies: list[Any] = []
                    for _ in range(trip.length):
                        try:
                            replies.append(await connection.read_response(timeout=math.inf))
                        except ResponseError as error:
                            replies.append(error)
                    if not trip.replies.done():  # its caller may have been cancelled
                        trip.replies.set_result(replies)
                    done += 1
        except BaseException as error:
            # redis-py has disconnected it (a failure or a cancellation leaves replies unread).
            await self._pool.release(connection)
            if isinstance(error, asyncio.CancelledError):
                raise
            _fail(batch[done:], error)
            return
        self._idle.append(connection)

    async def _checkout(self) -> Any:
        if not self._idle:
            return await self._pool.get_connection()
        connection = self._idle.pop()
        if connection.is_connected:
            # As the pool checks a connection it lends: data nobody asked for (out of step with its
            # replies) or closed by the server. Disconnected, it is connected again by the send.
            try:
                stale = await connection.can_read()
            except (RedisConnectionError, OSError):
                stale = True
            if stale:
                await connection.disconnect()
        return connection

    async def close(self) -> None:
        """Stop the trips in flight (their callers get a `ConnectionError`) and give every kept connection
        back to the pool."""
        sending = list(self._sending)
        for sender in sending:
            sender.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        self._batch = None
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._pool.release(connection)


class _Trip(NamedTuple):
    """One caller's packed commands, how many they are, and where its replies go."""

    packed: bytes
    length: int
    replies: asyncio.Future[list[Any]]


def _fail(trips: Sequence[_Trip], error: BaseException) -> None:
    """Give `error` to every trip still waiting; a sender stopped by `close` is an outage to its callers."""
    if isinstance(error, asyncio.CancelledError):
        error = RedisConnectionError("the state store was closed")
    for trip in trips:
        if not trip.replies.done():
            trip.replies.set_exception(error)
