"""Staging a day replaces that day only, on every backend; on PostgreSQL each staged day is a partition
of its own (loaded unkeyed, keyed when attached), and a warehouse created before that is still staged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import company, make_warehouse, query

from pipeline.sources.crm_snapshot import CrmSnapshot
from pipeline.warehouse import staging
from pipeline.warehouse.engine import create_engine, open_warehouse
from pipeline.warehouse.sql import BulkLoadError, read_sql, split_statements, with_schema_names

DAY = dt.date(2026, 11, 1)
NEXT_DAY = DAY + dt.timedelta(days=1)


def stage_companies(engine: sa.Engine, day: dt.date, ids: list[str], tag: str = "") -> int:
    snapshot = CrmSnapshot(
        source="test", companies=[company(company_id, f"{company_id}{tag}") for company_id in ids]
    )
    return staging.stage_crm(engine, day, snapshot, f"landing-{day}-{tag}")


def staged(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        crm = connection.exec_driver_sql(
            query(
                connection,
                "SELECT 'crm', snapshot_date, company_id, company_name FROM {stg}.crm_daily "
                "ORDER BY snapshot_date, company_id",
            )
        ).all()
        usage = connection.exec_driver_sql(
            query(
                connection,
                "SELECT 'usage', activity_date, company_id, active_users FROM {stg}.product_usage_daily "
                "ORDER BY activity_date, company_id",
            )
        ).all()
    return [(kind, str(day)[:10], company_id, value) for kind, day, company_id, value in [*crm, *usage]]


def stage_three_loads(engine: sa.Engine) -> None:
    """Two days, then the first one again with other rows: what a refresh does."""
    stage_companies(engine, DAY, ["A", "B", "C"], "-v1")
    staging.stage_usage(engine, DAY, [("A", 1, 1), ("B", 2, 2)], "test", "u1")
    stage_companies(engine, NEXT_DAY, ["A", "D"], "-v1")
    staging.stage_usage(engine, NEXT_DAY, [("D", 4, 4)], "test", "u2")
    stage_companies(engine, DAY, ["B", "E"], "-v2")
    staging.stage_usage(engine, DAY, [("E", 5, 5)], "test", "u3")


EXPECTED_AFTER_THREE_LOADS = [
    ("crm", "2026-11-01", "B", "B-v2"),
    ("crm", "2026-11-01", "E", "E-v2"),
    ("crm", "2026-11-02", "A", "A-v1"),
    ("crm", "2026-11-02", "D", "D-v1"),
    ("usage", "2026-11-01", "E", 5),
    ("usage", "2026-11-02", "D", 4),
]


def test_restaging_a_day_replaces_that_day_and_keeps_the_others(engine: sa.Engine) -> None:
    stage_three_loads(engine)
    assert staged(engine) == EXPECTED_AFTER_THREE_LOADS


def test_a_failed_restage_leaves_the_day_as_it_was(engine: sa.Engine) -> None:
    stage_three_loads(engine)
    with pytest.raises(BulkLoadError, match=r"into \S*product_usage_daily failed"):
        staging.stage_usage(engine, DAY, [("X", 1, 1), ("X", 2, 2)], "test", "u4")
    with pytest.raises(BulkLoadError, match=r"into \S*crm_daily\S* failed"):
        stage_companies(engine, NEXT_DAY, ["Y", "Y"], "-v3")
    assert staged(engine) == EXPECTED_AFTER_THREE_LOADS


def partitions(engine: sa.Engine, table: str) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT child.relname, pg_get_expr(child.relpartbound, child.oid) FROM pg_inherits "
                "JOIN pg_class AS child ON child.oid = pg_inherits.inhrelid "
                "WHERE pg_inherits.inhparent = CAST(:parent AS regclass) ORDER BY child.relname"
            ),
            {"parent": with_schema_names(connection, table)},
        ).all()


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_on_postgresql_each_staged_day_is_a_keyed_partition_of_its_own(engine: sa.Engine) -> None:
    stage_three_loads(engine)
    assert partitions(engine, "{stg}.crm_daily") == [
        ("crm_daily_20261101", "FOR VALUES IN ('2026-11-01')"),
        ("crm_daily_20261102", "FOR VALUES IN ('2026-11-02')"),
        ("crm_daily_default", "DEFAULT"),
    ]
    assert [name for name, _ in partitions(engine, "{stg}.product_usage_daily")] == [
        "product_usage_daily_20261101",
        "product_usage_daily_20261102",
        "product_usage_daily_default",
    ]
    with engine.connect() as connection:
        keys = connection.exec_driver_sql(
            query(
                connection,
                "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = "
                "(SELECT nspname FROM pg_namespace WHERE oid = CAST('{stg}' AS regnamespace)) "
                "AND tablename = 'crm_daily_20261101'",
            )
        ).all()
        analyzed = connection.exec_driver_sql(
            query(
                connection,
                "SELECT reltuples FROM pg_class WHERE oid = CAST('{stg}.crm_daily_20261101' AS regclass)",
            )
        ).scalar_one()
    # The key was built when the day was attached, and the planner has its statistics.
    assert len(keys) == 1 and "UNIQUE INDEX" in keys[0][1] and "(snapshot_date, company_id)" in keys[0][1]
    assert analyzed == 2


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_rows_written_outside_staging_are_replaced_when_their_day_is_staged(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                query(
                    connection,
                    "INSERT INTO {stg}.crm_daily (snapshot_date, company_id, company_name) "
                    "VALUES (:day, 'OLD', 'by hand'), (:next_day, 'KEPT', 'by hand')",
                )
            ),
            {"day": DAY, "next_day": NEXT_DAY},
        )
    stage_companies(engine, DAY, ["A"], "-v1")
    assert [row for row in staged(engine) if row[0] == "crm"] == [
        ("crm", "2026-11-01", "A", "A-v1"),
        ("crm", "2026-11-02", "KEPT", "by hand"),
    ]


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_failure_half_way_through_a_partitioned_restage_rolls_back_whole(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage_three_loads(engine)

    def fail_once_loaded(point: str) -> None:
        if point == "stage:inserted":  # the old partition dropped, the new rows loaded, not attached
            raise RuntimeError("the staging process failed here")

    monkeypatch.setattr(staging, "fault_point", fail_once_loaded)
    with pytest.raises(RuntimeError, match="failed here"):
        stage_companies(engine, DAY, ["Z"], "-v9")
    assert staged(engine) == EXPECTED_AFTER_THREE_LOADS
    assert "crm_daily_20261101" in [name for name, _ in partitions(engine, "{stg}.crm_daily")]


def test_an_unpartitioned_postgresql_warehouse_of_before_is_staged_the_same(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A warehouse whose staged tables were created by the common DDL (before the partitioned variant)
    keeps them, and staging it gives the same rows."""
    request.applymarker(pytest.mark.postgres)
    with make_warehouse("postgres", request, tmp_path) as warehouse:
        bare = create_engine(warehouse)  # the warehouse's engine, its tables not created yet
        with bare.begin() as connection:
            connection.exec_driver_sql(query(connection, "CREATE SCHEMA {stg}"))
            for statement in split_statements(read_sql("schema/stg", "sqlite")):  # the common file
                connection.exec_driver_sql(query(connection, statement))
        engine = open_warehouse(warehouse)
        stage_three_loads(engine)
        assert staged(engine) == EXPECTED_AFTER_THREE_LOADS
        assert partitions(engine, "{stg}.crm_daily") == []
        with pytest.raises(BulkLoadError, match=r"into \S*product_usage_daily failed"):
            staging.stage_usage(engine, DAY, [("X", 1, 1), ("X", 2, 2)], "test", "u4")
        assert staged(engine) == EXPECTED_AFTER_THREE_LOADS
