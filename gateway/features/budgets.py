"""Budgets: a limit in USD per key and per team over a period, that concurrent requests cannot overspend.

Before forwarding, :class:`BudgetStage` reserves the request's maximum possible cost (the prompt's token upper
bound plus ``max_tokens``, at the dearest of the model's routes) against every budget that applies: the key's
and its team's, atomically and all or nothing (:mod:`gateway.budget_book`). A reservation that does not fit
is refused with 429 ``budget_exceeded``. After the answer (or the error, or the client leaving) it settles to
the real cost, the same number the usage ledger records, and releases the rest.

When the client sends no ``max_tokens`` the stage reserves ``default_max_tokens`` and, with
``enforce_max_tokens`` (the default), also sends that cap upstream, so the reservation really is a maximum.

Counters live in the shared store, so replicas sharing Redis enforce one budget. With the memory store the
counters start empty, so on start the stage restores each budget's current window from the usage ledger:
spend survives a restart either way.

Config::

    auth:
      keys:
        - {name: alice, key: ..., team: research, budget: {limit_usd: 10, period: daily, soft_limit: 0.8}}
    teams:
      - {name: research, budget: {limit_usd: 100, period: monthly}}
    features:
      budgets: {timezone: Europe/Berlin, default_max_tokens: 4096}
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.admission import Claim, answered, ran
from gateway.budget_book import BudgetBook, BudgetSlot, Reservation
from gateway.errors import GatewayError
from gateway.features.usage import (
    BUDGET_WARNING_HEADER,
    RESERVATION_SCRATCH,
    Clock,
    FinalizingIterator,
    Pricing,
    UsageStage,
    account,
    ending_status,
    max_cost,
    requested_max_tokens,
    stream_meter,
    utc_now,
)
from gateway.ledger import Ledger, LedgerNotQueryable, LedgerUnavailable
from gateway.periods import Period, window_for
from gateway.pipeline import Call, Handler, Response, Result
from gateway.pricing import format_usd, usd_to_nanos
from gateway.stores import Store, StoreUnavailable
from gateway.stores.after_writes import after_answer, defer
from gateway.stores.base import Step

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

logger = logging.getLogger("gateway.budgets")

WARNING_HEADER = BUDGET_WARNING_HEADER
REMAINING_HEADER = "x-gateway-budget-remaining-usd"

Fraction = Annotated[float, Field(gt=0, le=1)]
CLAIM = "budgets.claim"
PLAN = "budgets.plan"
_REMAINS_MAX = 1024  # bound of the stage's memo of hit steps (see `BudgetStage._remains_step`)


def known_zone(name: str) -> str:
    """``name`` if it is an IANA time zone this system knows, else a ValueError naming it."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}' (use an IANA name such as 'Europe/Berlin')") from None
    return name


class BudgetConfig(BaseModel):
    """A budget: ``limit_usd`` per ``period``; ``soft_limit`` is the share of it that triggers a warning."""

    model_config = ConfigDict(extra="forbid")

    limit_usd: Decimal = Field(gt=0, allow_inf_nan=False, description="USD per period")
    period: Period = Field(default=Period.MONTHLY, description="daily, weekly, monthly or total")
    soft_limit: Fraction | None = Field(
        default=None, description="warn at this share of the limit (default: features.budgets.soft_limit)"
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone of this budget's periods (default: features.budgets.timezone)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else known_zone(value)


class TeamConfig(BaseModel):
    """One team under ``teams:``; keys join it with ``team: <name>``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    budget: BudgetConfig | None = None


def team_problems(teams: Sequence[TeamConfig]) -> list[tuple[tuple[str | int, ...], str]]:
    """Config problems in ``teams:`` (key path, message): a team name used twice."""
    seen: set[str] = set()
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, team in enumerate(teams):
        if team.name in seen:
            problems.append((("teams", i, "name"), f"duplicate team name '{team.name}'"))
        seen.add(team.name)
    return problems


class BudgetsConfig(BaseModel):
    """``features.budgets``: how budgets are enforced (the budgets themselves sit on keys and teams)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(default="UTC", description="IANA time zone where days, weeks and months start")
    default_max_tokens: int = Field(
        default=4096, gt=0, description="output tokens reserved when a request sets no max_tokens"
    )
    enforce_max_tokens: bool = Field(
        default=True, description="send default_max_tokens upstream when a request sets no max_tokens"
    )
    soft_limit: Fraction = Field(default=0.8, description="default share of a budget that triggers a warning")
    reservation_ttl_seconds: float = Field(
        default=900, gt=0, description="a reservation not settled by then (its replica died) is given back"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @property
    def zone(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)


class BudgetRule:
    """One configured budget: whose (``scope`` ``key`` or ``team``, ``name``), how much, how often."""

    def __init__(self, scope: str, name: str, config: BudgetConfig, settings: BudgetsConfig) -> None:
        self.scope = scope
        self.name = name
        self.limit_nanos = usd_to_nanos(config.limit_usd)
        self.period = config.period
        self.soft_limit = config.soft_limit if config.soft_limit is not None else settings.soft_limit
        self.zone = ZoneInfo(config.timezone or settings.timezone)
        # The last window handed out: reused while ``now`` stays inside it (the time-zone arithmetic of
        # `window_for` only gives another answer once the window ends).
        self._last: BudgetSlot | None = None

    def slot(self, now: datetime) -> BudgetSlot:
        """This budget's window containing ``now``."""
        last = self._last
        if last is not None and now.tzinfo is not None:
            start, end = last.window.start, last.window.end
            if (start is None or start <= now) and (end is None or now < end):
                return last
        last = BudgetSlot(self.scope, self.name, self.limit_nanos, window_for(self.period, now, self.zone))
        self._last = last
        return last


def budget_exceeded(slot: BudgetSlot, spent: int, reserved: int, amount: int, now: datetime) -> GatewayError:
    """429 ``budget_exceeded``, naming the budget, what remains of it and when it resets."""
    remaining = max(0, slot.limit_nanos - spent - reserved)
    what = f"{slot.scope} '{slot.name}'"
    period = slot.window.period.value
    resets = f", resets at {slot.window.end.isoformat()}" if slot.window.end is not None else ""
    in_flight = f" ({format_usd(reserved)} USD reserved by requests in flight)" if reserved else ""
    message = (
        f"Budget exceeded for {what}: {format_usd(remaining)} USD of its {period} budget of "
        f"{format_usd(slot.limit_nanos)} USD remains{in_flight}, and this request may cost up to "
        f"{format_usd(amount)} USD{resets}."
    )
    headers = {REMAINING_HEADER: format_usd(remaining)}
    seconds = slot.window.seconds_left(now)
    if seconds is not None:
        headers["retry-after"] = str(max(1, seconds))
    return GatewayError(429, message, "budget_exceeded", "budget_exceeded", headers=headers)


def store_unavailable() -> GatewayError:
    """503: the store holding the budgets cannot be reached and ``state.on_error`` is ``fail_closed``."""
    return GatewayError(
        503, "Budgets are unavailable: the shared state store cannot be reached.",
        "service_unavailable", "state_store_unavailable",
    )  # fmt: skip


def budget_rules(config: GatewayConfig) -> list[BudgetRule]:
    """Every budget in ``config``: keys' then teams'."""
    settings = config.features.budgets
    rules = [
        BudgetRule("key", key.name, key.budget, settings)
        for key in config.auth.keys
        if key.budget is not None
    ]
    rules += [
        BudgetRule("team", team.name, team.budget, settings)
        for team in config.teams
        if team.budget is not None
    ]
    return rules


class BudgetStage:
    """Pipeline stage: reserve before forwarding, settle after; see the module docstring."""

    def __init__(
        self,
        rules: Sequence[BudgetRule],
        settings: BudgetsConfig,
        book: BudgetBook,
        ledger: Ledger,
        pricing: Pricing,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.keys = {rule.name: rule for rule in rules if rule.scope == "key"}
        self.teams = {rule.name: rule for rule in rules if rule.scope == "team"}
        self.settings = settings
        self.zone = settings.zone
        self.book = book
        self.ledger = ledger
        self.pricing = pricing
        self.clock = clock
        # (scope, name, window) already warned about in the log, so a busy key logs once per window.
        self._warned: set[tuple[str, str, str]] = set()
        # Budgets of keys made through the admin API, by (key name, budget): built on first use (their
        # spend restored from the ledger then); a changed budget is another entry, used from the next request.
        self.runtime_keys: dict[tuple[str, str], BudgetRule] = {}
        # The same for teams made through the admin API (a config-file team of the same name wins).
        self.runtime_teams: dict[tuple[str, str], BudgetRule] = {}
        # The ledger cannot answer spend queries (usage.sink jsonl): logged once.
        self._said_not_queryable = False
        self._remains: dict[tuple[int, ...], tuple[list[BudgetSlot], Step]] = {}

    def rules_for(self, call: Call) -> list[BudgetRule]:
        """The budgets ``call`` spends from: its key's and its team's."""
        rules = []
        if (rule := self.keys.get(call.key.name)) is not None:
            rules.append(rule)
        elif call.key.budget is not None:
            rule = self.runtime_keys.get((call.key.name, call.key.budget.model_dump_json()))
            if rule is not None:
                rules.append(rule)
        if call.key.team is not None:
            if (rule := self.teams.get(call.key.team)) is not None:
                rules.append(rule)
            elif call.key.team_budget is not None:
                rule = self.runtime_teams.get((call.key.team, call.key.team_budget.model_dump_json()))
                if rule is not None:
                    rules.append(rule)
        return rules

    async def start(self) -> None:
        """Restore each budget's current window from the ledger unless the store already holds it."""
        await self.ledger.start()
        now = self.clock()
        for rule in [*self.keys.values(), *self.teams.values()]:
            if not await self._restore(rule, now):
                break

    async def key_rule(self, name: str, budget: BudgetConfig | None) -> BudgetRule | None:
        """The budget of key ``name``: its config-file one, else ``budget`` (a key made through the admin
        API carries it), built on first use with its spend this window restored from the ledger."""
        if (rule := self.keys.get(name)) is not None or budget is None:
            return rule
        return await self._runtime_rule(self.runtime_keys, "key", name, budget)

    async def team_rule(self, name: str, budget: BudgetConfig | None = None) -> BudgetRule | None:
        """The budget of team ``name``: its config-file one, else ``budget`` (a team made through the admin
        API), built on first use with the team's spend this window restored from the ledger."""
        if (rule := self.teams.get(name)) is not None or budget is None:
            return rule
        return await self._runtime_rule(self.runtime_teams, "team", name, budget)

    async def _runtime_rule(
        self, rules: dict[tuple[str, str], BudgetRule], scope: str, name: str, budget: BudgetConfig
    ) -> BudgetRule:
        cache_key = (name, budget.model_dump_json())
        if (rule := rules.get(cache_key)) is None:
            rule = BudgetRule(scope, name, budget, self.settings)
            await self._restore(rule, self.clock())
            rules[cache_key] = rule
        return rule

    async def reset(self, rule: BudgetRule) -> dict[str, Any]:
        """Zero the spend of ``rule``'s current window (reservations in flight stay); its status after."""
        now = self.clock()
        try:
            await self.book.reset(rule.slot(now), now)
        except StoreUnavailable:
            raise store_unavailable() from None
        logger.warning("budget %s '%s': spend of the current window reset", rule.scope, rule.name)
        return (await self.status([rule]))[0]

    async def _restore(self, rule: BudgetRule, now: datetime) -> bool:
        """Restore ``rule``'s spend this window from the ledger; False when the ledger cannot be queried at
        all (usage.sink jsonl), so the caller stops trying for every other budget."""
        slot = rule.slot(now)
        since = slot.window.start.timestamp() if slot.window.start is not None else 0.0
        column = {"key_name": rule.name} if rule.scope == "key" else {"team": rule.name}
        try:
            spent = await self.ledger.spend_nanos(since=since, **column)
        except LedgerNotQueryable as exc:
            # The same for every budget: said once (at start), not once per budget.
            if not self._said_not_queryable:
                logger.warning("budgets start from the state store alone: %s", exc)
                self._said_not_queryable = True
            return False
        except LedgerUnavailable as exc:
            logger.error("budget %s '%s': spend not restored, %s", rule.scope, rule.name, exc)
            return True
        try:
            restored = await self.book.restore(slot, spent, now)
        except StoreUnavailable:
            # Serve anyway: requests get 503 until the store is back (fail_closed).
            logger.error("budget %s '%s': state store unreachable, spend not restored", rule.scope, rule.name)
            return True
        if restored and spent:
            logger.info("budget %s '%s': restored %s USD spent this window", rule.scope, rule.name,
                        format_usd(spent))  # fmt: skip
        return True

    def admission(self, call: Call) -> Claim | Awaitable[Claim | None] | None:
        """The reservation of the most ``call`` can cost in every budget it spends from, as one step of its
        admission (in the rate limit's script), or None when no budget applies.

        The reservation (its maximum cost, through the prices and the prompt's bound) is left to the
        claim's ``build``: a cache hit in process only checks that something remains, and never needs it.
        Answered directly unless the key or its team was made through the admin API and brings a budget
        (built on first use, which may await the ledger): a config-file budget needs nothing awaited."""
        key = call.key
        if key.budget is not None or (key.team is not None and key.team_budget is not None):
            return self._runtime_admission(call)
        return self._admission(call)

    async def _runtime_admission(self, call: Call) -> Claim | None:
        """``admission`` once the budgets of the call's admin-API key and team are built."""
        if call.key.budget is not None:
            await self.key_rule(call.key.name, call.key.budget)
        if call.key.team is not None and call.key.team_budget is not None:
            await self.team_rule(call.key.team, call.key.team_budget)
        return self._admission(call)

    def _admission(self, call: Call) -> Claim | None:
        rules = self.rules_for(call)
        claim = None
        if rules:
            now = self.clock()
            if (
                call.endpoint == "chat"
                and requested_max_tokens(call.body) is None
                and self.settings.enforce_max_tokens
            ):
                call.body = {**call.body, "max_tokens": self.settings.default_max_tokens}
            slots = [rule.slot(now) for rule in rules]
            build = partial(self._reservation_step, call, rules, slots, now)
            claim = Claim(self.book.store, build=build, hit_step=self._remains_step(slots))
            call.scratch[PLAN] = (rules, slots, 0, now)  # the amount once built (a hit reserves nothing)
        call.scratch[CLAIM] = claim
        return claim

    def _reservation_step(
        self, call: Call, rules: list[BudgetRule], slots: list[BudgetSlot], now: datetime
    ) -> Step:
        """The admission's step for a request that is not a cache hit: its maximum cost, reserved."""
        amount = max_cost(call, self.pricing, self.settings.default_max_tokens)
        call.scratch[PLAN] = (rules, slots, amount, now)
        return self.book.reservation_step(slots, amount, now)

    def _remains_step(self, slots: list[BudgetSlot]) -> Step:
        """The hit's step on ``slots``, kept per list of slots: a rule hands out the same slot object all
        window long, so the step (immutable) serves every request until a window ends. Keyed by the slots'
        ids; the memo holds the slots themselves, so no id in it can be another object's."""
        which = tuple(map(id, slots))
        known = self._remains.get(which)
        if known is None:
            if len(self._remains) >= _REMAINS_MAX:
                self._remains.clear()
            known = self._remains[which] = (slots, self.book.remains_step(slots))
        return known[1]

    async def handle(self, call: Call, next: Handler) -> Result:
        """Reserve the most ``call`` can cost, forward it, then settle to what it did cost."""
        claim = ran(call, CLAIM)
        if claim is False:  # not run by the admission stage (this stage used alone)
            claim = await answered(self, call, CLAIM)
        if claim is None:
            return await next(call)
        rules, slots, amount, now = call.scratch[PLAN]
        if claim.unavailable:
            raise store_unavailable()
        if claim.hit:
            # Admitted as a cache hit: it costs nothing, so nothing is reserved (or settled); but a budget
            # with nothing left refuses even a cached answer (its check ran in the same round trip).
            if claim.result and claim.result[0] == 0:
                refused, spent, reserved = slots[claim.result[1] - 1], claim.result[2], claim.result[3]
                raise budget_exceeded(refused, spent, reserved, 0, now)
            return await next(call)
        assert claim.step is not None  # admitted as a miss: its step was built and run
        reservation = self.book.reservation(claim.step, slots, claim.result)
        if not reservation.ok:
            assert reservation.refused is not None
            spent, reserved = reservation.usage[0]
            raise budget_exceeded(reservation.refused, spent, reserved, amount, now)
        self._soft_limit_check(call, rules, reservation)
        call.scratch[RESERVATION_SCRATCH] = f"{reservation.lease:013x}"
        try:
            result = await next(call)
        except GatewayError as exc:
            await self._settle(
                call, reservation, account(call, None, self.pricing, status=exc.status).cost_nanos
            )
            raise
        except BaseException as exc:
            failed = account(call, None, self.pricing, status=ending_status(exc))
            await self._settle(call, reservation, failed.cost_nanos)
            raise
        if isinstance(result, Response):
            # Its cost is the call's one accounting (`account` runs once per call), whenever this runs.
            work = partial(self._settle_answer, call, reservation, result)
            pending = after_answer(call, self.book.store, work)
            if pending is not None:
                await pending
            return result
        stream = result
        stream_meter(call, stream)

        async def on_end(status: int) -> None:
            await self._settle(
                call, reservation, account(call, stream, self.pricing, status=status).cost_nanos
            )

        return stream.pipe(lambda chunks: FinalizingIterator(chunks, on_end))

    def _settle_answer(
        self, call: Call, reservation: Reservation, result: Response
    ) -> Awaitable[None] | None:
        """Settle to what the complete answer ``result`` cost (see :meth:`_settle_now`)."""
        return self._settle_now(call, reservation, account(call, result, self.pricing).cost_nanos)

    async def _settle(self, call: Call, reservation: Reservation, cost: int) -> None:
        pending = self._settle_now(call, reservation, cost)
        if pending is not None:
            await pending

    def _settle_now(self, call: Call, reservation: Reservation, cost: int) -> Awaitable[None] | None:
        """Settle ``reservation`` to ``cost`` once: None when done (the write deferred with the request's
        other after-answer writes, sent in one round trip), else the settlement to await."""
        if call.scratch.get("budgets.settled"):
            return None
        call.scratch["budgets.settled"] = True
        if cost > reservation.amount:
            logger.warning(
                "request %s cost %s USD, more than the %s USD reserved (upstream ignored max_tokens?)",
                call.request_id, format_usd(cost), format_usd(reservation.amount),
            )  # fmt: skip
        now = self.clock()
        if defer(call, self.book.settle_write(reservation, cost, now), self.book.store):
            return None
        return self._settle_on_store(call, reservation, cost, now)

    async def _settle_on_store(self, call: Call, reservation: Reservation, cost: int, now: datetime) -> None:
        # Shielded: settlement runs while the request is being cancelled (client gone), and must finish.
        with anyio.CancelScope(shield=True):
            try:
                await self.book.settle(reservation, cost, now)
            except StoreUnavailable:
                # The ledger still has the cost; the reservation's lease expires on its own.
                logger.error(
                    "request %s: state store unreachable, %s USD not charged to its budgets",
                    call.request_id, format_usd(cost),
                )  # fmt: skip

    def _soft_limit_check(self, call: Call, rules: list[BudgetRule], reservation: Reservation) -> None:
        warnings = []
        remaining: int | None = None  # the least left in any of the budgets (one pass over them)
        for rule, slot, (spent, reserved) in zip(rules, reservation.slots, reservation.usage, strict=True):
            used = spent + reserved
            left = slot.limit_nanos - used
            if remaining is None or left < remaining:
                remaining = left
            if used < rule.soft_limit * slot.limit_nanos:
                continue
            share = min(100, round(100 * used / slot.limit_nanos))
            warnings.append(
                f"{rule.scope} '{rule.name}' has used {share}% of its {rule.period.value} budget "
                f"({format_usd(used)} of {format_usd(slot.limit_nanos)} USD)"
            )
            mark = (rule.scope, rule.name, slot.window.key)
            if mark not in self._warned:
                self._warned.add(mark)
                logger.warning("budget soft limit reached: %s", warnings[-1])
        assert remaining is not None  # a reservation holds at least one budget
        call.response_headers[REMAINING_HEADER] = format_usd(max(0, remaining))
        if warnings:
            call.response_headers[WARNING_HEADER] = "; ".join(warnings)

    async def report(self) -> list[dict[str, Any]]:
        """Spend, reservations, remaining budget and window end of every budget (``GET /admin/budgets``)."""
        return await self.status(
            [
                *self.keys.values(),
                *self.runtime_keys.values(),
                *self.teams.values(),
                *self.runtime_teams.values(),
            ]
        )

    async def status(self, rules: Sequence[BudgetRule]) -> list[dict[str, Any]]:
        """Spend, reservations, remaining budget and window end of each of ``rules``."""
        now = self.clock()
        slots = [rule.slot(now) for rule in rules]
        try:
            usage = await self.book.read(slots)
        except StoreUnavailable:
            raise store_unavailable() from None
        report = []
        for rule, slot, (spent, reserved) in zip(rules, slots, usage, strict=True):
            report.append(
                {
                    "scope": rule.scope,
                    "name": rule.name,
                    "period": rule.period.value,
                    "limit_usd": format_usd(slot.limit_nanos),
                    "spent_usd": format_usd(spent),
                    "reserved_usd": format_usd(reserved),
                    "remaining_usd": format_usd(max(0, slot.limit_nanos - spent - reserved)),
                    "soft_limit": rule.soft_limit,
                    "timezone": str(rule.zone),
                    "period_start": slot.window.start.isoformat() if slot.window.start else None,
                    "period_end": slot.window.end.isoformat() if slot.window.end else None,
                }
            )
        return report


def budget_stage(config: GatewayConfig, store: Store, usage: UsageStage) -> BudgetStage:
    """The budget stage for ``config``, sharing ``usage``'s ledger and prices (built even when no budget is
    configured: a key made through the admin API may carry one)."""
    rules = budget_rules(config)
    return BudgetStage(
        rules,
        config.features.budgets,
        BudgetBook(store, lease_seconds=config.features.budgets.reservation_ttl_seconds),
        usage.ledger,
        usage.pricing,
        clock=usage.clock,
    )
