"""Ids from a per-process random prefix and a counter: unique, well formed, a new prefix after a fork."""

from __future__ import annotations

import re

import pytest

from gateway import ids as ids_module
from gateway.ids import IdSource


def test_request_ids_are_32_hex_digits_and_unique() -> None:
    source = IdSource()
    made = [source.hex32() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
    assert len(set(made)) == len(made)


def test_two_sources_do_not_share_a_prefix() -> None:
    assert IdSource().hex32()[:20] != IdSource().hex32()[:20]
    assert IdSource().int52() >> 24 != IdSource().int52() >> 24


def test_integer_ids_fit_in_a_double_and_stay_unique_past_the_counter() -> None:
    source = IdSource()
    made = [source.int52() for _ in range(1000)]
    assert len(set(made)) == len(made)
    assert all(0 <= i < 2**52 and float(i) == i for i in made)
    source._int_counter = iter([2**24, 2**24 + 1])  # the counter ran out: a new prefix, no repeat
    assert source.int52() not in made


def test_a_forked_child_gets_a_new_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    source = IdSource()
    before = source.hex32()
    monkeypatch.setattr(ids_module.os, "getpid", lambda: -42)
    after = source.hex32()
    assert after[:20] != before[:20]
    assert after.endswith("0" * 12)
