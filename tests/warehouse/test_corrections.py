"""What a re-merge changed, recorded in the merge's transaction (the correction mail's "What changed")."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import company, load_day

from pipeline.warehouse import corrections, merge, staging

DAY1 = dt.date(2026, 11, 1)


def day(n: int) -> dt.date:
    return DAY1 + dt.timedelta(days=n - 1)


def latest(engine, n: int) -> corrections.DayCorrection | None:
    with engine.connect() as connection:
        return corrections.latest_correction(connection, day(n))


def load_week(engine, *, extra_usage_on_day_3: list | None = None, rename_b: bool = False) -> None:
    for n in range(1, 8):
        crm = [company("A"), company("B", name="Beta Ltd" if rename_b and n == 3 else None), company("C")]
        usage = [("A", n, 10 * n), ("B", 1, 1)]
        if n == 3 and extra_usage_on_day_3:
            usage += extra_usage_on_day_3
        load_day(engine, day(n), crm, usage)


def test_a_first_load_records_no_correction(engine) -> None:
    load_week(engine)
    assert all(latest(engine, n) is None for n in range(1, 8))


def test_reloading_a_day_with_the_same_data_records_no_correction(engine) -> None:
    load_week(engine)
    result = merge.merge_day(engine, day(3))
    assert result.corrections == ()
    assert latest(engine, 3) is None


def test_a_corrected_day_records_rows_added_columns_changed_and_headlines_for_it_and_the_days_after(
    engine,
) -> None:
    load_week(engine)
    # Day 3 again: C gets 5 active users (was no row), an orphan X appears, B is renamed in the CRM.
    load_day(
        engine,
        day(3),
        [company("A"), company("B", name="Beta Ltd"), company("C")],
        [("A", 3, 30), ("B", 1, 1), ("C", 5, 2), ("X", 4, 4)],
    )
    third = latest(engine, 3)
    assert third is not None and third.merged_date == day(3)
    assert (third.rows_added, third.rows_removed, third.rows_changed) == (1, 0, 2)  # X; B and C
    assert third.changed_columns == {"active_users": 1, "events": 1, "7d_active_users": 1, "company_name": 1}
    assert third.companies == (3, 4)
    assert third.active_users == (3 + 1, 3 + 1 + 5 + 4)
    # Days 4 .. 7 hold day 3 in their 7-day windows: C's 7-day sum moved (X has no row on later days).
    for n in range(4, 7):
        later = latest(engine, n)
        assert later is not None and later.merged_date == day(3), n
        assert (later.rows_added, later.rows_removed, later.rows_changed) == (0, 0, 1)
        assert later.changed_columns == {"7d_active_users": 1}
        assert later.active_users[0] == later.active_users[1]  # the day's own usage did not change
    # Day 7 is the first with 7 loaded days: C was at churn risk (silent all week) and no longer is.
    seventh = latest(engine, 7)
    assert seventh.changed_columns == {"7d_active_users": 1, "is_churn_risk": 1}
    assert seventh.churn_risk == (1, 0)
    assert latest(engine, 2) is None  # before the corrected day: untouched


def test_a_correction_that_is_rolled_back_leaves_no_record(engine) -> None:
    load_week(engine)

    def refuse(_connection, _result) -> None:
        raise RuntimeError("an output check failed")

    staging.stage_usage(engine, day(3), [("A", 99, 99)], "test", "test-corrected")
    with pytest.raises(RuntimeError, match="output check"):
        merge.merge_day(engine, day(3), before_commit=refuse)
    assert latest(engine, 3) is None
    assert merge.merge_day(engine, day(3)).corrections  # the same change, committed this time
    assert latest(engine, 3).changed_columns["active_users"] == 2  # A to 99, B to no usage
