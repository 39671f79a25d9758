"""Budget windows: calendar-aligned in a time zone, across DST changes, month ends and week starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.periods import Period, window_for

NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_window_in_utc() -> None:
    window = window_for(Period.DAILY, utc(2026, 3, 5, 13, 30), UTC_ZONE)
    assert window.key == "daily:2026-03-05"
    assert window.start == utc(2026, 3, 5)
    assert window.end == utc(2026, 3, 6)
    assert window.seconds_left(utc(2026, 3, 5, 23, 59, 59)) == 1


def test_daily_window_follows_the_local_date_not_the_utc_date() -> None:
    # 02:00 UTC on March 5 is still March 4 in New York (UTC-5 in winter).
    window = window_for(Period.DAILY, utc(2026, 3, 5, 2, 0), NEW_YORK)
    assert window.key == "daily:2026-03-04"
    assert window.start == utc(2026, 3, 4, 5)
    assert window.end == utc(2026, 3, 5, 5)


def test_spring_forward_day_is_23_hours_long() -> None:
    # US DST starts 2026-03-08 at 02:00 local.
    window = window_for(Period.DAILY, utc(2026, 3, 8, 12), NEW_YORK)
    assert window.start == utc(2026, 3, 8, 5)
    assert window.end == utc(2026, 3, 9, 4)
    assert window.end - window.start == timedelta(hours=23)


def test_fall_back_day_is_25_hours_long() -> None:
    # US DST ends 2026-11-01 at 02:00 local; 01:30 happens twice, both times inside the same day.
    first = datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NEW_YORK)
    second = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK)
    assert window_for(Period.DAILY, first, NEW_YORK) == window_for(Period.DAILY, second, NEW_YORK)
    window = window_for(Period.DAILY, second, NEW_YORK)
    assert window.end - window.start == timedelta(hours=25)


def test_zone_where_midnight_does_not_exist() -> None:
    # Chile moved clocks from 00:00 to 01:00 on 2022-09-11 (America/Santiago): that day starts at 01:00 local.
    santiago = ZoneInfo("America/Santiago")
    window = window_for(Period.DAILY, datetime(2022, 9, 11, 12, tzinfo=santiago), santiago)
    assert window.key == "daily:2022-09-11"
    assert window.start == utc(2022, 9, 11, 4)
    assert window.start.astimezone(santiago).hour == 1
    assert window.end - window.start == timedelta(hours=23)
    # The instant before the start belongs to the previous day.
    before = window_for(Period.DAILY, window.start - timedelta(microseconds=1), santiago)
    assert before.key == "daily:2022-09-10"
    assert before.end == window.start


def test_window_boundaries_are_half_open() -> None:
    start = utc(2026, 3, 6)
    assert window_for(Period.DAILY, start, UTC_ZONE).key == "daily:2026-03-06"
    assert window_for(Period.DAILY, start - timedelta(microseconds=1), UTC_ZONE).key == "daily:2026-03-05"


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        (utc(2026, 11, 23, 0, 0), "2026-11-23"),  # a Monday
        (utc(2026, 11, 29, 23, 59), "2026-11-23"),  # the Sunday after
        (utc(2026, 11, 30, 0, 0), "2026-11-30"),
        (utc(2026, 12, 31, 12), "2026-12-28"),  # a week that spans the new year
        (utc(2027, 1, 3, 12), "2026-12-28"),
    ],
)
def test_weeks_start_on_monday(now: datetime, monday: str) -> None:
    window = window_for(Period.WEEKLY, now, UTC_ZONE)
    assert window.key == f"weekly:{monday}"
    assert window.start is not None and window.end is not None
    assert window.start.date().isoformat() == monday
    assert window.end - window.start == timedelta(days=7)


def test_week_containing_a_dst_change_is_one_hour_short() -> None:
    window = window_for(Period.WEEKLY, utc(2026, 3, 10), NEW_YORK)
    assert window.key == "weekly:2026-03-09"
    window = window_for(Period.WEEKLY, utc(2026, 3, 6), NEW_YORK)
    assert window.key == "weekly:2026-03-02"
    assert window.end - window.start == timedelta(days=7, hours=-1)


@pytest.mark.parametrize(
    ("now", "key", "days"),
    [
        (utc(2026, 1, 31, 23, 59, 59), "monthly:2026-01", 31),
        (utc(2026, 2, 14), "monthly:2026-02", 28),
        (utc(2028, 2, 29, 12), "monthly:2028-02", 29),  # leap year
        (utc(2026, 4, 30, 12), "monthly:2026-04", 30),
        (utc(2026, 12, 31, 23, 59), "monthly:2026-12", 31),  # year end
    ],
)
def test_monthly_windows_end_at_the_month_end(now: datetime, key: str, days: int) -> None:
    window = window_for(Period.MONTHLY, now, UTC_ZONE)
    assert window.key == key
    assert window.start is not None and window.end is not None
    assert window.start.day == 1
    assert window.end - window.start == timedelta(days=days)


def test_month_boundary_in_a_time_zone_east_of_utc() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    # 16:00 UTC on Jan 31 is already Feb 1 in Tokyo (UTC+9).
    window = window_for(Period.MONTHLY, utc(2026, 1, 31, 16), tokyo)
    assert window.key == "monthly:2026-02"
    assert window.start == utc(2026, 1, 31, 15)
    assert window.end == utc(2026, 2, 28, 15)


def test_month_containing_dst_change() -> None:
    window = window_for(Period.MONTHLY, utc(2026, 11, 15), NEW_YORK)
    assert window.start == utc(2026, 11, 1, 4)
    assert window.end == utc(2026, 12, 1, 5)


def test_total_never_ends() -> None:
    window = window_for(Period.TOTAL, utc(2026, 1, 1), NEW_YORK)
    assert window.key == "total"
    assert window.start is None and window.end is None
    assert window.seconds_left(utc(2030, 1, 1)) is None


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_for(Period.DAILY, datetime(2026, 1, 1), UTC_ZONE)
