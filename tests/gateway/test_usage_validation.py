"""Property tests of the usage and pricing path with hostile values: whatever an upstream reports, the cost
is a non-negative, bounded number of nano-dollars, the tokens are bounded, and nothing raises."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

from budget_fakes import usage_record
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.answers import MAX_TOKENS, answer_problem, checked_usage, chunk_problem, usage_counts
from gateway.config import parse_config
from gateway.features.usage import Pricing, account, with_cost
from gateway.ledger_sqlite import migrate, write
from gateway.pipeline import Call, KeyIdentity, Response
from gateway.pricing import (
    MAX_NANOS,
    ModelPrice,
    bundled_price_table,
    cost_nanos,
    format_usd,
    max_cost_nanos,
    usd_to_nanos,
)
from gateway.usage_record import storable, storable_fields

# JSON as an upstream may send it, plus the values Python's json parser also accepts (NaN, Infinity, 1e400).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
count_like = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40), st.sampled_from([0, 1, MAX_TOKENS, MAX_TOKENS + 1]),
    scalars,
)  # fmt: skip
usages = (
    st.fixed_dictionaries(
        {},
        optional={"prompt_tokens": count_like, "completion_tokens": count_like, "total_tokens": count_like},
    )
    | json_values
)

CONFIG = parse_config(
    """
providers: [{name: up, type: mock}]
models:
  - name: priced
    routes: [{provider: up, model: up-model, pricing: {input_per_1m: 1000000, output_per_1m: 1000000}}]
usage: {database: ":memory:"}
"""
)
MODEL = CONFIG.models[0]
PRICING = Pricing(bundled_price_table(), CONFIG.models)


def _call() -> Call:
    call = Call(
        request_id="r",
        key=KeyIdentity(name="alice", key_id="k"),
        endpoint="chat",
        model="priced",
        model_config=MODEL,
        body={"model": "priced", "messages": [{"role": "user", "content": "hello"}]},
        headers={},
    )
    call.route = MODEL.routes[0]
    return call


@given(usages)
def test_usage_counts_are_bounded_integers_or_a_reason(usage: Any) -> None:
    counts = usage_counts(usage)
    if isinstance(counts, str):
        assert counts.startswith("usage")
        return
    prompt, completion = counts
    assert completion == usage.get("completion_tokens", 0)
    for value in counts:
        assert type(value) is int and 0 <= value <= MAX_TOKENS
    assert usage["prompt_tokens"] == prompt


@given(usages)
@settings(max_examples=300)
def test_any_reported_usage_gives_a_sane_cost(usage: Any) -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}], "usage": usage}
    accounting = account(_call(), Response(body), PRICING)
    assert 0 <= accounting.cost_nanos <= MAX_NANOS
    assert 0 <= accounting.prompt_tokens <= MAX_TOKENS and 0 <= accounting.completion_tokens <= MAX_TOKENS
    trusted = not isinstance(usage_counts(usage), str)
    assert accounting.source == ("reported" if trusted else "estimated")
    shown = with_cost(checked_usage(body)[0], accounting)["usage"]
    assert shown["prompt_tokens"] == accounting.prompt_tokens
    assert not shown["cost_usd"].startswith("-")


prices = st.builds(
    ModelPrice,
    input=st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False, places=6),
    output=st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False, places=6),
)
big_ints = st.integers(min_value=-(10**40), max_value=10**40)


@given(prices, big_ints, big_ints)
def test_costs_never_go_negative_or_past_the_bound(price: ModelPrice, prompt: int, completion: int) -> None:
    cost = cost_nanos(price, prompt, completion)
    bound = max_cost_nanos(price, prompt, completion)
    assert 0 <= cost <= MAX_NANOS and 0 <= bound <= MAX_NANOS
    if prompt >= 0 and completion >= 0:
        assert bound >= cost
    assert not format_usd(cost).startswith("-")


@given(st.decimals(allow_nan=True, allow_infinity=True), st.booleans())
def test_usd_to_nanos_is_clamped(amount: Decimal, round_up: bool) -> None:
    assert 0 <= usd_to_nanos(amount, round_up=round_up) <= MAX_NANOS


@given(json_values)
def test_answer_checks_never_raise(value: Any) -> None:
    for endpoint in ("chat", "embeddings"):
        problem = answer_problem(endpoint, value)
        assert problem is None or isinstance(problem, str)
    assert chunk_problem(value) is None or isinstance(chunk_problem(value), str)
    if isinstance(value, dict):
        checked, reason = checked_usage(value)
        assert reason is None or checked["usage"] is None


@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=5),
)
def test_any_record_is_storable(tokens: int, cost: int, status: int, text: str) -> None:
    record = storable(
        usage_record(
            prompt_tokens=tokens, completion_tokens=-tokens, cost_nanos=cost, status=status, model=text
        )
    )
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    write(conn, [record])
    total = conn.execute("SELECT SUM(cost_nanos), SUM(prompt_tokens) FROM usage").fetchone()
    assert 0 <= total[0] <= MAX_NANOS and 0 <= total[1] <= MAX_TOKENS


@given(
    st.sampled_from(
        [
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "attempts",
            "status",
            "cost_nanos",
            "avoided_cost_nanos",
        ]
    ),
    st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30), st.booleans(), st.sampled_from([2**53, 10**9])
    ),
    st.sampled_from(["request_id", "key_name", "team", "model", "route", "day", "cache_status", "trace_id"]),
    st.one_of(st.none(), st.text(max_size=5), st.sampled_from(["\x00", "a\ud800", "é", ""])),
)
def test_storable_answers_as_its_field_by_field_walk(count: str, number: int, name: str, text: Any) -> None:
    """storable checks a record in one pass first (every request's record is clean) and walks field by
    field only when that pass finds anything: the record it returns is the walk's, and a clean record is
    returned as is."""
    record = usage_record(**{count: number, name: text})
    fast, walked = storable(record), storable_fields(record)
    assert fast == walked and type(getattr(fast, count)) is type(getattr(walked, count))
    assert (fast is record) == (walked is record)


def test_a_cohere_count_of_infinity_is_rejected_not_a_crash() -> None:
    from gateway.providers.cohere import _usage

    usage = _usage({"tokens": {"input_tokens": float("inf"), "output_tokens": float("nan")}})
    assert isinstance(usage_counts(usage), str)  # estimated downstream, never int(inf) -> OverflowError
