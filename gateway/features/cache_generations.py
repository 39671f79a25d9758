"""Purging the response cache by model, by key or whole, without an index of its entries.

Cache keys are opaque hashes (gateway/features/cache.py), so nothing lists "the entries of model m". Instead
every entry is written under **generation tokens**, random values kept in the state store:

- ``gw:cachegen:all``: the whole cache;
- ``gw:cachegen:model:<alias>``: one model alias;
- ``gw:cachegen:tenant:<tenant>``: one tenant (a key's id, or its shared group);
- ``gw:cachegen:pair:<len(tenant)>:<tenant>:<alias>``: one tenant's entries of one model.

An entry records the four tokens current when its lookup read them, and is served only while all four are
still current. A purge replaces one token with a fresh random one, so every entry written under the old
token stops matching at once, on every replica (they read the tokens with the entry, see below), and expires
by its TTL; the next miss overwrites it under the same cache key.

**Cost on the hot path**: the lookup reads the entry and its four tokens with one ``Store.get_many`` (one
Redis MGET, one round trip, as before; four dict reads on the memory backend). No replica caches tokens
locally, so there is no staleness window. Chosen over folding the tokens into the cache key, which needs
the tokens before the key is known: two round trips per request.

**Missing tokens** (first use, or evicted by the memory backend's LRU or Redis's ``maxmemory`` policy)
are created with a fresh random value on the miss path. An entry never matches a missing token, and a
fresh token is never equal to an old one, so losing a token costs misses, never a stale hit. An answer
that was computed while a purge happened was looked up under the old token, so it is stored under it and
never served after the purge.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.stores.base import Store, store_key

ALL = store_key("cachegen", "all")


def model_token(model: str) -> str:
    """The store key of model alias ``model``'s generation token."""
    return store_key("cachegen", "model", model)


def tenant_token(tenant: str) -> str:
    """The store key of ``tenant``'s generation token (a key's id or ``group:<name>``)."""
    return store_key("cachegen", "tenant", tenant)


def pair_token(tenant: str, model: str) -> str:
    """The store key of the token of ``tenant``'s entries of model alias ``model``."""
    # Length-prefixed: a tenant may contain ':' (``group:a:b``), and two pairs must never share a token.
    return store_key("cachegen", "pair", str(len(tenant)), tenant, model)


def token_keys(tenant: str, model: str) -> list[str]:
    """The four token keys an entry of ``tenant`` for ``model`` is written under, in a fixed order."""
    return [ALL, model_token(model), tenant_token(tenant), pair_token(tenant, model)]


def fresh_token() -> bytes:
    """A new generation token: 96 random bits, so a replaced token never comes back."""
    return secrets.token_hex(12).encode()


@dataclass(frozen=True)
class Generations:
    """The tokens an entry is checked against and written under (as text, the way entries record them)."""

    tokens: tuple[str, ...]

    def current(self, recorded: object) -> bool:
        """Whether an entry that recorded ``recorded`` is still current (no purge since it was written)."""
        return isinstance(recorded, list) and tuple(recorded) == self.tokens


def known(raw: Sequence[bytes | None]) -> Generations | None:
    """The generations read as ``raw`` when every token was there (nearly every lookup), else None: then
    :func:`ensure` creates the missing ones. No coroutine for the common case, which every lookup pays."""
    tokens = []
    for value in raw:
        if value is None:
            return None
        tokens.append(value.decode("ascii", "replace"))
    return Generations(tuple(tokens))


async def ensure(store: Store, keys: Sequence[str], raw: Sequence[bytes | None]) -> Generations | None:
    """The generations read as ``raw`` for ``keys``, creating each missing token (a write per missing one,
    only on the first use of a model or tenant and after an eviction). None when a token is missing because
    the store is down (fail open): nothing can be cached then, and four writes would only wait for timeouts.
    """
    if not store.healthy and None in raw:
        return None
    tokens = []
    for key, value in zip(keys, raw, strict=True):
        if value is None:
            value = fresh_token()
            await store.set(key, value)
        tokens.append(value.decode("ascii", "replace"))
    return Generations(tuple(tokens))


async def purge(store: Store, *, model: str | None = None, tenant: str | None = None) -> bool:
    """Make every entry of ``model``, of ``tenant``, of both together, or (neither) of the whole cache
    unreachable at once on every replica. False when the store did not keep the new token: with Redis
    down and ``state.on_error: fail_open`` a write is dropped silently, and a purge must not claim success.
    """
    if model is not None and tenant is not None:
        key = pair_token(tenant, model)
    elif model is not None:
        key = model_token(model)
    elif tenant is not None:
        key = tenant_token(tenant)
    else:
        key = ALL
    token = fresh_token()
    await store.set(key, token)
    return await store.get(key) == token
