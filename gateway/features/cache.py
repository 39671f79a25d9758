"""Response caching: an exact-match cache stage, isolated per tenant, shared by replicas through the store.

**Key.** SHA-256 over canonical JSON (sorted keys, no whitespace, integral floats as integers) of: a format
version, the tenant (the virtual key's hashed id, or the group of keys an operator opted into sharing with
`features.cache.shared`: one tenant never receives another's answer), the endpoint,
the model alias the client sent, and the whole request body except the fields that only change how the answer
is delivered, not what it says (`IGNORED_FIELDS`: `stream`, `stream_options`). Everything else is in the key,
including provider extras the gateway does not know, so a new parameter makes keys more specific, never less.
`user` stays in: it identifies the end user inside a tenant, and keeping it stops one end user from learning
(by a fast HIT) that another asked the same thing.

**Entry** (`cache_entries.py`). The complete response body (`chat.completion` or the embeddings list),
JSON (zlib-compressed past 2 KiB). A streamed miss is assembled into that body once the stream completed
(every choice finished, no error), so one entry serves both forms: a stream hit is replayed as SSE chunks
of the same shape (role, content pieces, tool calls, finish, a final usage chunk; the route adds `[DONE]`),
a plain hit returns the body with a fresh `id`.

**Usage on a hit.** Nothing reached a provider, so the billed counts are zero and what the hit saved is
reported next to them: `usage = {prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, saved_prompt_tokens,
saved_completion_tokens, saved_total_tokens}`. Stages before the cache (rate limit, budget, usage ledger)
therefore charge nothing for a hit without knowing about the cache; they may read `call.scratch["cache.hit"]`.

**Purge** (`cache_generations.py`). Entries have no index by key or model; each records the generation
tokens (whole cache, model, tenant, tenant and model) current at its lookup, read with the entry in one
`get_many`, and is a hit only while they are all still current. `POST /admin/v1/cache/purge` replaces one.

**Client control.** `Cache-Control: no-cache` skips the lookup and stores the fresh answer; `no-store` neither
reads nor writes; `x-gateway-cache-ttl: N` sets this entry's TTL (clamped to `max_ttl_seconds`; 0 stores
nothing). Every cached endpoint response carries `x-gateway-cache: HIT | MISS | BYPASS`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from hashlib import sha256
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway import jsonio
from gateway.admission import FULL, Claim, Readmit, answered
from gateway.errors import GatewayError, invalid_request
from gateway.features import cache_generations
from gateway.features.cache_entries import (
    assemble,
    complete_body,
    decode_entry_with_generations,
    encode_entry,
    hit_usage,
    replay_chunks,
)
from gateway.features.cache_generations import Generations
from gateway.pipeline import Call, Handler, Response, Result, Stream
from gateway.stores.after_writes import after_answer, defer
from gateway.stores.base import Store, StoreUnavailable, Write, store_key

KEY_VERSION = "v1"
UNCACHEABLE = "cache.uncacheable"
"""A ``call.scratch`` flag a route sets when the canonical body does not hold everything that shapes the
answer (an Anthropic request's ``thinking`` or ``cache_control``): such a call bypasses the cache."""

# Delivery-only fields: the same answer, sent as one body or as SSE, with or without a usage chunk.
IGNORED_FIELDS = frozenset({"stream", "stream_options"})
TTL_HEADER = "x-gateway-cache-ttl"
STATUS_HEADER = "x-gateway-cache"
CLAIM = "cache.claim"
PLAN = "cache.plan"
_TOKEN_KEYS_MAX = 4096


class CacheModelConfig(BaseModel):
    """Per model alias overrides under `features.cache.models`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(default=None, description="overrides features.cache.enabled for this model")
    ttl_seconds: float | None = Field(default=None, gt=0)


class CacheConfig(BaseModel):
    """`features.cache`: exact-match response caching."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="the default for every model; models.<alias>.enabled wins"
    )
    mode: Literal["all", "deterministic"] = Field(
        default="all",
        description="all: cache every successful answer; deterministic: only chat requests with "
        "temperature 0 or a seed (embeddings always)",
    )
    ttl_seconds: float = Field(default=3600, gt=0)
    max_ttl_seconds: float = Field(default=86400, gt=0)
    max_entry_bytes: int = Field(
        default=1024 * 1024, gt=0, description="larger (compressed) entries are not stored"
    )
    stream_chunk_chars: int = Field(default=32, gt=0, description="content characters per replayed SSE chunk")
    models: dict[str, CacheModelConfig] = Field(default_factory=dict)
    shared: dict[str, list[str]] = Field(
        default_factory=dict,
        description="opt-in sharing: named groups of key names that use one cache between them",
    )

    @model_validator(mode="after")
    def _one_group_per_key(self) -> CacheConfig:
        seen: dict[str, str] = {}
        for group, names in self.shared.items():
            for name in names:
                if name in seen:
                    raise ValueError(f"key '{name}' is in two shared groups, '{seen[name]}' and '{group}'")
                seen[name] = group
        return self

    def tenant(self, call: Call) -> str:
        """Whose entries `call` may read and write: its shared group, else the key's own hashed id."""
        return self.tenant_of(call.key.name, call.key.key_id, is_master=call.key.is_master)

    def tenant_of(self, name: str, key_id: str, *, is_master: bool = False) -> str:
        """The tenant of the key named `name` with id `key_id` (what `tenant` answers for its calls)."""
        if not is_master:
            for group, names in self.shared.items():
                if name in names:
                    return f"group:{group}"
        return key_id


@dataclass
class CacheStats:
    """Counters of one gateway process (each replica counts its own)."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stores: int = 0
    too_large: int = 0
    tokens_saved: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict (for `/admin` and metrics)."""
        return asdict(self)


# Values `_canonical` returns as they are, by exact type: the leaves of almost every body. Looking them up
# before calling it, rather than calling it for every leaf, halves the cost of a key (measured: 7.9 to 5.5 us
# for a two-message chat body), which every cached request pays.
_PLAIN = frozenset({str, int, bool, type(None)})


def _canonical(value: Any) -> Any:
    # 1.0 and 1 mean the same to every provider; without this they would be two entries.
    kind = type(value)
    if kind is dict:
        return {
            k if type(k) is str else str(k): v if type(v) in _PLAIN else _canonical(v)
            for k, v in value.items()
        }
    if kind is list:
        return [v if type(v) in _PLAIN else _canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def cache_key(call: Call, tenant: str | None = None) -> str:
    """The store key of `call`'s answer: tenant (default: the key's id), endpoint, model alias and every
    output-changing field."""
    document = {
        "v": KEY_VERSION,
        "tenant": tenant if tenant is not None else call.key.key_id,
        "endpoint": call.endpoint,
        "model": call.model,
        "body": {
            k: v if type(v) in _PLAIN else _canonical(v)
            for k, v in call.body.items()
            if k not in IGNORED_FIELDS
        },
    }
    return store_key("cache", sha256(jsonio.dumps_sorted(document)).hexdigest())


def _header(headers: Any, name: str) -> str | None:
    # `in` first: Starlette's Headers has no `get` of its own, and Mapping.get raises and catches a KeyError
    # for a missing header, which the cache's two headers are on almost every request.
    return headers[name] if name in headers else None  # noqa: SIM401 (the point: no get)


def parse_cache_control(headers: Any) -> set[str]:
    """The lower-cased directives of the request's `Cache-Control` header."""
    raw = _header(headers, "cache-control")
    if not raw:
        return set()
    return {part.strip().split("=", 1)[0].lower() for part in raw.split(",") if part.strip()}


def request_ttl(call: Call, config: CacheConfig) -> float:
    """This request's TTL in seconds: the header, else the model's, else the default; clamped."""
    raw = _header(call.headers, TTL_HEADER)
    if raw is not None:
        try:
            ttl = float(raw)
        except ValueError:
            ttl = -1.0
        if not ttl >= 0 or ttl == float("inf"):
            raise invalid_request(
                f"Header {TTL_HEADER} must be a number of seconds (0 or more), got {raw[:40]!r}.",
                code="invalid_header",
            )
        return min(ttl, config.max_ttl_seconds)
    model = config.models.get(call.model)
    if model is not None and model.ttl_seconds is not None:
        return min(model.ttl_seconds, config.max_ttl_seconds)
    return min(config.ttl_seconds, config.max_ttl_seconds)


def _deterministic(call: Call) -> bool:
    if call.endpoint != "chat":
        return True
    return call.body.get("temperature") == 0 or call.body.get("seed") is not None


def _store_unavailable() -> GatewayError:
    return GatewayError(
        503, "The response cache is unavailable: the shared state store cannot be reached.",
        "service_unavailable", "state_store_unavailable",
    )  # fmt: skip


class CacheStage:
    """The cache pipeline stage (after rate limit and budget, before the router); see the module docstring."""

    def __init__(self, config: CacheConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.stats = CacheStats()
        # The generation token keys of each (tenant, model): four store key strings every lookup would
        # build again. Bounded: cleared when full.
        self._token_keys: dict[tuple[str, str], list[str]] = {}

    def _enabled_for(self, call: Call) -> bool:
        if call.endpoint not in ("chat", "embeddings") or call.scratch.get(UNCACHEABLE):
            return False
        model = self.config.models.get(call.model)
        if not (model.enabled if model is not None and model.enabled is not None else self.config.enabled):
            return False
        return self.config.mode == "all" or _deterministic(call)

    async def admission(self, call: Call) -> Claim | None:
        """The lookup of ``call``'s entry and its generation tokens, read in the request's admission round
        trip; None when this call bypasses the cache (no lookup, nothing stored)."""
        directives = parse_cache_control(call.headers)
        ttl = request_ttl(call, self.config)
        claim = None
        if self._enabled_for(call) and "no-store" not in directives:
            tenant = self.config.tenant(call)
            key = cache_key(call, tenant)
            # The entry and the generation tokens that say whether it was purged, read together.
            token_keys = self._token_keys.get((tenant, call.model))
            if token_keys is None:
                if len(self._token_keys) >= _TOKEN_KEYS_MAX:
                    self._token_keys.clear()
                token_keys = cache_generations.token_keys(tenant, call.model)
                self._token_keys[tenant, call.model] = token_keys
            # A lookup that may serve a hit names its entry as the admission's guard: when the entry exists,
            # the rate limit and the budget admit the request as a hit (nothing to give back after it).
            hit = "no-cache" not in directives and not call.scratch.get(FULL)
            claim = Claim(self.store, reads=[key, *token_keys], guard=key if hit else None)
            call.scratch[PLAN] = (directives, ttl, key, token_keys)
        call.scratch[CLAIM] = claim
        return claim

    async def handle(self, call: Call, next: Handler) -> Result:
        """Answer from the cache when possible; otherwise pass on and store the complete answer."""
        claim = await answered(self, call, CLAIM)
        if claim is None:
            return await self._bypass(call, next)
        directives, ttl, key, token_keys = call.scratch[PLAN]
        if claim.unavailable:
            raise _store_unavailable()
        raw, *tokens = claim.values
        generations = cache_generations.known(tokens)
        if generations is None:
            try:
                generations = await cache_generations.ensure(self.store, token_keys, tokens)
            except StoreUnavailable:
                raise _store_unavailable() from None
        if "no-cache" in directives:
            call.response_headers[STATUS_HEADER] = "BYPASS"
            self.stats.bypasses += 1
        else:
            body, recorded = decode_entry_with_generations(raw) if raw is not None else (None, None)
            if body is not None and generations is not None and generations.current(recorded):
                return self._hit(call, body)
            if claim.hit:
                # Admitted as a hit, but the entry was purged (or unreadable): admitted again, in full.
                raise Readmit
            call.response_headers[STATUS_HEADER] = "MISS"
            self.stats.misses += 1
        result = await next(call)
        if ttl <= 0 or generations is None:
            return result
        if isinstance(result, Response):
            if 200 <= result.status < 300 and complete_body(call, result.body):
                work = partial(self._put_now, call, key, generations, result.body, ttl)
                pending = after_answer(call, self.store, work)
                if pending is not None:
                    await pending
            return result
        return result.pipe(lambda chunks: self._store_when_complete(call, key, generations, ttl, chunks))

    async def _bypass(self, call: Call, next: Handler) -> Result:
        call.response_headers[STATUS_HEADER] = "BYPASS"
        self.stats.bypasses += 1
        return await next(call)

    def _hit(self, call: Call, stored: dict[str, Any]) -> Result:
        usage = hit_usage(stored.get("usage"))
        self.stats.hits += 1
        self.stats.tokens_saved += usage["saved_total_tokens"]
        call.response_headers[STATUS_HEADER] = "HIT"
        call.scratch["cache.hit"] = True
        call.scratch["cache.saved_usage"] = usage
        body = {**stored, "usage": usage}
        if call.endpoint == "chat":
            # A fresh id and time: clients that deduplicate responses by id must not see two answers as one.
            body["id"] = f"chatcmpl-{call.request_id}"
            body["created"] = int(time.time())
        if call.stream:
            return Stream.from_chunks(replay_chunks(body, self.config.stream_chunk_chars))
        return Response(body)

    async def _put(
        self, call: Call, key: str, generations: Generations, body: dict[str, Any], ttl: float
    ) -> None:
        pending = self._put_now(call, key, generations, body, ttl)
        if pending is not None:
            await pending

    def _put_now(
        self, call: Call, key: str, generations: Generations, body: dict[str, Any], ttl: float
    ) -> Awaitable[None] | None:
        """Store ``body`` under ``key``: None when done (deferred with the request's other after-answer
        writes, or too large to keep), else the write to await."""
        raw = encode_entry(call, body, generations.tokens)
        if len(raw) > self.config.max_entry_bytes:
            self.stats.too_large += 1
            return None
        if defer(call, Write([key], value=raw, ttl=ttl), self.store):
            self.stats.stores += 1  # sent with the request's other after-answer writes
            return None
        return self._set(key, raw, ttl)

    async def _set(self, key: str, raw: bytes, ttl: float) -> None:
        try:
            await self.store.set(key, raw, ttl)
        except StoreUnavailable:
            # The answer is already here; failing the request because it could not be cached helps nobody.
            return
        self.stats.stores += 1

    async def _store_when_complete(
        self,
        call: Call,
        key: str,
        generations: Generations,
        ttl: float,
        chunks: AsyncIterator[dict[str, Any]],
    ) -> AsyncIterator[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async for chunk in chunks:
            seen.append(chunk)
            yield chunk
        # Reached only when the upstream finished: an error or a client disconnect leaves by exception.
        body = assemble(seen)
        if body is not None:
            await self._put(call, key, generations, body, ttl)


def cache_endpoint(gateway: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """`GET /admin/cache`: this replica's counters (hits, misses, bypasses, stores, tokens saved)."""

    async def cache_stats() -> dict[str, Any]:
        stage = next((s for s in gateway.stages if isinstance(s, CacheStage)), None)
        if stage is None:
            return {"enabled": False, "backend": gateway.store.backend, "stats": CacheStats().snapshot()}
        return {"enabled": True, "backend": stage.store.backend, "stats": stage.stats.snapshot()}

    return cache_stats
