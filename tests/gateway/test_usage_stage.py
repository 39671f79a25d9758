"""The usage stage's local date of a request (the ledger's ``day``), which it works out once per UTC minute:
always the date ``astimezone`` gives, across midnights, DST changes at midnight and odd offsets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.features.usage import Pricing, UsageStage
from gateway.ledger import Ledger
from gateway.pricing import bundled_price_table

# Zones with a DST change at midnight (Sao Paulo until 2019, Havana, Santiago), half-hour DST (Lord Howe),
# offsets of 45 minutes (Kathmandu, Chatham), a date-line jump (Apia skipped 2011-12-30), an offset in
# seconds (Amsterdam, +00:19:32 until 1937: its midnight falls inside a UTC minute) and UTC.
ZONES = [
    ("America/Sao_Paulo", datetime(2018, 11, 4, tzinfo=UTC)),
    ("America/Sao_Paulo", datetime(2019, 2, 17, tzinfo=UTC)),
    ("America/Havana", datetime(2024, 3, 10, tzinfo=UTC)),
    ("America/Santiago", datetime(2024, 4, 7, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2024, 4, 7, tzinfo=UTC)),
    ("Asia/Kathmandu", datetime(2026, 12, 4, tzinfo=UTC)),
    ("Pacific/Chatham", datetime(2026, 4, 5, tzinfo=UTC)),
    ("Pacific/Apia", datetime(2011, 12, 30, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 3, 29, tzinfo=UTC)),
    ("Europe/Amsterdam", datetime(1930, 6, 1, tzinfo=UTC)),
    ("UTC", datetime(2026, 12, 31, tzinfo=UTC)),
]


def stage(zone: str) -> UsageStage:
    return UsageStage(Ledger(":memory:"), Pricing(bundled_price_table()), ZoneInfo(zone))


def expected(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).date().isoformat()


@pytest.mark.parametrize(("zone", "around"), ZONES, ids=lambda v: str(v)[:19])
def test_the_day_is_the_local_date_second_by_second_over_two_days(zone: str, around: datetime) -> None:
    # One stage for the whole walk, so what it kept from one minute is put to the test by the next ones.
    usage = stage(zone)
    moment = around - timedelta(days=1)
    while moment < around + timedelta(days=1):
        assert usage.local_day(moment.timestamp()) == expected(moment, zone), moment
        moment += timedelta(seconds=7, microseconds=250_001)


@pytest.mark.parametrize(("zone", "around"), ZONES, ids=lambda v: str(v)[:19])
def test_the_day_is_right_whatever_order_requests_arrive_in(zone: str, around: datetime) -> None:
    # A clock that goes back (another replica's time, a test's fake clock) must not reuse a stale date.
    usage = stage(zone)
    rng = random.Random(zone)
    for _ in range(3000):
        moment = around + timedelta(seconds=rng.uniform(-86_400, 86_400))
        if rng.random() < 0.3:  # the last microsecond of a minute, and the first of the next
            step = timedelta(microseconds=rng.choice([0, 1]))
            moment = moment.replace(second=59, microsecond=999_999) + step
        assert usage.local_day(moment.timestamp()) == expected(moment, zone), moment
