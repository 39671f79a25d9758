"""Dependency graph helpers and estimate parsing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from planner.config import DEFAULT_UNITS
from planner.estimate import parse_estimate
from planner.graph import dependents, find_cycles, topological_order
from planner.model import Plan

BASE = Plan(
    path=Path("x.md"),
    slug="x",
    file_priority="High",
    title="X",
    status="Proposed",
    priority="High",
    complexity="Simple",
    estimate=None,
    estimate_text="",
    dependencies=(),
    feature="x",
    owner=None,
    updated=None,
    h1="X",
    sections=(),
    body="",
    legacy=False,
)


def plans(edges: dict[str, list[str]]) -> list[Plan]:
    return [replace(BASE, slug=slug, dependencies=tuple(deps)) for slug, deps in edges.items()]


def test_find_cycles() -> None:
    graph = plans({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"], "e": ["a", "zzz"], "f": []})
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["d", "d"]]
    assert find_cycles(plans({"a": ["b"], "b": []})) == []


def test_find_cycles_picks_a_real_path_in_a_tangle() -> None:
    cycles = find_cycles(plans({"a": ["c", "b"], "b": ["a"], "c": ["b"]}))
    assert cycles == [["a", "b", "a"]]


def test_long_chain_does_not_recurse() -> None:
    n = 5000
    graph = plans({f"p{i}": [f"p{i + 1}"] for i in range(n)} | {f"p{n}": ["p0"]})
    (cycle,) = find_cycles(graph)
    assert len(cycle) == n + 2


def test_dependents() -> None:
    graph = plans({"a": ["b"], "c": ["b", "a"], "b": []})
    assert dependents(graph, "b") == ["a", "c"]
    assert dependents(graph, "c") == []


def test_topological_order_puts_dependencies_first() -> None:
    order = topological_order(plans({"a": ["b", "c"], "b": ["c"], "c": [], "d": [], "x": ["y"], "y": ["x"]}))
    assert order == ["c", "b", "a", "d", "x", "y"]


@pytest.mark.parametrize(
    ("text", "low", "high", "approx"),
    [
        ("1 day", 1, 1, False),
        ("3 days", 3, 3, False),
        ("2 weeks", 10, 10, False),
        ("1 month", 20, 20, False),
        ("3-5 days", 3, 5, False),
        ("3 - 5 Days", 3, 5, False),
        ("~1 week", 5, 5, True),
        ("~ 1-2 months", 20, 40, True),
        ("1.5 weeks", 7.5, 7.5, False),
    ],
)
def test_parse_estimate(text: str, low: float, high: float, approx: bool) -> None:
    estimate = parse_estimate(text, DEFAULT_UNITS)
    assert (estimate.low_days, estimate.high_days, estimate.approximate) == (low, high, approx)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "expected 'N day\\(s\\) \\| week\\(s\\) \\| month\\(s\\)'"),
        ("3", "cannot read estimate"),
        ("2 fortnights", "unknown unit 'fortnights'"),
        ("5-3 days", "backwards"),
        ("0 days", "more than zero"),
    ],
)
def test_bad_estimates(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_estimate(text, DEFAULT_UNITS)


def test_configured_units() -> None:
    assert parse_estimate("2 sprints", {"day": 1, "sprint": 10}).high_days == 20
