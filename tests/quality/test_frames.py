"""The validation frames read back from the warehouse: the same DataFrame (dtypes and values) as the cursor
read they replace, on every backend, whatever the values."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import query

from pipeline.quality import frames
from pipeline.warehouse.sql import run_sql

DAY = dt.date(2026, 11, 20)
OTHER_DAY = DAY - dt.timedelta(days=1)


# -- the reference: the read-back as it was before COPY, kept verbatim as the oracle --------------------


def reference_frame(result: Any) -> pd.DataFrame:
    columns = list(result.keys())
    cursor = getattr(result, "cursor", None)
    rows = cursor.fetchall() if cursor is not None else [tuple(row) for row in result.fetchall()]
    result.close()
    return pd.DataFrame(rows, columns=columns)


def reference_crm_frame(connection: sa.Connection, snapshot_date: dt.date) -> pd.DataFrame:
    frame = reference_frame(run_sql(connection, "staging/select_staged_crm_day", snapshot_date=snapshot_date))
    loaded = frame["last_contact_at"]
    parsed = pd.to_datetime(loaded, errors="coerce", format="ISO8601").astype("datetime64[ns]")
    unparseable = parsed.isna() & loaded.notna()
    frame["last_contact_at"] = parsed
    frame["last_contact_at_unparseable"] = loaded.astype(object).where(unparseable, None)
    return frame


def reference_usage_frame(connection: sa.Connection, activity_date: dt.date) -> pd.DataFrame:
    frame = reference_frame(
        run_sql(connection, "staging/select_staged_usage_day", activity_date=activity_date)
    )
    if frame.empty:
        frame = frame.astype({"company_id": object, "active_users": "int64", "events": "int64"})
    return frame


def reference_output_frame(connection: sa.Connection, activity_date: dt.date) -> pd.DataFrame:
    frame = reference_frame(
        run_sql(
            connection,
            "quality/select_company_daily_activity_day_for_validation",
            activity_date=activity_date,
        )
    )
    raw = frame["is_churn_risk"]
    known = raw.notna()
    flags = pd.Series(None, index=frame.index, dtype=object)
    flags[known] = raw[known].astype(bool)
    frame["is_churn_risk"] = flags
    return frame


PAIRS = [
    (frames.crm_frame, reference_crm_frame),
    (frames.usage_frame, reference_usage_frame),
    (frames.output_frame, reference_output_frame),
]


def assert_identical(new: pd.DataFrame, old: pd.DataFrame) -> None:
    """Equal dtypes and values, and NULLs of the same kind (None and NaN are not interchangeable: the
    examples of the results print them)."""
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    for column in old.columns:
        assert [type(value) for value in new[column]] == [type(value) for value in old[column]], column


# -- the awkward values -----------------------------------------------------------------------------------

AWKWARD_IDS = [
    "plain",
    " leading and trailing spaces ",
    "",
    "NA",
    "null",
    "NULL",
    r"\N",
    "comma,inside",
    'a "quoted" one',
    "'single'",
    "new\nline",
    "carriage\r\nreturn",
    "tab\there",
    "back\\slash",
    "ünïcødé €",
    "emoji 🚀",
    "007",
    "1e5",
    "True",
]


def awkward_crm_rows(day: dt.date) -> list[dict[str, Any]]:
    rows = []
    for index, company_id in enumerate(AWKWARD_IDS):
        rows.append(
            {
                "d": day,
                "i": company_id,
                "n": [None, "", "Acme, Inc.", 'the "best"', "NA", "x\ny"][index % 6],
                "c": [None, "DE", "", "nan"][index % 4],
                "t": [None, "saas", "N/A", " "][index % 4],
                "l": [
                    None,
                    dt.datetime(2026, 11, 19, 8, 30, 0),
                    dt.datetime(2026, 11, 19, 8, 30, 0, 123456),
                    dt.datetime(2026, 11, 19, 23, 59, 59, 1),
                    dt.datetime(1970, 1, 1),
                ][index % 5],
            }
        )
    return rows


def insert(connection: sa.Connection, statement: str, rows: list[dict[str, Any]]) -> None:
    connection.execute(sa.text(query(connection, statement)), rows)


def stage_awkward_day(connection: sa.Connection, day: dt.date) -> None:
    insert(
        connection,
        "INSERT INTO {stg}.crm_daily (snapshot_date, company_id, company_name, country, industry_tag, "
        "last_contact_at) VALUES (:d, :i, :n, :c, :t, :l)",
        awkward_crm_rows(day),
    )
    insert(
        connection,
        "INSERT INTO {stg}.product_usage_daily (activity_date, company_id, active_users, events) "
        "VALUES (:d, :i, :a, :e)",
        [
            {"d": day, "i": company_id, "a": index, "e": 2**31 - 1 - index}
            for index, company_id in enumerate(AWKWARD_IDS)
        ],
    )
    insert(
        connection,
        "INSERT INTO {analytics}.company_daily_activity (activity_date, company_id, company_name, country, "
        'industry_tag, last_contact_at, active_users, events, "7d_active_users", is_churn_risk, '
        "record_loaded_at) VALUES (:d, :i, NULL, NULL, NULL, NULL, :a, :e, :s, :r, :at)",
        [
            {
                "d": day,
                "i": company_id,
                "a": index,
                "e": index * 10,
                "s": [None, 0, 7, 2**31 - 1][index % 4],
                "r": [None, True, False][index % 3],
                "at": dt.datetime(2026, 11, 21, 1, 2, 3, 456789),
            }
            for index, company_id in enumerate(AWKWARD_IDS)
        ],
    )


# -- tests ------------------------------------------------------------------------------------------------


def test_awkward_values_read_back_as_the_cursor_read_them(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        stage_awkward_day(connection, DAY)
    with engine.connect() as connection:
        for new, old in PAIRS:
            expected = old(connection, DAY)
            assert len(expected) == len(AWKWARD_IDS)
            assert_identical(new(connection, DAY), expected)
        crm = frames.crm_frame(connection, DAY)
    # What the oracle itself must have read, so that it is not equal to a frame that is wrong in the same way.
    by_id = crm.set_index("company_id")
    assert set(by_id.index) == set(AWKWARD_IDS)
    assert by_id.loc["", "company_name"] == "Acme, Inc."
    assert by_id.loc["NA", "company_name"] == 'the "best"'
    assert by_id.loc["null", "company_name"] == "NA"
    assert by_id.loc[" leading and trailing spaces ", "company_name"] == ""
    assert pd.isna(by_id.loc["plain", "company_name"])
    assert by_id.loc["", "last_contact_at"] == pd.Timestamp("2026-11-19 08:30:00.123456")


def test_columns_null_in_every_row_read_back_as_the_cursor_read_them(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        insert(
            connection,
            "INSERT INTO {stg}.crm_daily (snapshot_date, company_id) VALUES (:d, :i)",
            [{"d": DAY, "i": "A"}, {"d": DAY, "i": "B"}],
        )
        insert(
            connection,
            "INSERT INTO {analytics}.company_daily_activity "
            "(activity_date, company_id, active_users, events, record_loaded_at) VALUES (:d, :i, 1, 2, :at)",
            [{"d": DAY, "i": "A", "at": dt.datetime(2026, 11, 21)}],
        )
    with engine.connect() as connection:
        for new, old in PAIRS:
            assert_identical(new(connection, DAY), old(connection, DAY))
        assert frames.output_frame(connection, DAY)["7d_active_users"].tolist() == [None]


def test_an_empty_day_reads_back_as_the_cursor_read_it(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        stage_awkward_day(connection, OTHER_DAY)  # rows of another day must not leak in
    with engine.connect() as connection:
        for new, old in PAIRS:
            expected = old(connection, DAY)
            assert expected.empty
            assert_identical(new(connection, DAY), expected)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_unparseable_contact_times_read_back_as_the_cursor_read_them(engine: sa.Engine) -> None:
    """Only SQLite keeps text that is not a timestamp in a TIMESTAMP column: the values as loaded."""
    loaded = ["2026-11-19 08:30:00", "not a date", "", "2026-13-45 25:00:00", None, "2026-11-19T08:30:00.5"]
    with engine.begin() as connection:
        insert(
            connection,
            "INSERT INTO {stg}.crm_daily (snapshot_date, company_id, last_contact_at) VALUES (:d, :i, :l)",
            [{"d": DAY, "i": f"C{index}", "l": value} for index, value in enumerate(loaded)],
        )
    with engine.connect() as connection:
        frame = frames.crm_frame(connection, DAY)
        assert_identical(frame, reference_crm_frame(connection, DAY))
    assert frame["last_contact_at_unparseable"].tolist() == [
        None,
        "not a date",
        "",
        "2026-13-45 25:00:00",
        None,
        None,
    ]


def test_the_output_check_reads_the_merges_uncommitted_day(engine: sa.Engine) -> None:
    """The output suite runs inside the merge's transaction: the read-back must see its own writes."""
    with engine.begin() as connection:
        stage_awkward_day(connection, DAY)
        frame = frames.output_frame(connection, DAY)
        assert_identical(frame, reference_output_frame(connection, DAY))
        assert len(frame) == len(AWKWARD_IDS)
        connection.rollback()
    with engine.connect() as connection:
        assert frames.output_frame(connection, DAY).empty


@pytest.mark.parametrize("warehouse", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgres_reads_back_through_copy(engine: sa.Engine) -> None:
    """On PostgreSQL the rows come from COPY ... TO STDOUT (not a cursor): NULL unquoted, text quoted."""
    with engine.begin() as connection:
        stage_awkward_day(connection, DAY)
    buffer = io.BytesIO()
    with engine.connect() as connection:
        encoding = frames.copy_out(connection, "staging/select_staged_crm_day", buffer, snapshot_date=DAY)
    text = buffer.getvalue().decode(encoding)
    assert text.splitlines()[0] == "company_id,company_name,country,industry_tag,last_contact_at"
    assert '"plain",,,,\n' in text
    assert '" leading and trailing spaces ","","DE","saas","2026-11-19 08:30:00"\n' in text
    assert '"NA","the ""best""","nan"," ","2026-11-19 23:59:59.000001"\n' in text
