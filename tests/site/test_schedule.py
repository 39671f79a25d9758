"""The timeline scheduler: dependencies first, higher priority first, no lane double-booked."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from site_fixtures import make_design, make_plan

from planner.schedule import Slot, schedule, working_day


def by_slug(slots: list[Slot]) -> dict[str, Slot]:
    return {s.slug: s for s in slots}


def assert_no_double_booking(slots: list[Slot]) -> None:
    for lane in {s.lane for s in slots if s.lane is not None}:
        busy = sorted((s.start, s.end) for s in slots if s.lane == lane and s.end > s.start)
        for (_, end), (start, _) in itertools.pairwise(busy):
            assert start >= end, f"lane {lane} double-booked: {busy}"


def test_dependencies_finish_before_dependents_start() -> None:
    plans = [
        make_plan("b", dependencies=("a",), estimate_text="2 days"),
        make_plan("a", estimate_text="3 days", priority="Low"),
        make_plan("c", dependencies=("a", "b"), estimate_text="1 day"),
    ]
    slots = by_slug(schedule(plans, lanes=3))
    assert slots["a"].start == 0 and slots["a"].end == 3
    assert slots["b"].start == 3 and slots["b"].end == 5
    assert slots["c"].start == 5 and slots["c"].end == 6


def test_higher_priority_goes_first_when_lanes_are_scarce() -> None:
    plans = [
        make_plan("low-one", priority="Low", estimate_text="1 week"),
        make_plan("medium-one", priority="Medium", estimate_text="1 week"),
        make_plan("high-one", priority="High", estimate_text="1 week"),
    ]
    slots = by_slug(schedule(plans, lanes=1))
    assert [slots[s].start for s in ("high-one", "medium-one", "low-one")] == [0, 5, 10]


def test_in_progress_work_is_continued_before_new_work() -> None:
    plans = [
        make_plan("new-high", priority="High", estimate_text="2 days"),
        make_plan("started-low", priority="Low", status="In Progress", estimate_text="2 days"),
    ]
    slots = by_slug(schedule(plans, lanes=1))
    assert slots["started-low"].start == 0 and slots["new-high"].start == 2


def test_low_prerequisite_of_a_high_plan_is_pulled_forward() -> None:
    plans = [
        make_plan("medium-other", priority="Medium", estimate_text="1 week"),
        make_plan("low-base", priority="Low", estimate_text="1 day"),
        make_plan("high-top", priority="High", estimate_text="1 day", dependencies=("low-base",)),
    ]
    slots = by_slug(schedule(plans, lanes=1))
    assert slots["low-base"].start == 0
    assert slots["high-top"].start == 1
    assert slots["medium-other"].start == 2


@pytest.mark.parametrize("lanes", [1, 2, 3, 5])
def test_no_lane_is_double_booked_and_lanes_are_respected(lanes: int) -> None:
    plans = [
        make_plan(
            f"p{i}",
            priority=("High", "Medium", "Low")[i % 3],
            estimate_text=f"{1 + i % 4} days",
            dependencies=(f"p{i - 3}",) if i >= 3 and i % 2 else (),
        )
        for i in range(20)
    ]
    slots = schedule(plans, lanes=lanes)
    assert len(slots) == 20
    assert {s.lane for s in slots} <= set(range(1, lanes + 1))
    assert_no_double_booking(slots)
    found = by_slug(slots)
    for plan in plans:
        for dep in plan.dependencies:
            assert found[dep].end <= found[plan.slug].start


def test_two_lanes_run_independent_work_in_parallel() -> None:
    plans = [make_plan("a", estimate_text="1 week"), make_plan("b", estimate_text="1 week")]
    slots = by_slug(schedule(plans))  # default: two lanes
    assert slots["a"].start == slots["b"].start == 0
    assert {slots["a"].lane, slots["b"].lane} == {1, 2}


def test_completed_work_takes_no_time_and_no_lane() -> None:
    plans = [
        make_plan("done", status="Completed", estimate_text="4 weeks"),
        make_plan("next", dependencies=("done", "designed"), estimate_text="2 days"),
    ]
    slots = by_slug(schedule(plans, [make_design("designed")], lanes=1))
    assert slots["done"].days == 0 and slots["done"].lane is None and slots["done"].done
    assert slots["next"].start == 0 and slots["next"].end == 2


def test_estimate_range_uses_its_high_end_rounded_up() -> None:
    slots = by_slug(
        schedule([make_plan("r", estimate_text="3-5 days"), make_plan("h", estimate_text="0.5 days")])
    )
    assert slots["r"].days == 5
    assert slots["h"].days == 1


def test_missing_estimate_is_flagged_not_invented() -> None:
    slot = schedule([make_plan("x", estimate_text=None)])[0]
    assert slot.days == 0 and not slot.estimated


def test_a_dependency_cycle_does_not_hang() -> None:
    plans = [
        make_plan("a", dependencies=("b",), estimate_text="1 day"),
        make_plan("b", dependencies=("a",), estimate_text="1 day"),
    ]
    slots = schedule(plans, lanes=2)
    assert sorted(s.slug for s in slots) == ["a", "b"]


def test_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lanes"):
        schedule([], lanes=0)


def test_working_days_skip_weekends() -> None:
    thursday = date(2026, 11, 26)
    assert working_day(thursday, 0) == thursday
    assert working_day(thursday, 1) == date(2026, 11, 27)
    assert working_day(thursday, 2) == date(2026, 11, 30)
    assert working_day(thursday, 5) == date(2026, 12, 3)
    assert working_day(date(2026, 11, 28), 0) == date(2026, 11, 30)  # a Saturday starts on Monday


def test_a_schedule_past_the_last_calendar_date_stops_there() -> None:
    from datetime import date

    from planner.schedule import working_day

    assert working_day(date(9999, 1, 1), 10**6) == date.max
