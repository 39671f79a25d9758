"""Rate limiting: requests and tokens per minute, and concurrent requests, per key and per model.

**Algorithm: GCRA** (the generic cell rate algorithm, `gateway.stores.ops.GCRA`). Each limit keeps one number,
the theoretical arrival time, and is checked and updated in one atomic step (one Lua script for every limit
of a request in Redis, so N replicas together admit the configured limit). Why GCRA: a fixed window admits
twice the limit across a window edge and resets every client at the same instant; a sliding log stores every
request (O(limit) memory per key). GCRA stores O(1) per limit, has no window edges, and yields `retry-after`
directly. A limit of L per minute lets an idle client send L at once (the "10 per minute" users expect), then
refills one unit every 60/L seconds: the long-run rate is exactly L per minute, with no reset instant.

**Limits.** `auth.keys[].rpm | tpm | max_concurrent` for one key over all its models (or
`features.rate_limit.default` for keys that set none), and `features.rate_limit.models.<alias>` for one model:
per key (each key gets its own allowance on that model) or, with `shared: true`, one allowance for every key
together (a provider's quota). A team made through the admin API may set `rpm`/`tpm`: one allowance shared
by every key of the team. A request must fit every limit that applies; when one refuses, none is charged.

**Tokens.** Charged up front from an estimate (`gateway.token_estimate`: about four characters per token, plus
`max_tokens`/`max_completion_tokens` or `default_max_tokens`, times `n`), then reconciled with the real usage
when the answer is complete (the difference is charged or refunded). A failed call refunds its completion
part; a cache hit reports zero tokens, so it refunds the whole estimate and only counts as a request.

**Headers.** Every response of a limited request carries OpenAI's
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the tightest limit of each kind; a 429 adds
`retry-after` (seconds) and `retry-after-ms`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
from pydantic import BaseModel, ConfigDict, Field

from gateway.admission import FULL, Claim, answered, ran
from gateway.errors import GatewayError
from gateway.ids import IdSource
from gateway.pipeline import Call, Handler, KeyIdentity, Response, Result
from gateway.stores.after_writes import after_answer, defer, flush, flush_after_answer, open_writes
from gateway.stores.base import Step, Store, StoreUnavailable, Write, store_key
from gateway.stores.ops import RL_ADMISSION, RL_FINISH, RL_STATUS
from gateway.token_estimate import estimate_prompt_tokens, estimate_text_tokens

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

MINUTE_US = 60_000_000
Kind = Literal["requests", "tokens"]
CLAIM = "rl.claim"
PLAN = "rl.plan"
# Bound of the stage's memo of buckets per (key, model): cleared when full.
_KNOWN_MAX = 4096


class Limits(BaseModel):
    """Requests per minute, tokens per minute and concurrent requests; None means unlimited."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)


class ModelLimits(Limits):
    """Limits on one model alias: per key by default, or one allowance for every key with `shared: true`."""

    shared: bool = False


class RateLimitConfig(BaseModel):
    """`features.rate_limit`: defaults for keys without limits, per-model limits, the token estimate."""

    model_config = ConfigDict(extra="forbid")

    default: Limits = Field(default_factory=Limits)
    models: dict[str, ModelLimits] = Field(default_factory=dict)
    default_max_tokens: int = Field(
        default=256, ge=0, description="completion tokens assumed when a request sets no max_tokens"
    )
    lease_seconds: float = Field(
        default=600, gt=0, description="a concurrency slot of a replica that died is freed after this long"
    )


@dataclass(frozen=True)
class Bucket:
    """One limit a request is checked against."""

    key: str
    kind: Kind
    limit: int
    scope: str  # for messages: "this key", "model 'x' for this key", "model 'x'"


class _Shape:
    """What a miss's ``RL_ADMISSION`` step on a set of limits holds besides the request's own numbers: its
    keys, and its arguments with the token estimate and the lease id left to fill in. Kept with the limits
    (per key and model): building the argument list limit by limit was most of the step's cost."""

    __slots__ = ("args", "held", "keys", "lease", "requests", "token_buckets", "tokens")

    def __init__(
        self, buckets: Sequence[Bucket], concurrency: Sequence[tuple[str, int, str]], lease_us: int
    ) -> None:
        self.keys = (*(b.key for b in buckets), *(key for key, _, _ in concurrency))
        # What a request admitted as a miss gives back after its answer: its slots, its token estimate.
        self.held = [key for key, _, _ in concurrency]
        self.token_buckets = [b for b in buckets if b.kind == "tokens"]
        args = [len(buckets), len(concurrency)]
        self.tokens: list[int] = []  # where each tokens limit's cost goes
        self.requests: list[int] = []  # where each requests limit's cost (1) goes
        for bucket in buckets:
            (self.requests if bucket.kind == "requests" else self.tokens).append(len(args) + 2)
            args += [MINUTE_US, bucket.limit, 1 if bucket.kind == "requests" else 0]
        self.lease = len(args) + 1
        args += [lease_us, 0, *(limit for _, limit, _ in concurrency)]
        self.args = args

    def step(self, estimate: int, lease: int, again: bool) -> Step:
        """The step charging ``estimate`` tokens and one request (none ``again``), holding ``lease``."""
        args = self.args.copy()
        for at in self.tokens:
            args[at] = estimate
        if again:  # a second admission does not count the request again
            for at in self.requests:
                args[at] = 0
        args[self.lease] = lease
        return Step(RL_ADMISSION, self.keys, args)


@dataclass(slots=True)
class _Plan:
    """What the stage keeps of a request's admission for after it (on ``call.scratch``): the limits, and
    once the step was built (never for an in-process cache hit) the token estimate and the lease id."""

    buckets: list[Bucket]
    concurrency: list[tuple[str, int, str]]
    shape: _Shape
    completion: int = 0
    estimate: int = 0
    lease: int = 0
    estimated: bool = False


class LimitShares(Protocol):
    """Multi-region partitioned limits (gateway/features/rebalance.py): a limit's share in this region."""

    def limit(self, key: str, limit: int, cost: int) -> int:
        """The share of bucket `key` (configured `limit`) this region enforces; counts `cost` as demand."""

    def empty(self, scope: str) -> GatewayError:
        """The refusal when this region's share of a limit on `scope` is zero."""

    async def start(self) -> None:
        """Read the current shares and keep them current in the background."""


def format_duration(us: int) -> str:
    """OpenAI's reset format: `120ms`, `6s`, `1.5s`, `1m0s`."""
    if us < 1_000_000:
        # Integer ceiling (no float division, no max() call): every answer's reset headers come here.
        return f"{-(-us // 1000) if us > 0 else 0}ms"
    seconds = us / 1_000_000
    if seconds < 60:
        return f"{round(seconds, 2):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 2):g}s"


def estimate_tokens(call: Call, default_max_tokens: int) -> tuple[int, int]:
    """(prompt, completion) token estimates for `call`, cheap and before any upstream call."""
    return _estimate(call.endpoint, call.body, default_max_tokens)


def _estimate(endpoint: str, body: dict[str, Any], default_max_tokens: int) -> tuple[int, int]:
    if endpoint == "embeddings":
        raw = body.get("input")
        items = raw if isinstance(raw, list) else [raw]
        # Strings are estimated; token arrays (ints, or lists of ints) are counted exactly.
        return sum(
            estimate_text_tokens(i) if isinstance(i, str) else len(i) if isinstance(i, list) else 1
            for i in items
        ), 0
    messages = body.get("messages")
    prompt = estimate_prompt_tokens(
        [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    )
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    completion = limit if isinstance(limit, int) and limit > 0 else default_max_tokens
    n = body.get("n")
    return prompt, completion * (n if isinstance(n, int) and n > 0 else 1)


def _store_unavailable() -> GatewayError:
    return GatewayError(
        503, "Rate limiting is unavailable: the shared state store cannot be reached.",
        "service_unavailable", "state_store_unavailable",
    )  # fmt: skip


def _add(
    buckets: list[Bucket],
    concurrency: list[tuple[str, int, str]],
    limits: Limits,
    owner: str,
    model: str,
    scope: str,
) -> None:
    """Append the buckets and concurrency limit of `limits` held by `owner` on `model` ("*": all)."""
    if limits.rpm:
        buckets.append(
            Bucket(store_key("rl", owner, model, "req", together=True), "requests", limits.rpm, scope)
        )
    if limits.tpm:
        buckets.append(
            Bucket(store_key("rl", owner, model, "tok", together=True), "tokens", limits.tpm, scope)
        )
    if limits.max_concurrent:
        concurrency.append(
            (store_key("rl", owner, model, "conc", together=True), limits.max_concurrent, scope)
        )


class _Owner:
    """Who holds a set of limits on every model together (a key or a team), and its buckets."""

    def __init__(self, scope: str, name: str, owner: str, limits: Limits, label: str) -> None:
        self.scope = scope
        self.name = name
        self.buckets: list[Bucket] = []
        self.concurrency: list[tuple[str, int, str]] = []
        _add(self.buckets, self.concurrency, limits, owner, "*", label)

    def row(self, kind: str, limit: int, remaining: int, reset_ms: int | None) -> dict[str, Any]:
        """One limit's status, as :meth:`RateLimitStage.status` reports it."""
        return {
            "scope": self.scope,
            "name": self.name,
            "kind": kind,
            "limit": limit,
            "used": limit - remaining,
            "remaining": remaining,
            "reset_ms": reset_ms,
        }


class RateLimitStage:
    """The rate-limit pipeline stage (right after auth); see the module docstring."""

    def __init__(
        self,
        config: RateLimitConfig,
        key_limits: dict[str, Limits],
        store: Store,
        shares: LimitShares | None = None,
    ) -> None:
        """`key_limits` maps key ids (`KeyIdentity.key_id`) to their own limits (from `auth.keys`); with
        `shares` (`state.partitioned_features`) each limit is this region's share of it."""
        self.config = config
        self.key_limits = key_limits
        self.store = store
        self.shares = shares
        # Lease ids only need to be unique among a limit's holders, not secret: a counter behind a random
        # per-process prefix, not a kernel random read (a system call) per request.
        self.ids = IdSource()
        self.lease_us = int(config.lease_seconds * 1_000_000)
        self._known: dict[tuple[Any, ...], tuple[list[Bucket], list[tuple[str, int, str]], Step, _Shape]] = {}

    async def start(self) -> None:
        """Read the partitioned limits' shares before the first request (a no-op otherwise)."""
        if self.shares is not None:
            await self.shares.start()

    def _buckets(self, call: Call) -> tuple[list[Bucket], list[tuple[str, int, str]]]:
        """The GCRA buckets and the concurrency limits (key, limit, scope) that apply to `call` (shared:
        callers do not change them)."""
        buckets, concurrency, _, _ = self._limits(call)
        return buckets, concurrency

    def _limits(self, call: Call) -> tuple[list[Bucket], list[tuple[str, int, str]], Step, _Shape]:
        """`_buckets`, a cache hit's step on those buckets (one request, no tokens; steps are immutable, so
        one serves every request) and the shape of a miss's step (see `_Shape`)."""
        key = call.key
        # Everything the answer depends on besides this stage's own config: the key's id (its config-file
        # limits), the limits a key or team made through the admin API carries, and the model. Building
        # the buckets (store key strings, one object per limit) was about 3 % of a request's CPU.
        which = (key.key_id, key.rpm, key.tpm, key.team, key.team_rpm, key.team_tpm, call.model)
        known = self._known.get(which)
        if known is None:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()  # bounded: keys come and go through the admin API
            buckets, concurrency = self._build_buckets(call)
            shape = _Shape(buckets, concurrency, self.lease_us)
            known = self._known[which] = (buckets, concurrency, self._hit_step(buckets), shape)
        return known

    def _hit_step(self, buckets: list[Bucket]) -> Step:
        # The lease id is not looked at without a slot: 0.
        args = [len(buckets), 0]
        for bucket in buckets:
            args += [MINUTE_US, bucket.limit, 1 if bucket.kind == "requests" else 0]
        return Step(RL_ADMISSION, [b.key for b in buckets], [*args, self.lease_us, 0])

    def _build_buckets(self, call: Call) -> tuple[list[Bucket], list[tuple[str, int, str]]]:
        buckets, concurrency = self._owner_limits(call.key)
        model = self.config.models.get(call.model)
        if model is not None:
            kid = call.key.key_id
            if model.shared:
                _add(buckets, concurrency, model, "*", call.model, f"model '{call.model}'")
            else:
                _add(buckets, concurrency, model, kid, call.model, f"model '{call.model}' for this key")
        return buckets, concurrency

    def _own_limits(self, key: KeyIdentity) -> Limits:
        own = self.key_limits.get(key.key_id)
        if own is None and (key.rpm or key.tpm):
            own = Limits(rpm=key.rpm, tpm=key.tpm)  # a key made through the admin API
        return own if own is not None else self.config.default

    def _owner_limits(self, key: KeyIdentity) -> tuple[list[Bucket], list[tuple[str, int, str]]]:
        """The limits of `key` on every model together: its own, then its team's allowance."""
        buckets: list[Bucket] = []
        concurrency: list[tuple[str, int, str]] = []
        for owner in self._owners(key):
            buckets += owner.buckets
            concurrency += owner.concurrency
        return buckets, concurrency

    def _owners(self, key: KeyIdentity) -> list[_Owner]:
        owners = [_Owner("key", key.name, key.key_id, self._own_limits(key), "this key")]
        if key.team is not None and (key.team_rpm or key.team_tpm):
            # A team made through the admin API: one allowance every key of the team draws from.
            team = Limits(rpm=key.team_rpm, tpm=key.team_tpm)
            owners.append(_Owner("team", key.team, f"team:{key.team}", team, f"team '{key.team}'"))
        return owners

    async def status(self, keys: list[KeyIdentity]) -> list[list[dict[str, Any]]]:
        """The state of each key's own and team limits (on every model together), without spending any.

        For each of `keys`, one entry per limit: ``scope`` (``key`` or ``team``) and ``name``, ``kind``
        (``requests``, ``tokens`` or ``concurrent``), ``limit``, ``used`` and ``remaining`` now, and
        ``reset_ms``: how long until the allowance is whole again (GCRA refills continuously, so there is
        no window edge; this is what ``x-ratelimit-reset-*`` says), null for concurrency. One store read
        for every key (the admin API asks for one key, the GraphQL DataLoader for a page of them). Per-model
        limits (``features.rate_limit.models``) are not included: they depend on the model called.
        """
        owners = [self._owners(key) for key in keys]
        flat = [owner for of_key in owners for owner in of_key]
        gcra_keys = [b.key for owner in flat for b in owner.buckets]
        lease_keys = [k for owner in flat for k, _, _ in owner.concurrency]
        if not gcra_keys and not lease_keys:
            return [[] for _ in keys]
        args = [len(gcra_keys), len(lease_keys)]
        for owner in flat:
            for bucket in owner.buckets:
                args += [MINUTE_US, bucket.limit]
        try:
            result = await self.store.run(RL_STATUS, [*gcra_keys, *lease_keys], args)
        except StoreUnavailable:
            raise _store_unavailable() from None
        gcra = iter(zip(result[0 : 2 * len(gcra_keys) : 2], result[1 : 2 * len(gcra_keys) : 2], strict=True))
        held = iter(result[2 * len(gcra_keys) :])
        report: list[list[dict[str, Any]]] = []
        for of_key in owners:
            rows: list[dict[str, Any]] = []
            for owner in of_key:
                for bucket in owner.buckets:
                    remaining, busy_us = next(gcra)
                    rows.append(owner.row(bucket.kind, bucket.limit, remaining, math.ceil(busy_us / 1000)))
                for _, limit, _ in owner.concurrency:
                    rows.append(owner.row("concurrent", limit, limit - min(next(held), limit), None))
            report.append(rows)
        return report

    def admission(self, call: Call) -> Claim | None:
        """Every GCRA limit and concurrency slot of ``call`` as one step of its admission (``RL_ADMISSION``),
        or None when no limit applies. Each limit's value is an argument of the step, read per request.

        The step itself (its token estimate and lease id) is left to the claim's ``build``: a cache hit in
        process only runs the hit's step (one request counted) and never needs it."""
        buckets, concurrency, hit_step, shape = self._limits(call)
        claim = None
        if buckets or concurrency:
            plan = _Plan(buckets, concurrency, shape)
            # A second admission (a "hit" that was not one) does not count the request again.
            again = bool(call.scratch.get(FULL))
            if self.shares is not None:
                # Partitioned: this region's share of each limit, counting the request's demand now.
                self._estimate_into(plan, call.endpoint, call.body)
                plan.buckets = self._shared(buckets, plan.estimate)
                plan.shape = _Shape(plan.buckets, concurrency, self.lease_us)
                hit_step = self._hit_step(plan.buckets)
            # The body as the client sent it: the budget stage, next, may add max_tokens to call.body. On a
            # cache hit: one request counted, no tokens, no slot (the answer is immediate).
            claim = Claim(
                self.store,
                build=partial(self._full_step, plan, again, call.endpoint, call.body),
                hit_step=None if again else hit_step,
            )
            call.scratch[PLAN] = plan
        call.scratch[CLAIM] = claim
        return claim

    def _full_step(self, plan: _Plan, again: bool, endpoint: str, body: dict[str, Any]) -> Step:
        """The admission's step for a request that is not a cache hit: its token estimate, a lease id."""
        if not plan.estimated:
            self._estimate_into(plan, endpoint, body)
        plan.lease = self.ids.int52()
        return plan.shape.step(plan.estimate, plan.lease, again)

    def _estimate_into(self, plan: _Plan, endpoint: str, body: dict[str, Any]) -> None:
        prompt, plan.completion = _estimate(endpoint, body, self.config.default_max_tokens)
        plan.estimate, plan.estimated = prompt + plan.completion, True

    async def handle(self, call: Call, next: Handler) -> Result:
        """Admit the request if every limit allows it (429 otherwise), then reconcile tokens and release.

        One store round trip before the request, shared with the other stages' admission (``admission``:
        every GCRA limit and concurrency slot, in the same script as the budget's reservation, see
        ``gateway.admission``), and one after it: ``RL_FINISH`` (token reconciliation and the slots' release)
        sent together with the inner stages' writes (budget settlement, the cache's entry; see
        ``gateway.stores.after_writes``).
        """
        open_writes(call, self.store)
        queued = False
        try:
            result = await self._limited(call, next)
            # A complete answer's writes may wait until it is out, after the inner stages' work adding to it.
            queued = isinstance(result, Response) and flush_after_answer(call, self.store)
            return result
        finally:
            if not queued:
                # In process the writes are applied without awaiting: no cancel scope to pay for (2-4 % of a
                # request's CPU in the profile); a round trip is shielded (it gives back slots).
                pending = flush(call, self.store)
                if pending is not None:
                    await pending

    async def _limited(self, call: Call, next: Handler) -> Result:
        claim = ran(call, CLAIM)
        if claim is False:  # not run by the admission stage (this stage used alone)
            claim = await answered(self, call, CLAIM)
        if claim is None:
            return await next(call)
        plan: _Plan = call.scratch[PLAN]
        buckets, concurrency, completion, estimate, lease = (
            plan.buckets,
            plan.concurrency,
            plan.completion,
            plan.estimate,
            plan.lease,
        )
        if claim.unavailable:
            raise _store_unavailable()
        self._verdict(call, claim, buckets, concurrency, estimate)
        held: list[str] = []
        token_buckets: list[Bucket] = []
        if not claim.hit:  # a cache hit charged no tokens and took no slot: nothing to give back
            held, token_buckets = plan.shape.held, plan.shape.token_buckets
        try:
            result = await next(call)
        except BaseException as exc:
            if isinstance(exc, GatewayError):
                # An upstream failure is a response too: it still tells the client its headroom.
                for name, value in _ratelimit_headers(call).items():
                    exc.headers.setdefault(name, value)
            if claim.charged:
                # Shielded: after a cancellation (the client went away) every await would be cancelled
                # again, and a slot left held would block the key until its lease expires.
                with anyio.CancelScope(shield=True):
                    # The prompt reached (or may have reached) the upstream; the completion did not happen.
                    await self._finish(call, token_buckets, -completion, held, lease)
            raise
        if not claim.charged:
            # Another step of the admission refused (the budget's, which answers the request): nothing was
            # taken here, so nothing is given back.
            return result
        if isinstance(result, Response):
            cost = _difference(estimate, result.usage)
            work = partial(self._finish_now, call, token_buckets, cost, held, lease)
            pending = after_answer(call, self.store, work)
            if pending is not None:
                await pending
            return result
        stream = result

        async def settle(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                with anyio.CancelScope(shield=True):
                    # A stream the client abandoned keeps its estimate: the real usage is unknown.
                    cost = _difference(estimate, stream.usage) if stream.completed else 0
                    await self._finish(call, token_buckets, cost, held, lease)

        return stream.pipe(settle)

    def _shared(self, buckets: list[Bucket], estimate: int) -> list[Bucket]:
        """Each limit as this region's share of it (partitioned across regions), demand counted."""
        assert self.shares is not None
        out = []
        for bucket in buckets:
            share = self.shares.limit(bucket.key, bucket.limit, 1 if bucket.kind == "requests" else estimate)
            if share <= 0:
                raise self.shares.empty(bucket.scope)
            out.append(replace(bucket, limit=share))
        return out

    def _verdict(
        self,
        call: Call,
        claim: Claim,
        buckets: list[Bucket],
        concurrency: list[tuple[str, int, str]],
        estimate: int,
    ) -> None:
        """Headers from the admission's answer, and the 429 when a limit of this stage refused. When another
        step of the admission refused instead (the budget), nothing was charged and that stage answers."""
        result = claim.result
        allowed, full = result[0] == 1, result[1]
        headers = _limit_headers(buckets, result)
        call.response_headers.update(headers)
        if allowed and not full:
            return
        states = [(result[2 + 3 * i], result[3 + 3 * i], result[4 + 3 * i]) for i in range(len(buckets))]
        if allowed:
            _, limit, scope = concurrency[full - 1]
            raise GatewayError(
                429,
                f"Too many concurrent requests on {scope}: limit {limit}. Retry when one has finished.",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
                headers={**headers, **_retry_headers(1_000_000)},
            )
        # Every refusing limit has a positive retry time (or -1: never); fall back to all if none says so.
        refused = [(b, s) for b, s in zip(buckets, states, strict=True) if s[2] != 0] or list(
            zip(buckets, states, strict=True)
        )
        never = [b for b, s in refused if s[2] < 0]
        if never:
            bucket = never[0]
            raise GatewayError(
                429,
                f"Request too large for the tokens-per-minute limit of {bucket.scope}: it needs about "
                f"{estimate} tokens and the limit is {bucket.limit}. Lower max_tokens or shorten the prompt.",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
                headers=headers,
            )
        bucket, (_, _, retry_us) = max(refused, key=lambda item: item[1][2])
        per = "requests" if bucket.kind == "requests" else "tokens"
        raise GatewayError(
            429,
            f"Rate limit reached for {per} per minute on {bucket.scope}: limit {bucket.limit}. "
            f"Please try again in {format_duration(retry_us)}.",
            "rate_limit_exceeded",
            "rate_limit_exceeded",
            headers={**headers, **_retry_headers(retry_us)},
        )

    async def _finish(
        self, call: Call, buckets: list[Bucket], cost: int, held: list[str], lease: int
    ) -> None:
        pending = self._finish_now(call, buckets, cost, held, lease)
        if pending is not None:
            await pending

    def _finish_now(
        self, call: Call, buckets: list[Bucket], cost: int, held: list[str], lease: int
    ) -> Awaitable[None] | None:
        """Charge `cost` more tokens (or refund) and release the slots, in one store operation: None when
        done (deferred to the call's after-answer writes while they are open), else the operation to await."""
        if not cost:
            buckets = []
        if not buckets and not held:
            return None
        args = [len(buckets), len(held)]
        for bucket in buckets:
            args += [MINUTE_US, bucket.limit, cost]
        args.append(lease)
        keys = [*(b.key for b in buckets), *held]
        if defer(call, Write(keys, RL_FINISH, args), self.store):
            return None
        return self._finish_on_store(keys, args)

    async def _finish_on_store(self, keys: list[str], args: list[int]) -> None:
        # Best effort: the request itself was already admitted, and if the store is down the slots expire on
        # their own after lease_seconds.
        with contextlib.suppress(StoreUnavailable):
            await self.store.run(RL_FINISH, keys, args)


def _difference(estimate: int, usage: dict[str, Any] | None) -> int:
    """Tokens to charge (or refund, negative) once the real `usage` is known; 0 when it is not."""
    if not usage:
        return 0
    actual = usage.get("total_tokens")
    if not isinstance(actual, int):
        actual = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    return actual - estimate


def _ratelimit_headers(call: Call) -> dict[str, str]:
    return {k: v for k, v in call.response_headers.items() if k.startswith("x-ratelimit-")}


def _retry_headers(retry_us: int) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(retry_us / 1_000_000))),
        "retry-after-ms": str(math.ceil(retry_us / 1000)),
    }


def _limit_headers(buckets: list[Bucket], result: Sequence[int]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest bucket of each kind (fewest units remaining), from
    ``RL_ADMISSION``'s answer (allowed, full, then remaining, reset_us, retry_us per bucket). Read straight
    from the answer by index: every admitted request and cache hit sets these headers."""
    tightest = [-1, -1]  # the index of the requests bucket, of the tokens bucket, with the fewest remaining
    for i, bucket in enumerate(buckets):
        kind = 0 if bucket.kind == "requests" else 1
        known = tightest[kind]
        if known < 0 or result[2 + 3 * i] < result[2 + 3 * known]:  # the first of equals, as min() would
            tightest[kind] = i
    headers: dict[str, str] = {}
    requests, tokens = tightest
    if requests >= 0:
        headers["x-ratelimit-limit-requests"] = str(buckets[requests].limit)
        headers["x-ratelimit-remaining-requests"] = str(result[2 + 3 * requests])
        headers["x-ratelimit-reset-requests"] = format_duration(result[3 + 3 * requests])
    if tokens >= 0:
        headers["x-ratelimit-limit-tokens"] = str(buckets[tokens].limit)
        headers["x-ratelimit-remaining-tokens"] = str(result[2 + 3 * tokens])
        headers["x-ratelimit-reset-tokens"] = format_duration(result[3 + 3 * tokens])
    return headers


def rate_limit_stage(
    config: GatewayConfig, store: Store, shares: LimitShares | None = None
) -> RateLimitStage:
    """The stage for `config`; with no limit anywhere it lets every request through at the cost of one
    lookup (built anyway: a key made through the admin API may bring its own limits at any time).

    Limits set on a key apply even without a `features.rate_limit` section: a set limit is never ignored.
    """
    from gateway.auth import key_id  # here: gateway.auth imports gateway.config, which imports this module

    feature = config.features.rate_limit or RateLimitConfig()
    key_limits = {
        key_id(k.key): Limits(rpm=k.rpm, tpm=k.tpm, max_concurrent=k.max_concurrent)
        for k in config.auth.keys
        if k.rpm or k.tpm or k.max_concurrent
    }
    return RateLimitStage(feature, key_limits, store, shares)
