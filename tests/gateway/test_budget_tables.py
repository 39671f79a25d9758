"""Budget windows and prices computed once and reused: the same answers as computing them every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.config import parse_config
from gateway.features.budgets import budget_rules
from gateway.features.usage import Pricing, prompt_bound
from gateway.periods import window_for
from gateway.pipeline import Call, KeyIdentity
from gateway.pricing import bundled_price_table
from gateway.token_estimate import max_prompt_tokens

CONFIG = """
auth:
  keys:
    - {name: daily, key: sk-daily-0000001, budget: {limit_usd: 1, period: daily, timezone: Asia/Tokyo}}
    - {name: monthly, key: sk-month-0000001, budget: {limit_usd: 1, period: monthly}}
    - {name: total, key: sk-total-0000001, budget: {limit_usd: 1, period: total}}
providers:
  - {name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}
models:
  - name: priced
    pricing: {input_per_1m: 0.5, output_per_1m: 1.25}
    routes:
      - {provider: up, model: a}
      - {provider: up, model: b, pricing: {input_per_1m: 2, output_per_1m: 0.75}}
  - name: gpt-4o
    routes: [{provider: up}]
  - name: free
    routes: [{provider: up, model: nothing-prices-this}]
features:
  budgets: {timezone: America/New_York}
"""


def test_a_slot_is_reused_inside_its_window_and_renewed_after_it() -> None:
    rules = budget_rules(parse_config(CONFIG))
    start = datetime(2026, 3, 31, 14, 59, tzinfo=UTC)
    seen: dict[str, set[bool]] = {}
    for rule in rules:
        now = start
        previous = None
        for step in (0, 30, 60, 3600, 86_400, 86_400 * 3, 1, -86_400 * 10):
            now += timedelta(seconds=step)
            slot = rule.slot(now)
            window = window_for(rule.period, now, rule.zone)
            assert slot.window == window, (rule.name, now)
            if previous is not None:
                # Inside the same window the very same slot comes back (reused, not rebuilt); a new one after.
                same = previous.window == window
                assert (slot is previous) == same, (rule.name, now)
                seen.setdefault(rule.name, set()).add(same)
            previous = slot
    # The steps cross window ends: each periodic budget was both reused and renewed, the total one reused.
    assert seen == {"daily": {True, False}, "monthly": {True, False}, "total": {True}}


def test_a_naive_time_is_still_refused() -> None:
    rule = budget_rules(parse_config(CONFIG))[0]
    rule.slot(datetime(2026, 3, 5, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        rule.slot(datetime(2026, 3, 5, 1))


def test_precomputed_prices_equal_prices_computed_on_demand() -> None:
    config = parse_config(CONFIG)
    table = bundled_price_table()
    known, plain = Pricing(table, config.models), Pricing(table)
    for model in config.models:
        assert known.max_price(model) == plain.max_price(model)
        for route in model.routes:
            assert known.price(model, route) == plain.price(model, route)
    priced = config.models[0]
    assert known.price(priced, priced.routes[1]) is not None
    assert known.max_price(priced) == plain.max_price(priced)
    best = known.max_price(priced)
    assert best is not None
    assert (best.input, best.output) == (2, Decimal("1.25"))
    assert known.max_price(config.models[2]) is None
    # A model the pricing was not built with (an equal copy) is priced on demand, the same way.
    copy = priced.model_copy(deep=True)
    assert known.max_price(copy) == plain.max_price(priced)
    assert known.price(copy, copy.routes[0]) == plain.price(priced, priced.routes[0])


def test_the_prompt_bound_is_computed_once_per_call() -> None:
    config = parse_config(CONFIG)
    messages = [{"role": "user", "content": "héllo wörld " * 20}]
    call = Call(
        request_id="r1",
        key=KeyIdentity(name="daily", key_id="k1"),
        endpoint="chat",
        model="priced",
        model_config=config.models[0],
        body={"model": "priced", "messages": messages},
        headers={},
    )
    bound = prompt_bound(call)
    assert bound == max_prompt_tokens(messages)
    call.body = {**call.body, "max_tokens": 5}  # what the budget stage may add does not change the prompt
    assert prompt_bound(call) == bound
    assert list(call.scratch.values()) == [bound]
