"""The Redis store's round trips (gateway/stores/redis_trip.py, issue 20): commands packed into one write on a
connection kept between trips, replies read in order with an error reply in its command's place, a kept
connection never used out of step with its replies (a cancelled trip, a server restarted), and the store's
admission and writes over every way to reach one server (TCP, TLS, a unix socket)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import trustme
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis_server import RedisServer, free_port

from gateway.stores import RedisStore, Step, Write, store_key
from gateway.stores.ops import INCR_WINDOW, RL_ADMISSION
from gateway.stores.redis_trip import MOST_TRIPS_PER_WRITE, Trips, evalsha, set_value

pytestmark = pytest.mark.anyio

MINUTE_US = 60_000_000


def fresh(name: str) -> str:
    return store_key("test", name, uuid.uuid4().hex)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def trips(client: aioredis.Redis) -> AsyncIterator[Trips]:
    trips = Trips(client.connection_pool)
    yield trips
    await trips.close()


async def test_replies_come_in_order_with_an_error_reply_in_its_place(trips: Trips) -> None:
    key = fresh("order")
    value = b"\x00\xff binary \r\n value"
    replies = await trips.run(
        [
            set_value(f"{key}:v", value, 60),
            ("INCR", f"{key}:v"),  # not a number: an error reply
            ("MGET", f"{key}:v", f"{key}:absent"),
            evalsha("0" * 40, [key], [1, -2]),  # a script the server does not know
            ("PTTL", f"{key}:v"),
        ]
    )
    assert isinstance(replies[1], ResponseError) and "not an integer" in str(replies[1])
    assert replies[2] == [value, None]
    assert isinstance(replies[3], NoScriptError)
    assert 0 < replies[4] <= 60_000
    # The connection is kept for the next trip, and is in step with it (its own replies, nothing left over).
    [first] = await trips.run([("CLIENT", "ID")])
    assert await trips.run([("CLIENT", "ID"), ("ECHO", "next")]) == [first, b"next"]


async def test_trips_asked_for_together_share_one_write_and_each_gets_its_own_replies(
    trips: Trips, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio.connection import AbstractConnection

    await trips.run([("PING",)])  # connected (its handshake's commands are writes too)
    writes: list[int] = []
    original = AbstractConnection.send_packed_command

    async def counting(conn: Any, command: Any, check_health: bool = True) -> None:
        writes.append(1)
        await original(conn, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    key = fresh("together")
    answers = await asyncio.gather(
        *(trips.run([("ECHO", f"trip {i}"), ("INCR", key), ("ECHO", f"end {i}")]) for i in range(20)),
        trips.run([("INCR", f"{key}:s"), ("HGET", key, "field")]),  # a wrong type: an error reply
    )
    assert len(writes) == 1
    counts = []
    for i, (echo, count, end) in enumerate(answers[:20]):
        assert (echo, end) == (f"trip {i}".encode(), f"end {i}".encode())
        counts.append(count)
    assert sorted(counts) == list(range(1, 21))  # every INCR ran once
    assert answers[20][0] == 1 and isinstance(answers[20][1], ResponseError)
    # Later trips (one after the other) take one write each, on the connection kept from the batch.
    [first] = await trips.run([("CLIENT", "ID")])
    assert await trips.run([("CLIENT", "ID"), ("ECHO", "next")]) == [first, b"next"]
    assert len(writes) == 3


async def test_a_burst_of_trips_is_split_into_writes_of_at_most_so_many(
    trips: Trips, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio.connection import AbstractConnection

    echoes: list[int] = []  # ECHO commands per write (a new connection's handshake writes none)
    original = AbstractConnection.send_packed_command

    async def counting(conn: Any, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)
        raw = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        if b"ECHO" in raw:
            echoes.append(raw.count(b"ECHO"))
        await original(conn, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    count = 2 * MOST_TRIPS_PER_WRITE + 1
    answers = await asyncio.gather(*(trips.run([("ECHO", str(i))]) for i in range(count)))
    assert answers == [[str(i).encode()] for i in range(count)]
    assert sorted(echoes) == [1, MOST_TRIPS_PER_WRITE, MOST_TRIPS_PER_WRITE]  # sent as each connects


async def test_a_cancelled_caller_s_trip_still_runs_and_its_replies_go_to_nobody_else(
    trips: Trips, client: aioredis.Redis
) -> None:
    key = fresh("cancelled")
    [kept] = await trips.run([("CLIENT", "ID")])
    waiting = asyncio.create_task(trips.run([("CLIENT", "ID"), ("BLPOP", key, 10)]))
    while int((await client.info("clients"))["blocked_clients"]) == 0:
        await asyncio.sleep(0.01)  # until the server holds the trip's BLPOP
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The BLPOP was sent: it takes this, and its reply is read and dropped, not handed to a later trip.
    await client.rpush(key, b"late")
    for _ in range(500):
        [other, mine] = await trips.run([("CLIENT", "ID"), ("ECHO", "mine")])
        assert mine == b"mine"
        if other == kept:  # the connection of the cancelled trip is in use again, and in step
            break
        await asyncio.sleep(0.01)
    assert other == kept
    assert await client.llen(key) == 0


async def test_every_trip_of_a_batch_hears_of_an_outage() -> None:
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url, socket_timeout=2)
        trips = Trips(client.connection_pool)
        try:
            await trips.run([("ECHO", "up")])
            server.stop()
            answers = await asyncio.gather(
                *(trips.run([("ECHO", str(i))]) for i in range(3)), return_exceptions=True
            )
            assert all(isinstance(answer, RedisConnectionError) for answer in answers), answers
        finally:
            await trips.close()
            await client.aclose()


async def test_closing_ends_the_trips_in_flight_and_those_not_sent_yet_as_an_outage(
    client: aioredis.Redis,
) -> None:
    trips = Trips(client.connection_pool)
    key = fresh("closing")
    sent = asyncio.create_task(trips.run([("BLPOP", key, 10)]))
    while int((await client.info("clients"))["blocked_clients"]) == 0:
        await asyncio.sleep(0.01)  # until the server holds the trip's BLPOP
    waiting = asyncio.create_task(trips.run([("ECHO", "never sent")]))
    await asyncio.sleep(0)  # it has joined a batch whose write has not started
    await trips.close()
    for task in (sent, waiting):
        with pytest.raises(RedisConnectionError):
            await task


async def test_a_kept_connection_the_server_closed_is_connected_again() -> None:
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url, socket_timeout=2)
        trips = Trips(client.connection_pool)
        try:
            assert await trips.run([("ECHO", "up")]) == [b"up"]
            server.stop()
            with pytest.raises(RedisConnectionError):
                await trips.run([("ECHO", "down")])
            server.start()
            assert await trips.run([("ECHO", "back")]) == [b"back"]
            # Restarted while idle: the kept connection sees the server's close (the event loop reads it)
            # and the next trip goes on a new one instead of failing on the closed one.
            server.stop()
            server.start()
            await asyncio.sleep(0.05)
            assert await trips.run([("ECHO", "again")]) == [b"again"]
        finally:
            await trips.close()
            await client.aclose()


async def test_a_trip_without_an_answer_in_the_socket_timeout_times_out_and_its_connection_is_dropped(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.2)
    trips = Trips(client.connection_pool)
    key = fresh("slow")
    try:
        [kept] = await trips.run([("CLIENT", "ID")])
        # The server answers the BLPOP in 5 s at the earliest, far past the 0.2 s socket timeout; the ECHO of
        # another trip in the same write waits behind it and times out with it.
        answers = await asyncio.gather(
            trips.run([("BLPOP", key, 5)]), trips.run([("ECHO", "behind")]), return_exceptions=True
        )
        assert all(isinstance(answer, TimeoutError) for answer in answers), answers
        # The connection was dropped with its reply unread: the next trip is on a new one, in step.
        [other, echo] = await trips.run([("CLIENT", "ID"), ("ECHO", "next")])
        assert other != kept and echo == b"next"
    finally:
        await trips.close()
        await client.aclose()


@pytest.fixture(scope="module")
def tls_and_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, dict[str, str]]]:
    """One redis-server listening on TCP, TLS (certificates by trustme) and a unix socket at once."""
    where = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: str(where / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    cert.private_key_pem.write_to_path(files["key"])
    socket, tls_port = str(where / "redis.sock"), free_port()
    args = ["--unixsocket", socket, "--unixsocketperm", "700", "--tls-port", str(tls_port)]
    args += ["--tls-cert-file", files["cert"], "--tls-key-file", files["key"]]
    args += ["--tls-ca-cert-file", files["ca"], "--tls-auth-clients", "no"]
    with RedisServer(args=args) as server:
        yield (
            server,
            {
                "tcp": server.url,
                "tls": f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={files['ca']}",
                "unix": f"unix://{socket}?db=0",
            },
        )


@pytest.mark.parametrize("how", ["tcp", "tls", "unix"])
async def test_the_store_admits_and_writes_over_tcp_tls_and_a_unix_socket(
    tls_and_unix: tuple[RedisServer, dict[str, str]], how: str
) -> None:
    _, urls = tls_and_unix
    assert Path(urls["unix"].removeprefix("unix://").split("?")[0]).exists()
    store = RedisStore(urls[how], on_error="fail_closed")
    base = fresh(how)
    keys = [store_key("rl", base, "req", together=True), store_key("rl", base, "conc", together=True)]
    # One request against an rpm of 1 and one concurrency slot, with a read of a value written before.
    args = [1, 1, MINUTE_US, 1, 1, MINUTE_US, 7, 1]
    try:
        await store.write_many(
            [Write([f"{base}:v"], value=b"cached", ttl=60), Write([f"{base}:n"], INCR_WINDOW, [60_000])]
        )
        first = await store.admit([Step(RL_ADMISSION, keys, args)], [f"{base}:v", f"{base}:absent"])
        assert first.ok and first.values == [b"cached", None]
        second = await store.admit([Step(RL_ADMISSION, keys, args)])
        assert not second.ok  # the minute's one request is spent: the same server answered both
        assert await store.run(INCR_WINDOW, [f"{base}:n"], [60_000]) == [2]
    finally:
        await store.close()
