"""The merge transform on hand-computed cases, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import sqlalchemy as sa
from conftest import company, load_day, query, row_for, table_rows

from pipeline.sources.crm_snapshot import CrmSnapshot, parse_timestamp
from pipeline.warehouse import ledger, merge, staging
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

DAY1 = dt.date(2026, 11, 1)


def day(n: int) -> dt.date:
    """Day n of the fixture calendar (day 1 = 2026-11-01)."""
    return DAY1 + dt.timedelta(days=n - 1)


def test_rolling_sum_covers_exactly_seven_calendar_days(engine):
    # active_users on days 1..9 are 1, 2, 4, ..., 256: every window sum is a unique bit pattern.
    for n in range(1, 10):
        load_day(engine, day(n), [company("A")], [("A", 2 ** (n - 1), 1)])
    assert row_for(engine, day(7), "A")["active_users_7d"] == sum(2 ** (n - 1) for n in range(1, 8))  # 127
    assert row_for(engine, day(8), "A")["active_users_7d"] == sum(2 ** (n - 1) for n in range(2, 9))  # 254
    assert row_for(engine, day(9), "A")["active_users_7d"] == sum(2 ** (n - 1) for n in range(3, 10))  # 508
    assert row_for(engine, day(3), "A")["active_users_7d"] == 1 + 2 + 4


def test_churn_is_null_for_the_first_six_days_of_history(engine):
    for n in range(1, 8):
        load_day(engine, day(n), [company("Silent")], [])
    assert [row_for(engine, day(n), "Silent")["is_churn_risk"] for n in range(1, 8)] == [None] * 6 + [True]


def test_silent_for_exactly_six_days_is_not_churn_but_seven_is(engine):
    # Used on day 1 only, silent from day 2 on.
    for n in range(1, 10):
        usage = [("B", 3, 10)] if n == 1 else []
        load_day(engine, day(n), [company("B")], usage)
    day7 = row_for(engine, day(7), "B")  # silent days 2..7: six days, day 1 still in the window
    day8 = row_for(engine, day(8), "B")  # silent days 2..8: seven days
    assert (day7["is_churn_risk"], day7["active_users_7d"]) == (False, 3)
    assert (day8["is_churn_risk"], day8["active_users_7d"]) == (True, 0)
    assert row_for(engine, day(9), "B")["is_churn_risk"] is True


def test_explicit_zero_rows_count_as_no_usage_like_missing_rows(engine):
    for n in range(1, 8):
        load_day(engine, day(n), [company("Zero"), company("Missing")], [("Zero", 0, 0)])
    zero, missing = row_for(engine, day(7), "Zero"), row_for(engine, day(7), "Missing")
    assert zero == {**missing, "company_name": "Company Zero"}
    assert (zero["active_users"], zero["events"], zero["active_users_7d"], zero["is_churn_risk"]) == (
        0,
        0,
        0,
        True,
    )


def test_events_without_active_users_are_usage(engine):
    for n in range(1, 8):
        usage = [("Bots", 0, 40)] if n == 4 else []
        load_day(engine, day(n), [company("Bots")], usage)
    row = row_for(engine, day(7), "Bots")
    assert (row["active_users_7d"], row["is_churn_risk"]) == (0, False)
    assert row_for(engine, day(4), "Bots")["events"] == 40


def test_company_without_usage_gets_zeros(engine):
    load_day(engine, day(1), [company("A"), company("Idle")], [("A", 5, 50)])
    idle = row_for(engine, day(1), "Idle")
    assert (idle["active_users"], idle["events"], idle["active_users_7d"], idle["is_churn_risk"]) == (
        0,
        0,
        0,
        None,
    )


def test_renamed_company_takes_the_name_of_each_days_snapshot(engine):
    load_day(engine, day(1), [company("R", "Old Name Ltd")], [("R", 1, 1)])
    load_day(engine, day(2), [company("R", "New Name Ltd")], [("R", 1, 1)])
    assert row_for(engine, day(1), "R")["company_name"] == "Old Name Ltd"
    assert row_for(engine, day(2), "R")["company_name"] == "New Name Ltd"


def test_orphan_usage_gets_a_row_with_null_crm_columns_and_is_counted(engine):
    result = load_day(engine, day(1), [company("Known")], [("Known", 1, 1), ("Ghost", 7, 70)])
    ghost = row_for(engine, day(1), "Ghost")
    assert (ghost["company_name"], ghost["country"], ghost["industry_tag"], ghost["last_contact_at"]) == (
        None,
    ) * 4
    assert (ghost["active_users"], ghost["events"], ghost["active_users_7d"]) == (7, 70, 7)
    assert (result.crm_rows, result.usage_rows, result.orphan_rows, result.output_rows) == (1, 2, 1, 2)


def test_timestamp_with_offset_is_stored_in_utc(engine):
    contacted = parse_timestamp("2026-10-20T10:30:00+02:00")
    load_day(engine, day(1), [company("TZ", last_contact_at=contacted)], [])
    assert row_for(engine, day(1), "TZ")["last_contact_at"] == "2026-10-20 08:30:00"


def test_gap_in_loaded_days_counts_zero_and_keeps_churn_null(engine):
    for n in (1, 2, 3, 5, 6, 7, 8):  # day 4 never loaded
        load_day(engine, day(n), [company("G")], [("G", 10, 10)] if n == 4 else [])
    assert row_for(engine, day(8), "G")["is_churn_risk"] is None  # window 2..8 lacks day 4
    assert row_for(engine, day(8), "G")["active_users_7d"] == 0


def test_filling_a_gap_later_recomputes_the_days_after_it(engine):
    for n in (1, 2, 3, 5, 6, 7, 8):
        load_day(engine, day(n), [company("G")], [])
    assert row_for(engine, day(7), "G")["is_churn_risk"] is None
    load_day(engine, day(4), [company("G")], [("G", 10, 10)])
    assert [row_for(engine, day(n), "G")["active_users_7d"] for n in (3, 4, 8)] == [0, 10, 10]
    assert row_for(engine, day(7), "G")["is_churn_risk"] is False  # window 1..7 is now fully loaded
    assert row_for(engine, day(8), "G")["is_churn_risk"] is False


def test_rerunning_a_day_changes_nothing(engine):
    for n in range(1, 9):
        load_day(engine, day(n), [company("A"), company("B")], [("A", n, n)])
    before = table_rows(engine)
    load_day(engine, day(4), [company("A"), company("B")], [("A", 4, 4)])
    load_day(engine, day(4), [company("A"), company("B")], [("A", 4, 4)])
    assert table_rows(engine) == before


def test_late_correction_recomputes_the_following_six_loaded_days_only(engine):
    for n in range(1, 12):
        load_day(engine, day(n), [company("A")], [("A", 1, 1)])
    result = load_day(engine, day(3), [company("A")], [("A", 101, 1)], tag="corrected")
    assert result.recomputed_days == tuple(day(n) for n in range(3, 10))
    assert [row_for(engine, day(n), "A")["active_users_7d"] for n in range(1, 12)] == [
        1,
        2,
        103,
        104,
        105,
        106,
        107,
        107,
        107,
        7,
        7,
    ]


def test_loading_days_in_shuffled_order_gives_the_same_table(tmp_path, warehouse):
    schedule = _random_history(seed=11, days=15, companies=12)

    shuffled_engine = open_warehouse(warehouse)
    order = list(schedule)
    random.Random(5).shuffle(order)
    for activity_date in order:
        load_day(shuffled_engine, activity_date, *schedule[activity_date])
    shuffled = table_rows(shuffled_engine)

    in_order_engine = open_warehouse(WarehouseSettings(f"sqlite:///{tmp_path / 'in_order.db'}"))
    for activity_date in sorted(schedule):
        load_day(in_order_engine, activity_date, *schedule[activity_date])
    assert shuffled == table_rows(in_order_engine)
    assert len(shuffled) >= 15 * 12


def _random_history(seed: int, days: int, companies: int) -> dict:
    rng = random.Random(seed)
    schedule = {}
    for n in range(1, days + 1):
        crm = [
            company(f"C{i:03d}", f"Name {i} v{n // 5}") for i in range(companies) if not (i == 0 and n < 4)
        ]
        usage = [
            (f"C{i:03d}", rng.randint(0, 5), rng.randint(0, 3))
            for i in range(companies + 2)  # two orphans
            if rng.random() < 0.6
        ]
        schedule[day(n)] = (crm, usage)
    return schedule


def test_a_failing_merge_leaves_the_table_exactly_as_it_was(engine):
    for n in range(1, 4):
        load_day(engine, day(n), [company("A")], [("A", n, n)])
    before = table_rows(engine, with_loaded_at=True)

    def violate_primary_key(connection, result):
        connection.execute(
            sa.text(
                query(
                    connection,
                    "INSERT INTO {analytics}.company_daily_activity "
                    "(activity_date, company_id, active_users, events, record_loaded_at) "
                    "VALUES (:day, 'A', 0, 0, :at)",
                )
            ).bindparams(
                sa.bindparam("day", day(2), type_=sa.Date()), sa.bindparam("at", dt.datetime(2026, 1, 1))
            )
        )

    staging.stage_usage(engine, day(2), [("A", 99, 99)], "test", "changed")
    with pytest.raises(sa.exc.IntegrityError):
        merge.merge_day(engine, day(2), before_commit=violate_primary_key)
    assert table_rows(engine, with_loaded_at=True) == before
    with engine.connect() as connection:
        assert ledger.loaded_day(connection, day(2))["usage_landing_id"] == "test-2026-11-02-"


def test_merge_refuses_a_day_whose_usage_is_not_staged(engine):
    staging.stage_crm(engine, day(1), CrmSnapshot("test", [company("A")]), "x")
    with pytest.raises(merge.MergeError, match="product usage for 2026-11-01 is not staged"):
        merge.merge_day(engine, day(1))


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_the_postgresql_full_join_variant_writes_the_rows_of_the_common_statement(engine, monkeypatch):
    """sql/marts/insert_company_daily_activity_day.postgresql.sql against the common file it replaces on
    PostgreSQL, on the same staged days: companies with and without usage, orphans, a company leaving
    the snapshot, a snapshot reused for a day without one."""
    from pipeline.warehouse import sql

    rng = random.Random(11)
    ids = [f"C{index}" for index in range(40)]
    for n in range(1, 10):
        snapshot = [company(company_id) for company_id in ids[: 30 + n] if rng.random() < 0.9]
        usage = [
            (company_id, rng.randint(0, 3), rng.randint(0, 2)) for company_id in ids if rng.random() < 0.6
        ]
        landing_id = f"test-{n}"
        if n != 5:  # day 5 uses day 4's snapshot
            staging.stage_crm(engine, day(n), CrmSnapshot(source="test", companies=snapshot), landing_id)
        staging.stage_usage(engine, day(n), usage, "test", landing_id)
    for n in (1, 2, 3, 4, 5, 6, 7, 9, 8):  # day 8 late: D+1 recomputed
        merge.merge_day(engine, day(n))
    with_variant = table_rows(engine)
    assert any(row[2] is None for row in with_variant), "orphans must be among the rows"

    common = (sql.project.sql_dir() / "marts/insert_company_daily_activity_day.sql").read_text(
        encoding="utf-8"
    )
    original = sql.read_sql.__wrapped__
    monkeypatch.setattr(
        sql,
        "read_sql",
        lambda name, family: (
            common if name == "marts/insert_company_daily_activity_day" else original(name, family)
        ),
    )
    sql.rendered_sql.cache_clear()
    try:
        for n in (1, 2, 3, 4, 5, 6, 7, 8, 9):
            merge.merge_day(engine, day(n))
        assert table_rows(engine) == with_variant
    finally:
        monkeypatch.undo()
        sql.rendered_sql.cache_clear()
