"""COPY's binary format built on columns (pipeline/warehouse/pg_binary_copy.py): byte for byte what
PostgreSQL itself writes, every value back as given, and the text format wherever there is no exact
encoding."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa
from conftest import query

from pipeline import datasets
from pipeline.warehouse import pg_binary_copy
from pipeline.warehouse.sql import BulkLoadError, bulk_insert_columns, normalise_value

DAY = dt.date(2026, 11, 20)
STAGED_TYPES = [
    "date",
    "character varying",
    "character varying",
    "character varying",
    "character varying",
    "timestamp without time zone",
]

CRM_COLUMNS = pa.table(
    {
        "company_id": pa.array(["A", "Bé", "C\t\n\\N", "D"]),
        "company_name": pa.array(["", None, 'Zoë\'s "quoted", café ☕', "x" * 512]),
        "country": pa.array([None, "DE", "\r", "  "]),
        "industry_tag": pa.array(["saas", None, None, "retail"]),
        "last_contact_at": pa.array(
            [
                dt.datetime(2026, 11, 1, 8, 30),
                dt.datetime(1969, 12, 31, 23, 59, 59, 500000),
                None,
                dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            ],
            type=pa.timestamp("us"),
        ),
    }
)


def staged_rows(engine: sa.Engine, day: dt.date) -> list[tuple]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query(
                connection,
                "SELECT company_id, company_name, country, industry_tag, last_contact_at "
                f"FROM {{stg}}.crm_daily WHERE snapshot_date = '{day.isoformat()}' ORDER BY company_id",
            )
        ).all()
    return [tuple(normalise_value(value) for value in row) for row in rows]


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_the_binary_rows_are_byte_for_byte_what_postgresql_writes(engine: sa.Engine) -> None:
    """The oracle is PostgreSQL's own COPY ... TO STDOUT (FORMAT binary) of the same rows."""
    import io

    constants = {"snapshot_date": DAY}
    assert pg_binary_copy.binary_encoding(CRM_COLUMNS, constants, STAGED_TYPES)
    with engine.begin() as connection:
        bulk_insert_columns(connection, datasets.STAGED_CRM_TABLE, CRM_COLUMNS, constants=constants)
        written = io.BytesIO()
        cursor = connection.connection.cursor()
        cursor.copy_expert(
            query(
                connection,
                "COPY (SELECT snapshot_date, company_id, company_name, country, industry_tag, "
                "last_contact_at FROM {stg}.crm_daily ORDER BY company_id) TO STDOUT WITH (FORMAT binary)",
            ),
            written,
        )
    ours = pg_binary_copy.SIGNATURE
    ours += bytes(pg_binary_copy.binary_rows(CRM_COLUMNS, constants, STAGED_TYPES))
    ours += pg_binary_copy.TRAILER
    assert written.getvalue() == ours


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_integers_dates_and_nulls_come_back_as_given(engine: sa.Engine) -> None:
    usage = pa.table(
        {
            "company_id": pa.array(["A", "B", "C"]),
            "active_users": pa.array([0, 2**31 - 1, 7], type=pa.int64()),
            "events": pa.array([5, 0, 2**31 - 1], type=pa.int32()),
        }
    )
    usage_types = ["date", "character varying", "integer", "integer"]
    assert pg_binary_copy.binary_encoding(usage, {"activity_date": DAY}, usage_types)
    old_day = dt.date(1999, 12, 31)  # before PostgreSQL's epoch: a negative day number
    with engine.begin() as connection:
        for day in (DAY, old_day):
            bulk_insert_columns(
                connection, datasets.STAGED_USAGE_TABLE, usage, constants={"activity_date": day}
            )
        stored = connection.exec_driver_sql(
            query(
                connection,
                "SELECT activity_date, company_id, active_users, events FROM {stg}.product_usage_daily "
                "ORDER BY activity_date, company_id",
            )
        ).all()
    given = [
        (day, *row)
        for day in (old_day, DAY)
        for row in zip(*(usage[name].to_pylist() for name in usage.column_names), strict=True)
    ]
    assert [tuple(row) for row in stored] == given


def test_pairs_without_an_exact_encoding_are_left_to_the_text_format() -> None:
    ids = pa.array(["A"])
    cases = {
        "an integer beyond the column's range": (
            pa.table({"company_id": ids, "n": pa.array([2**31], pa.int64())}),
            ["character varying", "integer"],
        ),
        "a timestamp with a zone": (
            pa.table({"company_id": ids, "t": pa.array([0], pa.timestamp("us", tz="UTC"))}),
            ["character varying", "timestamp without time zone"],
        ),
        "nanoseconds": (
            pa.table({"company_id": ids, "t": pa.array([0], pa.timestamp("ns"))}),
            ["character varying", "timestamp without time zone"],
        ),
        "a float": (
            pa.table({"company_id": ids, "x": pa.array([1.5])}),
            ["character varying", "double precision"],
        ),
        "text into an integer column": (
            pa.table({"company_id": ids, "n": pa.array(["1"])}),
            ["character varying", "integer"],
        ),
        "a column the table does not have": (
            pa.table({"company_id": ids, "n": pa.array([1])}),
            ["character varying", ""],
        ),
    }
    for reason, (columns, types) in cases.items():
        assert not pg_binary_copy.binary_encoding(columns, {}, types), reason
    text_constant = {"snapshot_date": "2026-11-20"}
    assert not pg_binary_copy.binary_encoding(pa.table({"company_id": ids}), text_constant, STAGED_TYPES[:2])


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_value_longer_than_its_column_is_refused_in_the_binary_format_too(engine: sa.Engine) -> None:
    """The server checks a VARCHAR's length on binary input as on text: the load fails whole."""
    too_long = CRM_COLUMNS.set_column(0, "company_id", pa.array(["A", "B", "C", "x" * 65]))
    assert pg_binary_copy.binary_encoding(too_long, {"snapshot_date": DAY}, STAGED_TYPES)
    with (
        pytest.raises(BulkLoadError, match=r"bulk load of 4 rows into \S*crm_daily failed: .*too long"),
        engine.begin() as connection,
    ):
        bulk_insert_columns(connection, datasets.STAGED_CRM_TABLE, too_long, constants={"snapshot_date": DAY})
    assert staged_rows(engine, DAY) == []


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_column_without_an_exact_encoding_still_loads_by_the_text_format(engine: sa.Engine) -> None:
    """Integers in an int64 column that fit the INTEGER columns go binary; one beyond them goes as text,
    and the server's own error names it."""
    usage = pa.table(
        {"company_id": pa.array(["A"]), "active_users": pa.array([2**31]), "events": pa.array([1])}
    )
    with (
        pytest.raises(BulkLoadError, match="out of range for type integer"),
        engine.begin() as connection,
    ):
        bulk_insert_columns(connection, datasets.STAGED_USAGE_TABLE, usage, constants={"activity_date": DAY})
