"""The load ledger's baselines of the row-drop checks ([validation] row_drop_baseline), on both backends.

A world with a weekly rhythm (weekend usage at about half of weekdays) is loaded for five weeks; each
baseline is asked, day by day, whether the day's usage rows would pass a 10% row-drop check.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from conftest import company, load_day

from pipeline.quality.runner import min_row_count
from pipeline.warehouse import ledger

MONDAY = dt.date(2026, 10, 5)
WEEKS = 5
CRM = [company(f"C{i:06d}") for i in range(1, 101)]
# Usage rows by weekday (Monday first): weekdays about 100, Saturday 50%, Sunday 47%.
RHYTHM = (100, 98, 101, 99, 97, 50, 47)


def usage(count: int) -> list[tuple[str, int, int]]:
    return [(f"C{i:06d}", 1, 3) for i in range(1, count + 1)]


def weekly_world(engine: sa.Engine, drop_on: dt.date | None = None) -> dict[dt.date, int]:
    """Load WEEKS weeks of the rhythm from MONDAY; ``drop_on`` gets half its usual usage."""
    counts = {}
    for offset in range(7 * WEEKS):
        day = MONDAY + dt.timedelta(days=offset)
        count = RHYTHM[day.weekday()] // (2 if day == drop_on else 1)
        load_day(engine, day, CRM, usage(count))
        counts[day] = count
    return counts


def failing_days(engine: sa.Engine, counts: dict[dt.date, int], method: str) -> list[dt.date]:
    """The days (after the first week) whose usage rows are below the 10% floor of ``method``'s baseline."""
    failing = []
    with engine.connect() as connection:
        for day, count in counts.items():
            if day < MONDAY + dt.timedelta(weeks=1):
                continue
            baseline = ledger.row_count_baseline(connection, day, method)
            if count < min_row_count(baseline.count("usage_rows"), 0.10):
                failing.append(day)
    return failing


def test_previous_day_fails_every_saturday_of_a_weekly_rhythm(engine: sa.Engine) -> None:
    counts = weekly_world(engine)
    failing = failing_days(engine, counts, ledger.PREVIOUS_DAY)
    assert failing == [day for day in counts if day.weekday() == 5 and day >= MONDAY + dt.timedelta(weeks=1)]


def test_same_weekday_passes_every_normal_week(engine: sa.Engine) -> None:
    counts = weekly_world(engine)
    assert failing_days(engine, counts, ledger.SAME_WEEKDAY) == []


def test_same_weekday_still_fails_a_real_drop_on_a_wednesday(engine: sa.Engine) -> None:
    wednesday = MONDAY + dt.timedelta(weeks=3, days=2)
    counts = weekly_world(engine, drop_on=wednesday)
    assert failing_days(engine, counts, ledger.SAME_WEEKDAY) == [wednesday]
    with engine.connect() as connection:
        baseline = ledger.row_count_baseline(connection, wednesday, ledger.SAME_WEEKDAY)
    assert baseline.compared_days == (wednesday - dt.timedelta(weeks=1),)
    assert baseline.count("usage_rows") == RHYTHM[2]


def test_trailing_median_takes_the_middle_of_the_last_seven_loaded_days(engine: sa.Engine) -> None:
    counts = weekly_world(engine)
    day = MONDAY + dt.timedelta(weeks=2)  # a Monday: the week before is Mon .. Sun
    with engine.connect() as connection:
        baseline = ledger.row_count_baseline(connection, day, ledger.TRAILING_MEDIAN)
    week_before = tuple(day - dt.timedelta(days=back) for back in range(7, 0, -1))
    assert baseline.compared_days == week_before
    assert baseline.count("usage_rows") == sorted(counts[d] for d in week_before)[3] == 98
    assert baseline.count("crm_rows") == 100


def test_trailing_median_shrugs_off_one_odd_day_that_previous_day_trips_on(engine: sa.Engine) -> None:
    first = dt.date(2026, 11, 2)
    for offset, count in enumerate([100, 101, 99, 100, 130, 100]):  # one spike (a batch of sign-ups)
        load_day(engine, first + dt.timedelta(days=offset), CRM, usage(count))
    after_spike = first + dt.timedelta(days=5)
    with engine.connect() as connection:
        previous = ledger.row_count_baseline(connection, after_spike, ledger.PREVIOUS_DAY)
        median = ledger.row_count_baseline(connection, after_spike, ledger.TRAILING_MEDIAN)
    assert min_row_count(previous.count("usage_rows"), 0.10) > 100  # 100 after 130: a "drop" of 23%
    assert min_row_count(median.count("usage_rows"), 0.10) <= 100
    assert median.compared_days == tuple(first + dt.timedelta(days=n) for n in range(5))
    assert median.count("usage_rows") == 100  # the lower middle of 5 days: 99 100 [100] 101 130


def test_same_weekday_falls_back_to_earlier_weeks_then_to_no_baseline(engine: sa.Engine) -> None:
    day = dt.date(2026, 11, 25)  # a Wednesday
    load_day(engine, day - dt.timedelta(days=1), CRM, usage(90))  # the day before: not the same weekday
    with engine.connect() as connection:
        none = ledger.row_count_baseline(connection, day, ledger.SAME_WEEKDAY)
    assert (none.compared_days, none.count("usage_rows")) == ((), None)
    load_day(engine, day - dt.timedelta(weeks=3), CRM, usage(80))  # D-7 and D-14 not loaded: D-21 is
    with engine.connect() as connection:
        older = ledger.row_count_baseline(connection, day, ledger.SAME_WEEKDAY)
    assert older.compared_days == (day - dt.timedelta(weeks=3),) and older.count("usage_rows") == 80
    load_day(engine, day - dt.timedelta(weeks=1), CRM, usage(70))
    with engine.connect() as connection:
        latest = ledger.row_count_baseline(connection, day, ledger.SAME_WEEKDAY)
    assert latest.compared_days == (day - dt.timedelta(weeks=1),) and latest.count("usage_rows") == 70


def test_an_unknown_baseline_is_refused_with_the_choices(engine: sa.Engine) -> None:
    with engine.connect() as connection, pytest.raises(ValueError, match="previous_day, same_weekday"):
        ledger.row_count_baseline(connection, MONDAY, "weekly")
