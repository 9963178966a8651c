"""Staging a day replaces that day only, on every backend; on PostgreSQL each staged day is a partition
of its own (loaded unkeyed, keyed when attached), and a warehouse created before that is still staged.
On PostgreSQL a day is staged while another is merged, and a merge waits for the re-staging of its day."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import company, make_warehouse, query

from pipeline.sources import crm_columnar, crm_location, crm_snapshot
from pipeline.sources.crm_snapshot import CrmSnapshot, CrmSnapshotError
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import create_engine, lock_warehouse_for_writing, open_warehouse
from pipeline.warehouse.sql import (
    BulkLoadError,
    normalise_value,
    read_sql,
    split_statements,
    with_schema_names,
)

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
def test_on_postgresql_a_row_of_another_day_is_refused_as_it_is_loaded(engine: sa.Engine) -> None:
    """The day's table carries the day as a constraint (the ATTACH then need not scan it): a row of
    another date fails the load, and the day stays as it was."""
    from pipeline.datasets import STAGED_USAGE_COLUMNS, USAGE
    from pipeline.warehouse.sql import bulk_insert

    stage_three_loads(engine)

    def other_day_row(connection: sa.Connection, target: str) -> int:
        return bulk_insert(
            connection, target, STAGED_USAGE_COLUMNS, [(DAY, "Z", 1, 1), (NEXT_DAY, "Y", 1, 1)]
        )

    with pytest.raises(BulkLoadError, match="staged_day"):
        staging._stage_day(engine, USAGE, DAY, other_day_row, "test", "u9")
    assert staged(engine) == EXPECTED_AFTER_THREE_LOADS


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
    request: pytest.FixtureRequest, tmp_path: Path, small_chunks: None
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
        # A landed file streamed in chunks into the keyed table: a duplicate in a later chunk is refused
        # by the key during the COPY and named by the precise parser; the day stays as it was.
        duplicate = land_crm(tmp_path / "duplicate", DAY, [*many_companies(300), "C00007,Again,DE,saas,"])
        with pytest.raises(CrmSnapshotError, match=r"row 301 \(line 302\), column 'company_id'"):
            staging.stage_landed_crm(engine, DAY, duplicate)
        assert staged(engine) == EXPECTED_AFTER_THREE_LOADS
        result = staging.stage_landed_crm(engine, DAY, land_crm(tmp_path / "valid", DAY, many_companies(300)))
        assert (result.rows, result.reader) == (300, "columnar")
        assert [row[2] for row in staged(engine) if row[:2] == ("crm", "2026-11-01")] == [
            f"C{index:05d}" for index in range(300)
        ]


class PausedStaging:
    """Stages in a thread of its own, paused inside its transaction once its rows are loaded (the lock of
    its day held, nothing committed) until :meth:`resume`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: Callable[[], object]) -> None:
        self.loaded, self.released = threading.Event(), threading.Event()
        self.error: BaseException | None = None

        def pause_when_loaded(point: str) -> None:
            if point == "stage:inserted" and threading.current_thread() is self.thread:
                self.loaded.set()
                assert self.released.wait(60), "the test never resumed the paused staging"

        monkeypatch.setattr(staging, "fault_point", pause_when_loaded)
        self.thread = threading.Thread(target=self._run, args=(stage,), name="paused staging")
        self.thread.start()
        assert self.loaded.wait(30), "the paused staging never loaded its rows"

    def _run(self, stage: Callable[[], object]) -> None:
        try:
            stage()
        except BaseException as error:  # handed to the test thread by resume()
            self.error = error

    def resume(self) -> None:
        self.released.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # the test asserts on it
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_on_postgresql_a_day_is_staged_while_a_merge_holds_the_write_lock(engine: sa.Engine) -> None:
    stage_three_loads(engine)
    with engine.begin() as merging:  # what a merge of DAY holds: the write lock, its staged day read
        lock_warehouse_for_writing(merging)
        for table, column in (("crm_daily", "snapshot_date"), ("product_usage_daily", "activity_date")):
            statement = f"SELECT count(*) FROM {{stg}}.{table} WHERE {column} = :day"
            merging.execute(sa.text(query(merging, statement)), {"day": DAY}).scalar_one()
        third_day = NEXT_DAY + dt.timedelta(days=1)
        thread, outcome = in_thread(
            lambda: (
                stage_companies(engine, third_day, ["F"], "-v1"),
                staging.stage_usage(engine, third_day, [("F", 6, 6)], "test", "u5"),
            )
        )
        thread.join(30)
        assert not thread.is_alive(), "staging another day waited for the merge"
    assert "error" not in outcome
    assert ("usage", str(third_day), "F", 6) in staged(engine)


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_on_postgresql_a_merge_waits_for_the_restaging_of_its_day_and_reads_it_whole(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage_three_loads(engine)
    restaging = PausedStaging(
        monkeypatch, lambda: staging.stage_usage(engine, DAY, [("B", 7, 7), ("E", 8, 8)], "test", "u6")
    )
    thread, outcome = in_thread(lambda: merge.merge_day(engine, DAY))
    thread.join(1.0)
    assert thread.is_alive(), "the merge did not wait for the re-staging of its day"
    restaging.resume()
    thread.join(30)
    result = outcome["result"]
    assert isinstance(result, merge.MergeResult)
    # The load record and the rows of one staging: the re-staged one, committed before the merge read it.
    assert (result.usage_rows, result.crm_rows) == (2, 2)
    with engine.connect() as connection:
        merged = connection.exec_driver_sql(
            query(
                connection,
                "SELECT company_id, active_users FROM {analytics}.company_daily_activity ORDER BY 1",
            )
        ).all()
    assert [tuple(row) for row in merged] == [("B", 7), ("E", 8)]


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_on_postgresql_two_days_of_one_table_staged_at_once_go_one_after_the_other(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two days staged for the first time: both delete their day from the default partition before
    attaching, and attaching locks it whole. Without the table lock taken first, the two would deadlock
    and PostgreSQL would fail one."""
    stage_three_loads(engine)
    days = [NEXT_DAY + dt.timedelta(days=k) for k in (1, 2)]
    with engine.begin() as connection:  # rows by hand in the default partition, for both days
        connection.execute(
            sa.text(
                query(
                    connection,
                    "INSERT INTO {stg}.product_usage_daily (activity_date, company_id, active_users, events) "
                    "VALUES (:first, 'OLD', 1, 1), (:second, 'OLD', 1, 1)",
                )
            ),
            {"first": days[0], "second": days[1]},
        )
    first = PausedStaging(
        monkeypatch, lambda: staging.stage_usage(engine, days[0], [("G", 1, 1)], "test", "u7")
    )
    thread, outcome = in_thread(lambda: staging.stage_usage(engine, days[1], [("H", 2, 2)], "test", "u8"))
    thread.join(1.0)
    assert thread.is_alive(), "the second staging of the table did not wait for the first"
    first.resume()
    thread.join(30)
    assert outcome == {"result": 1}
    usage = [row for row in staged(engine) if row[0] == "usage"]
    assert usage == [
        ("usage", "2026-11-01", "E", 5),
        ("usage", "2026-11-02", "D", 4),
        ("usage", str(days[0]), "G", 1),
        ("usage", str(days[1]), "H", 2),
    ]


# -- a landed CRM file, staged as it is read ------------------------------------------------------------

CRM_HEADER = "company_id,company_name,country,industry_tag,last_contact_at\r\n"


def land_crm(tmp_path: Path, day: dt.date, lines: list[str]) -> Path:
    """The CRM file of ``day`` landed as FetchCrmSnapshot lands it; returns the data folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / f"crm_{day.isoformat()}.csv"
    source.write_bytes((CRM_HEADER + "".join(line + "\r\n" for line in lines)).encode("utf-8"))
    data_dir = tmp_path / "data"
    crm_location.land_snapshot(str(tmp_path / "crm_{date}.csv"), data_dir, day)
    return data_dir


def many_companies(count: int, start: int = 0) -> list[str]:
    return [
        f'C{index:05d},"Company {index}, Ltd",DE,saas,'
        f"2026-10-{1 + index % 28:02d}T08:{index % 60:02d}:00+02:00"
        for index in range(start, start + count)
    ]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few hundred bytes: a file of a few hundred lines is loaded in dozens of them."""
    monkeypatch.setattr(crm_columnar, "CHUNK_BYTES", 600)


def test_a_landed_file_is_staged_chunk_by_chunk_with_the_precise_parsers_rows(
    engine: sa.Engine, tmp_path: Path, small_chunks: None
) -> None:
    data_dir = land_crm(tmp_path, DAY, many_companies(500))
    result = staging.stage_landed_crm(engine, DAY, data_dir)
    assert (result.rows, result.reader, result.warnings) == (500, "columnar", [])
    expected = crm_snapshot.read_landed_snapshot(data_dir, DAY)[1].companies
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query(
                connection,
                "SELECT company_id, company_name, country, industry_tag, last_contact_at "
                "FROM {stg}.crm_daily ORDER BY company_id",
            )
        ).all()
    assert [tuple(normalise_value(value) for value in row) for row in rows] == [
        tuple(normalise_value(value) for value in company.as_row()) for company in expected
    ]
    assert normalise_value(rows[0][4]) == "2026-10-01 06:00:00"  # +02:00 stored as UTC


def test_a_duplicate_id_in_a_later_chunk_is_named_by_row_and_the_day_stays_as_it_was(
    engine: sa.Engine, tmp_path: Path, small_chunks: None
) -> None:
    stage_companies(engine, DAY, ["A", "B"], "-v1")
    data_dir = land_crm(tmp_path, DAY, [*many_companies(300), "C00007,Again,DE,saas,"])
    with pytest.raises(CrmSnapshotError, match=r"row 301 \(line 302\), column 'company_id'.*C00007"):
        staging.stage_landed_crm(engine, DAY, data_dir)
    assert [row for row in staged(engine) if row[0] == "crm"] == [
        ("crm", "2026-11-01", "A", "A-v1"),
        ("crm", "2026-11-01", "B", "B-v1"),
    ]


def test_a_bad_value_in_a_later_chunk_is_named_by_the_precise_parser_and_nothing_is_staged(
    engine: sa.Engine, tmp_path: Path, small_chunks: None
) -> None:
    stage_companies(engine, DAY, ["A"], "-v1")
    data_dir = land_crm(tmp_path, DAY, [*many_companies(300), "C99999,Late,DE,saas,2026-02-30"])
    with pytest.raises(CrmSnapshotError, match=r"row 301 \(line 302\), column 'last_contact_at'"):
        staging.stage_landed_crm(engine, DAY, data_dir)
    assert [row for row in staged(engine) if row[0] == "crm"] == [("crm", "2026-11-01", "A", "A-v1")]


def test_a_valid_file_the_columns_cannot_prove_half_way_is_staged_whole_by_the_precise_parser(
    engine: sa.Engine, tmp_path: Path, small_chunks: None
) -> None:
    stage_companies(engine, DAY, ["A"], "-v1")
    lines = [*many_companies(300), 'C99999,"Two\r\nlines",DE,saas,']  # a quoted line break: valid CSV
    result = staging.stage_landed_crm(engine, DAY, land_crm(tmp_path, DAY, lines))
    assert (result.rows, result.reader) == (301, "precise")
    crm = [row for row in staged(engine) if row[0] == "crm"]
    assert len(crm) == 301 and crm[-1] == ("crm", "2026-11-01", "C99999", "Two\r\nlines")


@pytest.mark.parametrize(
    "warehouse",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
    indirect=True,
)
def test_rows_the_warehouse_refuses_in_a_valid_file_fail_with_the_warehouses_reason(
    engine: sa.Engine, tmp_path: Path, small_chunks: None
) -> None:
    stage_companies(engine, DAY, ["A"], "-v1")
    too_long = "C" + "9" * 80  # a valid id by the contract, longer than the staged column (64)
    data_dir = land_crm(tmp_path, DAY, [*many_companies(300), f"{too_long},Long,DE,saas,"])
    with pytest.raises(BulkLoadError, match=r"crm_daily\S* failed"):
        staging.stage_landed_crm(engine, DAY, data_dir)
    assert [row for row in staged(engine) if row[0] == "crm"] == [("crm", "2026-11-01", "A", "A-v1")]
