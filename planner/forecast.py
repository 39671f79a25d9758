"""The timeline's dates: today's forecast for every open plan, against the baseline first planned for it.

The forecast is the scheduler's (planner/schedule.py) run from today, with In Progress plans placed at
their real start (from git history) and given only the rest of their estimate. The baseline of a plan is
the forecast the roadmap would have shown on the day the plan first became Planned (or In Progress, when it
skipped Planned): the same scheduler replayed on that day over the plans' statuses of that day. The replay
uses today's estimates and dependencies (history keeps only statuses) and counts work completed since as
done; a plan first planned before the history begins, or never planned, has no baseline. The slip is the
difference between the two end dates in working days: positive is late.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

from planner.config import PlannerConfig
from planner.history import History
from planner.model import Design, Plan
from planner.schedule import Slot, schedule, working_day, working_days_between


@dataclass(frozen=True, slots=True)
class Dates:
    """One open plan's forecast and baseline, as calendar dates (ends are the last working day)."""

    slug: str
    start: date
    end: date
    started: date | None  # the real start of In Progress work, from history
    baseline_start: date | None
    baseline_end: date | None

    @property
    def slip(self) -> int | None:
        """Working days the forecast end is past the baseline end (negative: ahead); None without one."""
        if self.baseline_end is None:
            return None
        if self.end >= self.baseline_end:
            return working_days_between(self.baseline_end, self.end)
        return -working_days_between(self.end, self.baseline_end)


def spent_days(plans: Sequence[Plan], history: History, config: PlannerConfig, today: date) -> dict[str, int]:
    """Working days already spent on each In Progress plan, from the day it last entered that status."""
    spent: dict[str, int] = {}
    for plan in plans:
        if plan.status != config.in_progress_status:
            continue
        started = history.last_entered(plan.slug, plan.status, until=today)
        if started is not None and started < today:
            spent[plan.slug] = working_days_between(started, today)
    return spent


def forecast(
    plans: Sequence[Plan],
    designs: Sequence[Design],
    history: History,
    config: PlannerConfig,
    today: date,
) -> tuple[list[Slot], dict[str, Dates]]:
    """Today's slots (as `schedule` returns them) and each open plan's dates with its baseline."""
    slots = _run(plans, designs, history, config, today)
    baselines = _baselines(plans, designs, history, config)
    dates: dict[str, Dates] = {}
    for slot in slots:
        if slot.done:
            continue
        in_progress = slot.status == config.in_progress_status
        plan_started = history.last_entered(slot.slug, slot.status, until=today) if in_progress else None
        baseline = baselines.get(slot.slug)
        dates[slot.slug] = Dates(
            slug=slot.slug,
            start=working_day(today, slot.start),
            end=_last_day(today, slot),
            started=plan_started,
            baseline_start=baseline[0] if baseline else None,
            baseline_end=baseline[1] if baseline else None,
        )
    return slots, dates


def _run(
    plans: Sequence[Plan], designs: Sequence[Design], history: History, config: PlannerConfig, today: date
) -> list[Slot]:
    return schedule(
        plans,
        designs,
        lanes=config.lanes,
        priorities=config.priorities,
        spent=spent_days(plans, history, config, today),
    )


def _last_day(anchor: date, slot: Slot) -> date:
    return working_day(anchor, max(slot.end - 1, slot.start))


def _baselines(
    plans: Sequence[Plan], designs: Sequence[Design], history: History, config: PlannerConfig
) -> dict[str, tuple[date, date]]:
    """Each plan's (start, last day) as forecast on the day it was first planned."""
    committed = [s for s in config.lifecycle if s not in (config.lifecycle[0], config.completed_status)]
    first_planned: dict[str, date] = {}
    for plan in plans:
        days = [d for status in committed if (d := history.entered(plan.slug, status)) is not None]
        if days:
            first_planned[plan.slug] = min(days)
    replays: dict[date, dict[str, Slot]] = {}
    baselines: dict[str, tuple[date, date]] = {}
    for slug, day in first_planned.items():
        if day not in replays:
            then = _as_of(plans, history, day)
            replays[day] = {s.slug: s for s in _run(then, designs, history, config, day)}
        slot = replays[day].get(slug)
        if slot is not None and not slot.done:
            baselines[slug] = (working_day(day, slot.start), _last_day(day, slot))
    return baselines


def _as_of(plans: Sequence[Plan], history: History, day: date) -> list[Plan]:
    """The plans that existed at the end of ``day``, each with the status it had then."""
    then: list[Plan] = []
    for plan in plans:
        changes = [c for c in history.of(plan.slug) if c.when.date() <= day]
        if changes:
            then.append(replace(plan, status=changes[-1].status))
    return then
