"""Prices per model and the cost of a request, in exact decimal arithmetic.

Prices are USD per one million tokens, input and output separately. A model route's ``pricing`` in the config
wins; otherwise the bundled table ``gateway/prices.yaml`` is consulted by the route's upstream model name.

Money is counted in whole nano-dollars (10^-9 USD) everywhere it is stored or added up (budget counters, the
usage ledger), so sums are exact integers. The cost of one request is computed exactly, then rounded half-up
to a nano-dollar; reservations are rounded up so they never undershoot the real cost. :func:`cost_nanos`
does it in integers (each price as an exact fraction of nano-dollars per token, made once per price), since
the Decimal arithmetic of :func:`cost_usd` cost about 3 us of every request's CPU; both give the same nanos.

Every conversion to nano-dollars goes through :func:`usd_to_nanos`, which clamps to ``[0, MAX_NANOS]``: no
token count, however hostile, can make a cost negative (a credit) or too large for the stores (Redis counts in
64-bit integers, its Lua scripts in doubles) or the ledger (SQLite's 64-bit integers).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import cached_property
from importlib import resources
from math import lcm
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

NANOS_PER_USD = 10**9
# About 9 million USD: the largest amount a double (Redis' Lua numbers) holds exactly. Far beyond any single
# request's cost, so clamping only ever bites on absurd inputs.
MAX_NANOS = 2**53 - 1
_TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)

NonNegativeDecimal = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class ModelPrice(BaseModel):
    """USD per one million input (prompt) and output (completion) tokens.

    ``cache_read`` and ``cache_write`` price prompt tokens read from or written to the provider's prompt cache
    (Anthropic's ``cache_read_input_tokens`` / ``cache_creation_input_tokens``, OpenAI's ``cached_tokens``);
    unset, such tokens cost the ``input`` price.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: NonNegativeDecimal
    output: NonNegativeDecimal
    cache_read: NonNegativeDecimal | None = None
    cache_write: NonNegativeDecimal | None = None

    @cached_property
    def nano_rates(self) -> tuple[int, int, int, int, int]:
        """Nano-dollars per input, output, cache-read and cache-write token, as integer numerators over one
        common denominator (the last item): exact fractions, worked out once per price, so
        :func:`cost_nanos` needs no Decimal per request. (A price per 1M tokens is 1,000 times its nanos
        per token.) A cached property rather than a private attribute: pydantic's private attribute
        lookup cost 2 us, this 0.05 us."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        ratios = [(price * 1000).as_integer_ratio() for price in (self.input, self.output, read, write)]
        denominator = lcm(*(d for _, d in ratios))
        rate_in, rate_out, rate_read, rate_write = (n * (denominator // d) for n, d in ratios)
        return rate_in, rate_out, rate_read, rate_write, denominator


def usd_to_nanos(amount: Decimal, *, round_up: bool = False) -> int:
    """Convert USD to whole nano-dollars, half-up by default or up (toward +inf) with ``round_up``, clamped
    to ``[0, MAX_NANOS]`` (a NaN counts as 0)."""
    rounding = ROUND_CEILING if round_up else ROUND_HALF_UP
    if amount.is_nan():
        return 0
    if amount <= 0:
        return 0
    if amount >= Decimal(MAX_NANOS) / NANOS_PER_USD:
        return MAX_NANOS
    return min(MAX_NANOS, int((amount * NANOS_PER_USD).to_integral_value(rounding=rounding)))


def nanos_to_usd(nanos: int) -> Decimal:
    """Convert nano-dollars to an exact USD Decimal."""
    return Decimal(nanos).scaleb(-9)


def format_usd(nanos: int) -> str:
    """Format nano-dollars as a plain decimal string, no exponent or trailing zeros (``0.00042``, ``0``).

    Integer arithmetic: a request formats two or three amounts (cost header, ``usage.cost_usd``, budget
    remaining), and going through a Decimal cost 0.8 us each.
    """
    whole, fraction = divmod(abs(nanos), NANOS_PER_USD)
    sign = "-" if nanos < 0 else ""
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:09d}".rstrip("0")


def cost_usd(
    price: ModelPrice, prompt_tokens: int, completion_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> Decimal:
    """The exact cost of ``prompt_tokens`` (of which ``cache_read`` were read from and ``cache_write``
    written to the prompt cache) and ``completion_tokens`` at ``price``."""
    # Cache counts are part of the prompt: never more than it, whatever an upstream claims.
    cache_read = min(max(cache_read, 0), prompt_tokens)
    cache_write = min(max(cache_write, 0), prompt_tokens - cache_read)
    plain = prompt_tokens - cache_read - cache_write
    read_price = price.input if price.cache_read is None else price.cache_read
    write_price = price.input if price.cache_write is None else price.cache_write
    total = (
        price.input * plain
        + read_price * cache_read
        + write_price * cache_write
        + price.output * completion_tokens
    )
    return total / _TOKENS_PER_PRICE_UNIT


def cost_nanos(
    price: ModelPrice | None,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
) -> int:
    """The cost of one request in nano-dollars (0 for an unpriced model), rounded half-up and clamped to
    ``[0, MAX_NANOS]``: exactly ``usd_to_nanos(cost_usd(...))``, in integers."""
    if price is None:
        return 0
    rate_in, rate_out, rate_read, rate_write, denominator = price.nano_rates
    total = rate_in * prompt_tokens + rate_out * completion_tokens
    if cache_read or cache_write or prompt_tokens < 0:
        # The same clamping of the cache counts as cost_usd (a negative prompt makes them negative too),
        # then their share of the prompt repriced.
        cache_read = min(max(cache_read, 0), prompt_tokens)
        cache_write = min(max(cache_write, 0), prompt_tokens - cache_read)
        total += (rate_read - rate_in) * cache_read + (rate_write - rate_in) * cache_write
    if total <= 0:
        return 0
    nanos, rest = divmod(total, denominator)
    if 2 * rest >= denominator:
        nanos += 1
    return min(nanos, MAX_NANOS)


def max_cost_nanos(price: ModelPrice | None, prompt_tokens: int, completion_tokens: int) -> int:
    """The most a request can cost in nano-dollars, rounded up: what a budget reserves before forwarding.

    The same number as ``usd_to_nanos(cost_usd(...), round_up=True)``, computed in integers: every budgeted
    request asks before it is forwarded, and the Decimal arithmetic was about half of a budget's admission.
    A price of ``a/b`` USD per million tokens is ``1000 * a / b`` nano-dollars per token, exactly.
    """
    if price is None:
        return 0
    # The price's exact rates, worked out once per price (`nano_rates`): two Decimal.as_integer_ratio
    # calls per request were a quarter of the budget's reservation step.
    rate_in, rate_out, _, _, denominator = price.nano_rates
    nanos = rate_in * prompt_tokens + rate_out * completion_tokens
    if nanos <= 0:
        return 0
    return min(MAX_NANOS, -(-nanos // denominator))  # rounded up: a reservation never undershoots


class PriceTable:
    """A lookup from upstream model name to price: exact name first, then the longest ``name-`` prefix."""

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        # Longest first, so "gpt-4o-mini-2024-07-18" matches "gpt-4o-mini" before "gpt-4o".
        self._by_length = sorted(self._prices, key=len, reverse=True)

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or None when neither its name nor a prefix of it is in the table."""
        name = model.rsplit("/", 1)[-1].lower()
        if name in self._prices:
            return self._prices[name]
        for candidate in self._by_length:
            if name.startswith(candidate + "-"):
                return self._prices[candidate]
        return None

    def __len__(self) -> int:
        return len(self._prices)


class PriceTableError(ValueError):
    """The price table file is malformed; the message names the file and the entry."""


def parse_price_table(data: Any, source: str) -> PriceTable:
    """Build a PriceTable from YAML ``{"models": {name: {input, output}}}``; ``source`` names the file."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise PriceTableError(f"{source}: expected a mapping with a 'models' mapping")
    prices: dict[str, ModelPrice] = {}
    problems: list[str] = []
    for name, entry in data["models"].items():
        try:
            prices[str(name).lower()] = ModelPrice.model_validate(entry)
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(part) for part in error["loc"])
                problems.append(f"{source}: models.{name}.{field}: {error['msg']}")
    if problems:
        raise PriceTableError("\n".join(problems))
    return PriceTable(prices)


def bundled_price_table() -> PriceTable:
    """The default price table shipped with the gateway (``gateway/prices.yaml``)."""
    text = resources.files("gateway").joinpath("prices.yaml").read_text(encoding="utf-8")
    return parse_price_table(yaml.safe_load(text), "gateway/prices.yaml")
