"""Prices, exact decimal cost, nano-dollar rounding and the token estimators."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from gateway.pricing import (
    MAX_NANOS,
    ModelPrice,
    PriceTable,
    PriceTableError,
    bundled_price_table,
    cost_nanos,
    cost_usd,
    format_usd,
    max_cost_nanos,
    nanos_to_usd,
    parse_price_table,
    usd_to_nanos,
)
from gateway.token_estimate import (
    IMAGE_TOKEN_ALLOWANCE,
    estimate_prompt_tokens,
    estimate_text_tokens,
    max_prompt_tokens,
)


def test_cost_is_exact_decimal_arithmetic() -> None:
    price = ModelPrice(input=Decimal("0.15"), output=Decimal("0.60"))
    # 0.1 + 0.2 style float errors would show here: 3 * 0.15 / 1e6 is not exact in binary floating point.
    assert cost_usd(price, 3, 0) == Decimal("0.00000045")
    assert cost_usd(price, 1_000_000, 1_000_000) == Decimal("0.75")
    assert cost_nanos(price, 1000, 500) == 450_000


def test_float_config_values_become_the_decimal_they_look_like() -> None:
    price = ModelPrice.model_validate({"input": 0.1, "output": 2.5})
    assert price.input == Decimal("0.1")
    assert cost_nanos(price, 10, 0) == 1000


def test_rounding_half_up_for_cost_and_up_for_reservations() -> None:
    price = ModelPrice(input=Decimal("0.0375"), output=Decimal("0"))
    # 1 token at $0.0375 / 1M = 37.5 nano-dollars
    assert cost_nanos(price, 1, 0) == 38
    assert max_cost_nanos(price, 1, 0) == 38
    price = ModelPrice(input=Decimal("0.0371"), output=Decimal("0"))
    assert cost_nanos(price, 1, 0) == 37
    assert max_cost_nanos(price, 1, 0) == 38
    assert max_cost_nanos(price, 1, 0) >= cost_nanos(price, 1, 0)


@pytest.mark.parametrize(
    ("price_in", "price_out"),
    [("2.5", "10"), ("0.075", "0.3"), ("3", "15"), ("0.0000001", "1234.56789"), ("0", "0.5"), ("7", "0")],
)
def test_the_integer_maximum_cost_is_the_decimal_one_rounded_up(price_in: str, price_out: str) -> None:
    price = ModelPrice(input=Decimal(price_in), output=Decimal(price_out))
    counts = [0, 1, 3, 7, 999, 4096, 123_457, 10**7, 10**12, 10**15]
    for prompt in counts:
        for completion in counts:
            exact = usd_to_nanos(cost_usd(price, prompt, completion), round_up=True)
            assert max_cost_nanos(price, prompt, completion) == exact, (prompt, completion)
    assert max_cost_nanos(price, 10**30, 10**30) == (MAX_NANOS if price_in != "0" or price_out != "0" else 0)


def test_unpriced_model_costs_nothing() -> None:
    assert cost_nanos(None, 1000, 1000) == 0
    assert max_cost_nanos(None, 1000, 1000) == 0


def test_negative_prices_are_rejected() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ModelPrice.model_validate({"input": -1, "output": 1})


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(0, "0"), (1, "0.000000001"), (450_000, "0.00045"), (10**9, "1"), (12_345_000_000, "12.345")],
)
def test_format_usd(nanos: int, text: str) -> None:
    assert format_usd(nanos) == text
    assert usd_to_nanos(Decimal(text)) == nanos
    assert nanos_to_usd(nanos) == Decimal(text)


def test_bundled_table_prices_common_models_and_the_mock() -> None:
    table = bundled_price_table()
    for model in ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "claude-3-5-sonnet", "mock"]:
        price = table.lookup(model)
        assert price is not None, model
        assert price.input > 0 and price.output > 0
    assert table.lookup("gpt-4o") == ModelPrice(input=Decimal("2.50"), output=Decimal("10.00"))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("openai/gpt-4.1", "gpt-4.1"),
        ("GPT-4o", "gpt-4o"),
        ("mock-fast", "mock"),
    ],
)
def test_lookup_by_longest_dash_prefix(model: str, expected: str) -> None:
    table = bundled_price_table()
    price = table.lookup(expected)
    assert price is not None, expected  # else None == None would pass for any model
    assert table.lookup(model) == price


def test_lookup_does_not_match_a_bare_prefix() -> None:
    table = PriceTable({"o3": ModelPrice(input=Decimal(1), output=Decimal(1))})
    assert table.lookup("o3x") is None
    assert table.lookup("llama-3") is None


def test_malformed_table_names_file_and_entry() -> None:
    with pytest.raises(PriceTableError) as info:
        parse_price_table({"models": {"x": {"input": "abc", "output": 1}, "y": {"input": 1}}}, "prices.yaml")
    message = str(info.value)
    assert "prices.yaml: models.x.input" in message
    assert "prices.yaml: models.y.output" in message
    with pytest.raises(PriceTableError, match=r"prices\.yaml: expected a mapping"):
        parse_price_table([], "prices.yaml")


def test_text_estimate_is_about_four_ascii_characters_per_token() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2
    assert estimate_text_tokens("日本語") == 3


def test_prompt_upper_bound_is_at_least_the_utf8_byte_length() -> None:
    text = "héllo wörld 日本語 " * 20
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    bound = max_prompt_tokens(messages)
    assert bound >= len(text.encode()) + len(b"be brief")
    assert bound >= estimate_prompt_tokens(messages)


def test_prompt_estimates_count_parts_images_and_tools() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
            ],
        }
    ]
    assert estimate_prompt_tokens(messages) >= IMAGE_TOKEN_ALLOWANCE + estimate_text_tokens("what is this")
    without_tools = max_prompt_tokens(messages)
    assert without_tools >= IMAGE_TOKEN_ALLOWANCE
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    assert max_prompt_tokens(messages, tools) > without_tools


def test_cache_reads_and_writes_are_priced_at_their_own_rates_within_the_prompt() -> None:
    from gateway.pricing import ModelPrice, cost_usd

    price = ModelPrice(
        input=Decimal("3"), output=Decimal("15"), cache_read=Decimal("0.30"), cache_write=Decimal("3.75")
    )
    assert cost_usd(price, 3010, 20, cache_read=1000, cache_write=2000) == Decimal("0.00813")
    # Without cache rates, cached tokens cost the input price; claimed counts never exceed the prompt.
    plain = ModelPrice(input=Decimal("3"), output=Decimal("15"))
    assert cost_usd(plain, 3010, 20, 1000, 2000) == cost_usd(plain, 3010, 20)
    assert cost_usd(price, 10, 0, cache_read=10**9, cache_write=5) == Decimal("0.000003")


def _random_price(rng: random.Random) -> Decimal:
    kind = rng.randrange(4)
    if kind == 0:
        return Decimal(str(round(rng.uniform(0, 100), rng.randint(0, 6))))  # as configs write them
    if kind == 1:
        return Decimal(str(rng.uniform(0, 100)))  # a float's full repr
    if kind == 2:
        return Decimal(rng.randint(0, 10**6)).scaleb(-rng.randint(0, 12))
    return Decimal(0)


def test_integer_cost_equals_the_exact_decimal_cost_everywhere() -> None:
    # cost_nanos works in integers; the Decimal formula (cost_usd, then usd_to_nanos) is the reference.
    rng = random.Random(20)
    for _ in range(20_000):
        price = ModelPrice(
            input=_random_price(rng),
            output=_random_price(rng),
            cache_read=rng.choice([None, _random_price(rng)]),
            cache_write=rng.choice([None, _random_price(rng)]),
        )
        most = rng.choice([10, 10**5, 10**9])  # up to MAX_TOKENS
        counts = [rng.randint(-5, most) for _ in range(4)]
        counts[2:] = [rng.choice([0, count]) for count in counts[2:]]  # often no prompt-cache tokens
        assert cost_nanos(price, *counts) == usd_to_nanos(cost_usd(price, *counts)), (price, counts)


def test_integer_cost_clamps_like_the_decimal_cost() -> None:
    dear = ModelPrice(input=Decimal(10**6), output=Decimal(10**6))
    assert cost_nanos(dear, 10**9, 10**9) == MAX_NANOS == usd_to_nanos(cost_usd(dear, 10**9, 10**9))
    cheap = ModelPrice(input=Decimal("0.15"), output=Decimal("0.6"))
    assert cost_nanos(cheap, -100, -100) == 0
    assert cost_nanos(cheap, 100, 0, cache_read=500, cache_write=-3) == usd_to_nanos(
        cost_usd(cheap, 100, 0, 500, -3)
    )


def test_format_usd_matches_the_decimal_rendering() -> None:
    def reference(nanos: int) -> str:
        text = format(nanos_to_usd(nanos), "f")
        return (text.rstrip("0").rstrip(".") if "." in text else text) or "0"

    rng = random.Random(9)
    samples = [0, 1, 10, 999_999_999, 10**9, 10**9 + 1, -1, -(10**9), MAX_NANOS, -MAX_NANOS]
    samples += [rng.randint(-(10**13), 10**13) for _ in range(5000)]
    samples += [rng.randint(0, 50) * 10 ** rng.randint(0, 12) for _ in range(2000)]
    for nanos in samples:
        assert format_usd(nanos) == reference(nanos), nanos
