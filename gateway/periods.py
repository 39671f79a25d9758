"""Budget periods: calendar-aligned windows in a configured IANA time zone.

A budget's limit applies to one window at a time. ``daily``, ``weekly`` (weeks start on Monday, as in
ISO 8601) and ``monthly`` windows start at local midnight in the configured time zone, so a "daily" budget in
``America/New_York`` is 23 hours long on the day clocks spring forward and 25 hours on the day they fall back.
``total`` never resets.

Windows are computed from an injected ``now`` (an aware datetime), never from the wall clock, so callers and
tests decide what time it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Period(StrEnum):
    """How often a budget resets."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    TOTAL = "total"


@dataclass(frozen=True)
class Window:
    """One budget window: ``[start, end)`` in UTC; ``end`` is None for a ``total`` budget.

    ``key`` names the window in store keys and is stable for every instant inside it, e.g.
    ``daily:2026-03-08``, ``weekly:2026-03-02``, ``monthly:2026-03`` or ``total``.
    """

    period: Period
    key: str
    start: datetime | None
    end: datetime | None

    def seconds_left(self, now: datetime) -> int | None:
        """Whole seconds from ``now`` until the window ends (rounded up), or None when it never ends."""
        if self.end is None:
            return None
        remaining = (self.end - now).total_seconds()
        return max(0, int(-(-remaining // 1)))


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC.

    Where midnight does not exist (a DST gap at 00:00, as in some South American zones), ``fold=0`` gives the
    offset in force before the gap, which maps to the instant the gap starts: the first instant of that day.
    Where midnight happens twice, ``fold=0`` picks the first occurrence.
    """
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def window_for(period: Period, now: datetime, tz: ZoneInfo) -> Window:
    """Return the window of ``period`` that contains ``now`` (an aware datetime) in time zone ``tz``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if period is Period.TOTAL:
        return Window(period, "total", None, None)
    local_day = now.astimezone(tz).date()
    if period is Period.DAILY:
        first = local_day
        following = first + timedelta(days=1)
        key = f"daily:{first.isoformat()}"
    elif period is Period.WEEKLY:
        first = local_day - timedelta(days=local_day.weekday())
        following = first + timedelta(days=7)
        key = f"weekly:{first.isoformat()}"
    else:
        first = local_day.replace(day=1)
        following = date(first.year + 1, 1, 1) if first.month == 12 else first.replace(month=first.month + 1)
        key = f"monthly:{first.year:04d}-{first.month:02d}"
    return Window(period, key, _local_midnight(first, tz), _local_midnight(following, tz))
