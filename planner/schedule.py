"""The roadmap timeline: plans placed on parallel work lanes from their estimates, dependencies and priority.

A pure function over plan objects. Durations are whole working days (an estimate's high end, so the
timeline does not promise the optimistic case); completed work takes no time and no lane. When a lane
frees up it takes, among the plans whose dependencies are finished, the one that can start soonest and,
of those, the most urgent: In Progress work first, then by effective priority — a plan's own priority or
that of the most urgent plan waiting on it, so a Low prerequisite of a High plan is not left for last.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from planner.config import DEFAULT_PRIORITIES
from planner.model import Design, Plan

COMPLETED = "Completed"
IN_PROGRESS = "In Progress"


@dataclass(frozen=True)
class Slot:
    """One plan's place on the timeline, in working days from the start (`end` is exclusive)."""

    slug: str
    title: str
    status: str
    priority: str
    start: int
    end: int
    lane: int | None  # 1-based; None for completed work, which needs no lane
    estimated: bool = True  # False when the plan has no estimate and was given no time
    # Working days already spent on started work (its real start is `start`, before today); the slot ends
    # when the remaining estimate is used up, at least one working day from today.
    spent: int = 0

    @property
    def days(self) -> int:
        return self.end - self.start

    @property
    def done(self) -> bool:
        return self.lane is None


def duration_days(plan: Plan) -> int:
    """Whole working days a plan is given: its estimate's high end (or low end), rounded up."""
    if plan.status == COMPLETED or plan.estimate is None:
        return 0
    days = plan.estimate.high_days or plan.estimate.low_days
    return max(1, math.ceil(days)) if days > 0 else 0


def schedule(
    plans: Sequence[Plan],
    designs: Iterable[Design] = (),
    *,
    lanes: int = 2,
    priorities: Sequence[str] = DEFAULT_PRIORITIES,
    spent: Mapping[str, int] | None = None,
) -> list[Slot]:
    """Place every plan on one of `lanes` lanes; returns slots ordered by start, then lane.

    `spent` gives the working days already spent on In Progress plans (from their real start): such a plan
    starts that many days before today and keeps its lane for the rest of its estimate, at least one day
    (work past its estimate is not finished either).

    Dependencies on completed designs or on unknown slugs count as already met (validation reports the
    unknown ones). A dependency cycle does not hang the scheduler: when nothing is ready, the most urgent
    remaining plan is started anyway, after everything scheduled so far.
    """
    if lanes < 1:
        raise ValueError("lanes must be at least 1")
    done_designs = {d.slug for d in designs}
    rank = _effective_ranks(plans, priorities)

    def urgency(plan: Plan) -> tuple[int, int, str]:
        return (0 if plan.status == IN_PROGRESS else 1, rank[plan.slug], plan.slug)

    finish: dict[str, int] = {}
    slots: list[Slot] = []
    pending: dict[str, Plan] = {}
    for plan in plans:
        if plan.status == COMPLETED:
            finish[plan.slug] = 0
            slots.append(_slot(plan, 0, 0, None))
        else:
            pending[plan.slug] = plan
    # Only unfinished plans of this roadmap hold anything up.
    waits_on = {
        slug: {d for d in p.dependencies if d in pending and d not in done_designs and d != slug}
        for slug, p in pending.items()
    }
    dependents: dict[str, list[str]] = {}
    for slug, deps in waits_on.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(slug)
    unmet = {slug: len(deps) for slug, deps in waits_on.items()}

    def ready_at(plan: Plan) -> int:
        return max([finish.get(d, 0) for d in plan.dependencies], default=0)

    # Plans whose dependencies are scheduled wait in `waiting` (by the day they may start) until the
    # earliest free lane reaches that day; then they are `available`, taken most urgent first.
    waiting: list[tuple[int, tuple[int, int, str]]] = []
    available: list[tuple[int, int, str]] = []
    for slug, count in unmet.items():
        if count == 0:
            heapq.heappush(waiting, (ready_at(pending[slug]), urgency(pending[slug])))
    lane_free = [0] * lanes
    while pending:
        lane = min(range(lanes), key=lambda i: (lane_free[i], i))
        now = lane_free[lane]
        while waiting and waiting[0][0] <= now:
            heapq.heappush(available, heapq.heappop(waiting)[1])
        if available:
            plan, start = pending[heapq.heappop(available)[2]], now
        elif waiting:
            day, key = heapq.heappop(waiting)
            plan, start = pending[key[2]], day
        else:  # a dependency cycle: break it at its most urgent plan, after all scheduled work
            plan = min(pending.values(), key=urgency)
            start = max([now, *finish.values()])
        days = duration_days(plan)
        used = (spent or {}).get(plan.slug, 0) if plan.status == IN_PROGRESS else 0
        if plan.status == IN_PROGRESS:
            # Started for real: it holds a lane from today whatever the lanes say (more work in progress than
            # lanes is the team's reality, shown as such, never pushed into the future).
            start = 0
        end = start + (max(1, days - used) if days and used else days)
        finish[plan.slug] = end
        lane_free[lane] = max(lane_free[lane], end)
        del pending[plan.slug]
        slots.append(_slot(plan, start - used, end, lane + 1, used))
        for slug in dependents.get(plan.slug, ()):
            if slug in pending:
                unmet[slug] -= 1
                if unmet[slug] == 0:
                    heapq.heappush(waiting, (ready_at(pending[slug]), urgency(pending[slug])))
    slots.sort(key=lambda s: (s.start, s.lane or 0, s.slug))
    return slots


def working_day(start: date, offset: int) -> date:
    """The calendar date `offset` working days (Monday to Friday) after `start`'s first working day
    (before it, for a negative `offset`)."""
    day = start
    while day.weekday() >= 5:
        day += timedelta(days=1)
    if offset < 0:
        for _ in range(-offset):
            day -= timedelta(days=1)
            while day.weekday() >= 5:
                day -= timedelta(days=1)
        return day
    weeks, rest = divmod(offset, 5)
    try:
        day += timedelta(weeks=weeks)
        for _ in range(rest):
            day += timedelta(days=1)
            while day.weekday() >= 5:
                day += timedelta(days=1)
    except OverflowError:  # a schedule thousands of years long: the last date there is
        return date.max
    return day


def working_days_between(first: date, last: date) -> int:
    """Working days from `first` up to, not including, `last` (0 when `last` is not after `first`)."""
    if last <= first:
        return 0
    weeks, rest = divmod((last - first).days, 7)
    count = weeks * 5
    for i in range(rest):
        if (first + timedelta(days=weeks * 7 + i)).weekday() < 5:
            count += 1
    return count


def _slot(plan: Plan, start: int, end: int, lane: int | None, spent: int = 0) -> Slot:
    return Slot(
        slug=plan.slug,
        title=plan.title,
        status=plan.status,
        priority=plan.priority,
        start=start,
        end=end,
        lane=lane,
        estimated=plan.estimate is not None or plan.status == COMPLETED,
        spent=spent,
    )


def _effective_ranks(plans: Sequence[Plan], priorities: Sequence[str]) -> dict[str, int]:
    """Each plan's priority rank, raised to that of the most urgent plan depending on it (transitively)."""
    order = {name: i for i, name in enumerate(priorities)}
    rank = {p.slug: order.get(p.priority, len(order)) for p in plans}
    dependents: dict[str, list[str]] = {}
    for p in plans:
        for dep in p.dependencies:
            dependents.setdefault(dep, []).append(p.slug)
    # Relax until stable; bounded by the number of plans even when dependencies form a cycle.
    for _ in range(len(plans)):
        changed = False
        for slug in rank:
            best = min((rank[d] for d in dependents.get(slug, ()) if d in rank), default=rank[slug])
            if best < rank[slug]:
                rank[slug] = best
                changed = True
        if not changed:
            break
    return rank
