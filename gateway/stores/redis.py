"""Redis backend: state shared by several gateway replicas.

Every atomic operation is a Lua script registered once per process and called by EVALSHA (redis-py reloads
it if the server restarted and lost its script cache), so a check and its update are one step on the server.

When Redis cannot be reached the store follows `on_error`: `fail_open` answers as if the state allowed the
request (a cache miss, the operation's `fail_open` result), `fail_closed` raises `StoreUnavailable`. Each
transition between reachable and unreachable is logged once, never with the URL's password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.stores import admission
from gateway.stores.base import Admitted, AtomicOp, OnError, Step, StoreUnavailable, Write
from gateway.stores.redis_trip import Command, Trips, evalsha, set_value
from gateway.stores.redis_url import close, connect, parse_redis_url, redacted

__all__ = ["RedisStore", "redacted"]

log = logging.getLogger("gateway.stores")


# Besides lost connections: a cluster without a primary for a slot (a node failing over), and a write that
# reached a primary Sentinel has just demoted (READONLY) are outages too, until the topology settles.
_OUTAGE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    ReadOnlyError,
)


class RedisStore:
    """A `Store` in Redis, shared by every replica that points at the same server, Sentinel set or cluster.

    `url` is any form `gateway.stores.redis_url` accepts. In a cluster, every atomic operation's keys must
    share a hash tag (`store_key(..., together=True)`), so the script runs on the one node owning their slot.
    """

    backend = "redis"

    def __init__(self, url: str, *, on_error: OnError = "fail_open", timeout: float = 1.0) -> None:
        self.on_error = on_error
        self._where = redacted(url)
        # No automatic retries (see redis_url.connect): a retried script could apply twice.
        self._client = connect(url, timeout=timeout)
        self._scripts: dict[str, AsyncScript] = {}
        self._composites: dict[tuple[str, ...], AsyncScript] = {}
        # One server (or the primary a Sentinel names): the hot path's trips go by `Trips` on the client's
        # own pool, not through a redis-py Pipeline (see gateway/stores/redis_trip.py). None for a cluster,
        # which runs one script on one slot only: an admission whose steps' keys sit in several slots (the
        # rate limit's `{rl}` and the budget's `{budget}`) runs slot by slot there (see `admit`), and the
        # writes go by redis-py's cluster pipeline, which sends each node its slots' commands.
        cluster = parse_redis_url(url).topology == "cluster"
        self._trips = None if cluster else Trips(self._client.connection_pool)
        self.healthy = True

    async def get(self, key: str) -> bytes | None:
        """The value under `key`; None when absent or (fail open) Redis is down."""
        value = await self._call(lambda: self._client.get(key), None)
        return None if value is None else bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under `keys` by one MGET (one round trip; every replica sees the same values). On Redis
        Cluster the keys may sit in several slots: redis-py's ``mget_nonatomic`` splits the read by slot
        (one trip per node); no caller needs the reads to be atomic, only current."""
        mget = getattr(self._client, "mget_nonatomic", None) or self._client.mget
        values = await self._call(lambda: mget(list(keys)), [None] * len(keys))
        return [None if value is None else bytes(value) for value in values]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` (TTL kept to the millisecond); size limits are Redis's own `maxmemory` policy."""
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._call(lambda: self._client.set(key, value, px=px), None)

    async def delete(self, key: str) -> None:
        """Remove `key`."""
        await self._call(lambda: self._client.delete(key), None)

    def _script(self, op: AtomicOp) -> AsyncScript:
        script = self._scripts.get(op.name)
        if script is None:
            script = self._scripts[op.name] = self._client.register_script(op.lua)
        return script

    async def run(self, op: AtomicOp, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        """Run `op`'s Lua script atomically on the server."""
        script = self._script(op)
        result = await self._call(
            lambda: script(keys=list(keys), args=[int(a) for a in args]), op.fail_open(keys, args)
        )
        return [int(x) for x in result]

    def _composite(self, steps: Sequence[Step], on_hit: Sequence[Step] = ()) -> AsyncScript:
        # One script per combination of operations (a request with a budget and one without are two), looked
        # up by their names.
        key = (*[step.op.name for step in steps], "|", *[step.op.name for step in on_hit])
        script = self._composites.get(key)
        if script is None:
            lua = admission.composite_lua([step.op for step in steps], [step.op for step in on_hit])
            script = self._composites[key] = self._client.register_script(lua)
        return script

    async def admit(
        self,
        steps: Sequence[Step],
        reads: Sequence[str] = (),
        *,
        guard: str | None = None,
        on_hit: Sequence[Step] = (),
    ) -> Admitted:
        """One round trip (`Trips.run`): the steps' composed script (`gateway/stores/admission.py`), then an
        MGET of `reads`. A script the server does not know yet is loaded and run again (one more trip).

        On Redis Cluster one script cannot span slots, so the steps run as one script per hash tag, in
        order, stopping at the first refusal (a trip each), the guard is not checked, and the reads go by
        `get_many`: there, a step that refuses after an earlier slot admitted does not undo that slot's
        charge (its `charged` says so).
        """
        if self._trips is None:
            return await self._admit_by_slot(steps, reads)
        scripted = bool(steps or on_hit)
        commands: list[Command] = []
        if scripted:
            script = self._composite(steps, on_hit)
            keys, args = admission.composite_args(steps, guard, on_hit)
            commands.append(evalsha(script.sha, keys, args))
        if reads:
            commands.append(("MGET", *reads))
        if not commands:
            return Admitted(True, [], [], [])
        replies = await self._call(partial(self._trips.run, commands), None)
        if replies is None:
            return admission.fail_open(steps, reads)
        values = replies[-1] if reads else []
        if not scripted:
            return Admitted(True, [], [None if v is None else bytes(v) for v in values], [])
        raw = replies[0]
        if isinstance(raw, NoScriptError):
            raw = await self._call(lambda: script(keys=keys, args=args), None)
            if raw is None:
                return admission.fail_open(steps, reads)
        for reply in (raw, values):
            if isinstance(reply, Exception):
                raise reply
        hit, ok, results = admission.split_answer(raw, len(steps), len(on_hit))
        return Admitted(
            ok, results, [None if v is None else bytes(v) for v in values], [ok] * len(results), hit
        )

    async def _admit_by_slot(self, steps: Sequence[Step], reads: Sequence[str]) -> Admitted:
        groups: dict[str, list[int]] = {}
        for i, step in enumerate(steps):
            groups.setdefault(_hash_tag(step.keys[0]) if step.keys else "", []).append(i)
        results: list[list[int]] = [[] for _ in steps]
        charged = [False] * len(steps)
        ok = True
        for members in groups.values():
            part = [steps[i] for i in members]
            script = self._composite(part)
            keys, args = admission.composite_args(part)
            answers = [s.op.fail_open(s.keys, s.args) for s in part]
            fallback = [0, 1, *(x for answer in answers for x in (len(answer), *answer))]
            raw = await self._call(partial(script, keys=keys, args=args), fallback)
            _, ok, answers = admission.split_answer(raw, len(part))
            for i, answer in zip(members, answers, strict=True):
                results[i] = answer
                charged[i] = ok
            if not ok:
                break
        return Admitted(ok, results, await self.get_many(reads) if reads else [], charged)

    async def write_many(self, writes: Sequence[Write]) -> None:
        """One round trip (`Trips.run`; not a transaction: each write is atomic on its own) of EVALSHA and
        SET commands.

        A script the server does not know (restarted, or never loaded) fails alone with NOSCRIPT without
        running, so those writes are sent again through `run`, which loads the script first.
        """
        if not writes:
            return
        if self._trips is None:
            results = await self._call(partial(self._pipeline_writes, writes), [])
        else:
            commands = [
                set_value(w.keys[0], w.value, w.ttl)
                if w.op is None
                else evalsha(self._script(w.op).sha, w.keys, [int(a) for a in w.args])
                for w in writes
            ]
            results = await self._call(partial(self._trips.run, commands), [])
        for write, result in zip(writes, results, strict=False):
            if isinstance(result, NoScriptError) and write.op is not None:
                await self.run(write.op, write.keys, write.args)
            elif isinstance(result, Exception):
                log.error("state store write failed: %s", type(result).__name__)

    async def _pipeline_writes(self, writes: Sequence[Write]) -> list[Any]:
        # Redis Cluster: redis-py's cluster pipeline sends each node the writes whose slots it owns.
        pipe = self._client.pipeline(transaction=False)
        for write in writes:
            if write.op is None:
                px = None if write.ttl is None else max(1, int(write.ttl * 1000))
                pipe.set(write.keys[0], write.value, px=px)
            else:
                sha = self._script(write.op).sha
                pipe.evalsha(sha, len(write.keys), *write.keys, *(int(a) for a in write.args))
        return list(await pipe.execute(raise_on_error=False))

    async def ping(self) -> bool:
        """True when Redis answers now (used by health checks)."""
        try:
            await self._client.ping()
        except _OUTAGE_ERRORS:
            return False
        return True

    async def close(self) -> None:
        """Close the connection pool."""
        if self._trips is not None:
            await self._trips.close()
        await close(self._client)

    async def _call(self, command: Callable[[], Awaitable[Any]], fallback: Any) -> Any:
        try:
            result = await command()
        except _OUTAGE_ERRORS as exc:
            self._mark(False, exc)
            if self.on_error == "fail_closed":
                raise StoreUnavailable("the shared state store is unavailable") from None
            return fallback
        self._mark(True, None)
        return result

    def _mark(self, healthy: bool, exc: BaseException | None) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            log.warning("state store %s is reachable again", self._where)
        else:
            action = "letting requests through" if self.on_error == "fail_open" else "refusing requests (503)"
            log.error(
                "state store %s is unreachable (%s); %s until it is back",
                self._where,
                type(exc).__name__,
                action,
            )


def _hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: between the first `{` and the next `}` when non-empty."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key
