"""Distribution and ordering tests for the load-balancing strategies (fixed seeds, chi-square)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.features.routing_strategies import (
    LeastInFlight,
    LowestLatency,
    RoundRobin,
    RouteStats,
    RouteTarget,
    WeightedRandom,
    make_strategy,
    weighted_shuffle,
)

# Upper critical values of the chi-square distribution at p = 0.001, by degrees of freedom (standard tables).
CHI2_CRITICAL_0_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467}

A = RouteTarget("p1", "m-a", weight=3)
B = RouteTarget("p2", "m-b", weight=1)
C = RouteTarget("p3", "m-c", weight=2)
DRAINED = RouteTarget("p4", "m-d", weight=0)


def chi_square(observed: Counter[str], weights: dict[str, float]) -> float:
    """Pearson's statistic of ``observed`` counts against the distribution proportional to ``weights``."""
    n = sum(observed.values())
    total = sum(weights.values())
    return sum((observed[k] - n * w / total) ** 2 / (n * w / total) for k, w in weights.items())


def first_choices(strategy, routes, n: int) -> Counter[str]:
    return Counter(strategy.order(routes)[0].key for _ in range(n))


def test_weighted_random_follows_weights() -> None:
    counts = first_choices(WeightedRandom(random.Random(7)), [A, B, C], 6000)
    stat = chi_square(counts, {A.key: 3, B.key: 1, C.key: 2})
    assert stat < CHI2_CRITICAL_0_001[2]


def test_chi_square_rejects_the_wrong_distribution() -> None:
    # The statistic has power: the same sample is far from a uniform split.
    counts = first_choices(WeightedRandom(random.Random(7)), [A, B, C], 6000)
    assert chi_square(counts, {A.key: 1, B.key: 1, C.key: 1}) > CHI2_CRITICAL_0_001[2]


def test_weight_zero_drains_a_route_in_every_strategy() -> None:
    stats = RouteStats()
    for name in ("weighted", "round_robin", "least_inflight", "latency"):
        strategy = make_strategy(name, rng=random.Random(1), stats=stats)
        for _ in range(200):
            order = strategy.order([A, DRAINED, B])
            assert DRAINED not in order
            assert sorted(r.key for r in order) == sorted([A.key, B.key])


def test_order_lists_every_active_route_once() -> None:
    order = weighted_shuffle([A, B, C, DRAINED], random.Random(3))
    assert sorted(r.key for r in order) == sorted([A.key, B.key, C.key])


def test_weighted_random_second_choice_is_weighted_among_the_rest() -> None:
    rng = random.Random(11)
    seconds = Counter()
    for _ in range(6000):
        order = weighted_shuffle([A, B, C], rng)
        if order[0] == A:
            seconds[order[1].key] += 1
    assert chi_square(seconds, {B.key: 1, C.key: 2}) < CHI2_CRITICAL_0_001[1]


def test_round_robin_gives_exact_weighted_shares_smoothly() -> None:
    rr = RoundRobin()
    picks = [rr.order([A, B, C])[0].key for _ in range(60)]
    assert Counter(picks) == {A.key: 30, B.key: 10, C.key: 20}
    # Smooth: the heaviest route never takes more than its share in a row (nginx's property).
    longest = max(len(run) for run in "".join("a" if p == A.key else "." for p in picks).split("."))
    assert longest <= 2


def test_round_robin_unweighted_cycles_in_order() -> None:
    x, y, z = (RouteTarget("p", name) for name in ("x", "y", "z"))
    rr = RoundRobin()
    assert [rr.order([x, y, z])[0].model for _ in range(6)] == ["x", "y", "z", "x", "y", "z"]


def test_round_robin_keeps_separate_rotation_per_route_set() -> None:
    x, y = RouteTarget("p", "x"), RouteTarget("p", "y")
    rr = RoundRobin()
    assert rr.order([x, y])[0] == x
    assert rr.order([A, B])[0] == A
    assert rr.order([x, y])[0] == y


def test_least_in_flight_prefers_the_idle_route() -> None:
    stats = RouteStats()
    strategy = LeastInFlight(stats, random.Random(5))
    stats.started(A.key)
    stats.started(A.key)
    stats.started(C.key)
    # Load per weight: A 2/3, B 0/1, C 1/2.
    assert [r.key for r in strategy.order([A, B, C])] == [B.key, C.key, A.key]
    stats.finished(A.key)
    stats.finished(A.key)
    assert strategy.order([A, B, C])[0] in (A, B)


def test_least_in_flight_ties_follow_weights() -> None:
    counts = first_choices(LeastInFlight(RouteStats(), random.Random(9)), [A, B, C], 6000)
    assert chi_square(counts, {A.key: 3, B.key: 1, C.key: 2}) < CHI2_CRITICAL_0_001[2]


def test_least_in_flight_spreads_concurrent_requests_evenly() -> None:
    stats = RouteStats()
    strategy = LeastInFlight(stats, random.Random(2))
    even = [RouteTarget("p", str(i)) for i in range(3)]
    for _ in range(9):
        stats.started(strategy.order(even)[0].key)
    assert stats.in_flight == {"p/0": 3, "p/1": 3, "p/2": 3}


def test_ewma_moves_towards_new_samples() -> None:
    stats = RouteStats(alpha=0.5)
    stats.observe_latency("r", 1.0)
    stats.observe_latency("r", 3.0)
    assert stats.latency_ewma["r"] == pytest.approx(2.0)
    stats.observe_latency("r", 2.0)
    assert stats.latency_ewma["r"] == pytest.approx(2.0)


def test_lowest_latency_prefers_fast_route_and_shares_near_ties_by_weight() -> None:
    stats = RouteStats()
    stats.latency_ewma.update({A.key: 0.100, B.key: 0.105, C.key: 0.300})
    strategy = LowestLatency(stats, random.Random(4), buffer=0.1, explore=0)
    counts = first_choices(strategy, [A, B, C], 4000)
    assert counts[C.key] == 0
    assert chi_square(counts, {A.key: 3, B.key: 1}) < CHI2_CRITICAL_0_001[1]
    assert strategy.order([A, B, C])[-1] == C


def test_lowest_latency_tries_unmeasured_routes_first() -> None:
    stats = RouteStats()
    stats.latency_ewma.update({A.key: 0.2})
    assert LowestLatency(stats, random.Random(1), explore=0).order([A, B])[0] == B


def test_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy 'fastest'"):
        make_strategy("fastest", rng=random.Random(), stats=RouteStats())


def test_lowest_latency_explores_slow_routes_now_and_then() -> None:
    stats = RouteStats()
    stats.latency_ewma.update({A.key: 0.1, B.key: 5.0})
    strategy = LowestLatency(stats, random.Random(8), explore=0.1)
    n = 10_000
    slow_first = first_choices(strategy, [A, B], n)[B.key]
    # Expected n * explore * weight share of B = 10000 * 0.1 * 1/4 = 250; binomial sd ~15.6, so +-5 sd.
    assert 170 < slow_first < 330


def test_one_route_is_ordered_without_a_sort_but_takes_its_draw() -> None:
    """A single route skips the sort, yet the generator moves on by the one draw it always took: a seeded
    gateway gives the requests after it the same orders as before."""
    only = RouteTarget("p", "m", weight=2.0)
    shuffled, reference = random.Random(7), random.Random(7)
    assert weighted_shuffle([only], shuffled) == [only]
    reference.random()
    assert shuffled.random() == reference.random()
    assert weighted_shuffle([RouteTarget("p", "off", weight=0.0)], shuffled) == []
    assert shuffled.random() == reference.random()  # no active route: no draw
