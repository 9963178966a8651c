"""The SQL runner: configurable schema names, dialect variants, typed results and strict bulk loads,
on every backend."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PROJECT_ROOT, company, load_day, query, table_rows

from pipeline import datasets
from pipeline.sources.crm_snapshot import CrmCompany
from pipeline.warehouse import staging
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse, sqlite_schema_path
from pipeline.warehouse.sql import (
    BulkLoadError,
    SchemaNameError,
    SchemaNames,
    SqlContext,
    SqlTemplateError,
    WarehouseError,
    bulk_insert,
    read_sql,
    rendered_sql,
    run_sql,
    split_statements,
    sql_context,
)

DAY = dt.date(2026, 11, 1)
SQL_FILES = sorted(
    path.relative_to(PROJECT_ROOT / "sql").as_posix().removesuffix(".sql")
    for path in (PROJECT_ROOT / "sql").rglob("*.sql")
    if path.name.count(".") == 1  # common files; variants are name.<family>.sql
)


# -- schema names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stg, analytics",
    [
        ("Stg", "analytics"),  # upper case: MySQL servers fold table names differently per platform
        ("stg", "1analytics"),
        ("stg-2024", "analytics"),
        ("stg", "a" * 64),  # PostgreSQL truncates identifiers at 63 characters
        ("stg; DROP TABLE x", "analytics"),
        ("", "analytics"),
        ("same", "same"),
    ],
)
def test_bad_schema_names_are_refused_with_the_rule(stg: str, analytics: str) -> None:
    with pytest.raises(SchemaNameError, match=r"\[pipeline\] (stg|analytics)_schema"):
        WarehouseSettings("sqlite://", stg_schema=stg, analytics_schema=analytics)


def test_names_are_quoted_by_the_dialect_and_only_where_needed() -> None:
    postgres = sa.create_engine("postgresql+psycopg2://").dialect
    context = SqlContext.for_dialect(postgres, SchemaNames("select", "marts_2"))
    assert (
        context.render("SELECT * FROM {stg}.t JOIN {analytics}.u")
        == 'SELECT * FROM "select".t JOIN marts_2.u'
    )
    mysql = sa.create_engine("mysql+pymysql://").dialect
    context = SqlContext.for_dialect(mysql, SchemaNames("select", "marts_2"))
    assert (
        context.render("SELECT * FROM {stg}.t JOIN {analytics}.u")
        == "SELECT * FROM `select`.t JOIN marts_2.u"
    )


def test_an_unknown_placeholder_is_an_error_not_left_in_the_sql() -> None:
    context = SqlContext.for_dialect(sa.create_engine("sqlite://").dialect, SchemaNames())
    with pytest.raises(SqlTemplateError, match=r"sql/x\.sql has the placeholder \{date\}"):
        context.render("SELECT * FROM {stg}.t WHERE d = {date}", "sql/x.sql")
    # Binds stay binds: ":name" is never touched.
    assert context.render("SELECT :stg FROM {stg}.t") == "SELECT :stg FROM stg.t"


def test_every_sql_file_names_its_tables_through_the_placeholders() -> None:
    for path in (PROJECT_ROOT / "sql").rglob("*.sql"):
        code = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        assert not re.findall(r"(?<![\w{])(?:stg|analytics)\.\w", code), f"{path}: a fixed schema name"
        assert set(re.findall(r"\{([^{}]*)\}", code)) <= {"stg", "analytics"}, path


DIALECT_URLS = {
    "sqlite": "sqlite://",
    "postgresql": "postgresql+psycopg2://",
    "mysql": "mysql+pymysql://",
    "mariadb": "mariadb+pymysql://",
}


@pytest.mark.parametrize("family", sorted(DIALECT_URLS))
def test_every_sql_file_renders_for_every_dialect(family: str) -> None:
    url = DIALECT_URLS[family]
    context = SqlContext.for_dialect(sa.create_engine(url).dialect, SchemaNames("s1", "a1"))
    for name in SQL_FILES:
        text = rendered_sql(name, context)
        assert "{" not in text, name
        assert re.search(r"\b[sa]1\b", text), name  # a table of s1 or a1, or the schema itself


def test_the_variant_of_a_dialect_family_is_chosen_when_it_exists() -> None:
    common = (PROJECT_ROOT / "sql/schema/stg.sql").read_text(encoding="utf-8")
    variant = (PROJECT_ROOT / "sql/schema/stg.mysql.sql").read_text(encoding="utf-8")
    postgres_variant = (PROJECT_ROOT / "sql/schema/stg.postgresql.sql").read_text(encoding="utf-8")
    assert read_sql("schema/stg", "postgresql") == postgres_variant
    assert read_sql("schema/stg", "sqlite") == common
    assert read_sql("schema/stg", "mysql") == variant
    # MySQL and MariaDB are one family: the same variant for both URLs.
    for url in (DIALECT_URLS["mysql"], DIALECT_URLS["mariadb"]):
        context = SqlContext.for_dialect(sa.create_engine(url).dialect, SchemaNames())
        assert context.family == "mysql"
        assert "DATETIME(6)" in rendered_sql("schema/stg", context)
        update = rendered_sql("marts/update_rolling_activity_following_days", context)
        assert update.startswith("UPDATE analytics.company_daily_activity AS target\nJOIN (")


def test_ddl_statements_split_at_line_end_semicolons_but_never_inside_a_dollar_quoted_body() -> None:
    function = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n    PERFORM 1;\n"
    function += "    RETURN 2;\nEND\n$$"
    ddl = (
        "CREATE TABLE a (x INT); -- a comment; not a statement\n"
        f"{function};\n"
        "DO $$ BEGIN\n    PERFORM 3;\nEND $$;\n"
        "CREATE TABLE b (y INT)"
    )
    assert split_statements(ddl) == [
        "CREATE TABLE a (x INT)",
        function,
        "DO $$ BEGIN\n    PERFORM 3;\nEND $$",
        "CREATE TABLE b (y INT)",
    ]
    with pytest.raises(WarehouseError, match=r"unterminated \$\$"):
        split_statements("DO $$ BEGIN PERFORM 1;\nEND;\n")


def test_the_dialect_variants_are_the_expected_ones() -> None:
    variants = sorted(
        path.relative_to(PROJECT_ROOT / "sql").as_posix() for path in (PROJECT_ROOT / "sql").rglob("*.*.sql")
    )
    assert variants == [
        "marts/insert_company_daily_activity_day.postgresql.sql",
        "marts/update_rolling_activity_following_days.mysql.sql",
        "schema/analytics.mysql.sql",
        "schema/stg.mysql.sql",
        "schema/stg.postgresql.sql",
        "schema/validation.mysql.sql",
    ]
    for variant in variants:
        common = re.sub(r"\.(mysql|postgresql)\.sql$", ".sql", variant)
        assert (PROJECT_ROOT / "sql" / common).exists(), variant


def test_a_sqlite_warehouse_attaches_the_configured_names(tmp_path: Path) -> None:
    warehouse = WarehouseSettings(
        f"sqlite:///{tmp_path / 'w.db'}", stg_schema="raw", analytics_schema="marts"
    )
    engine = open_warehouse(warehouse)
    load_day(engine, DAY, [company("A")], [("A", 3, 4)])
    assert Path(sqlite_schema_path(str(tmp_path / "w.db"), "marts")) == tmp_path / "w.marts.db"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["w.db", "w.marts.db", "w.raw.db"]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM marts.company_daily_activity").scalar() == 1
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM raw.crm_daily").scalar() == 1
    assert sql_context(engine).schemas == SchemaNames("raw", "marts")


def test_the_test_warehouses_use_schema_names_of_their_own(warehouse: WarehouseSettings) -> None:
    # What isolates the tests (and xdist workers) from each other: never the defaults.
    assert (warehouse.stg_schema, warehouse.analytics_schema) != ("stg", "analytics")
    engine = open_warehouse(warehouse)
    load_day(engine, DAY, [company("A")], [])
    with engine.connect() as connection:
        table = query(connection, "{analytics}.company_daily_activity")
        assert warehouse.analytics_schema in table
        assert connection.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 1


# -- typed results ---------------------------------------------------------------------------------------


def test_boolean_columns_read_back_as_true_false_and_null_on_every_backend(engine: sa.Engine) -> None:
    for offset in range(7):
        load_day(
            engine, DAY + dt.timedelta(days=offset), [company("Silent"), company("Busy")], [("Busy", 1, 1)]
        )
    with engine.connect() as connection:
        flags = {
            row.company_id: row.is_churn_risk
            for row in run_sql(
                connection,
                "quality/select_company_daily_activity_day_for_validation",
                activity_date=DAY + dt.timedelta(days=6),
            )
        }
        first_day = {
            row.is_churn_risk
            for row in run_sql(
                connection, "quality/select_company_daily_activity_day_for_validation", activity_date=DAY
            )
        }
    assert flags == {"Silent": True, "Busy": False}
    assert all(type(flag) is bool for flag in flags.values())
    assert first_day == {None}


# -- bulk loads: every backend refuses the same bad rows, with one error type --------------------------


@pytest.mark.parametrize(
    "rows, reason",
    [
        ([(DAY, "A", 1, 1), (DAY, "A", 2, 2)], "duplicate"),
        ([(DAY, None, 1, 1)], "null"),
        ([(DAY, "A", -1, 1)], "check"),
    ],
)
def test_a_bulk_load_that_the_table_refuses_fails_whole(engine: sa.Engine, rows: list, reason: str) -> None:
    staging.stage_usage(engine, DAY, [("KEEP", 5, 5)], "test", "l1")
    with (
        pytest.raises(BulkLoadError, match=r"bulk load of \d+ rows into \S*product_usage_daily failed"),
        engine.begin() as connection,
    ):
        run_sql(connection, "staging/delete_staged_usage_day", activity_date=DAY)
        bulk_insert(connection, datasets.STAGED_USAGE_TABLE, datasets.STAGED_USAGE_COLUMNS, rows)
    with engine.connect() as connection:
        staged = connection.exec_driver_sql(
            query(connection, "SELECT company_id FROM {stg}.product_usage_daily")
        ).all()
    assert staged == [("KEEP",)], reason  # rolled back: the day as it was


def test_company_ids_differing_in_case_or_accents_are_different_companies(engine: sa.Engine) -> None:
    # MySQL's default collations would make these one primary key: the tables use utf8mb4_bin.
    ids = ["ACME", "Acme", "acme", "acmé", "ａｃｍｅ"]
    load_day(
        engine, DAY, [company(company_id) for company_id in ids], [(company_id, 1, 1) for company_id in ids]
    )
    rows = table_rows(engine)
    assert [row[1] for row in rows] == sorted(ids)  # ordered by code point, as PostgreSQL "C" and SQLite
    assert [row[6] for row in rows] == [1] * len(ids)  # each usage row joined its own company


def test_unicode_and_control_characters_round_trip_through_the_bulk_load(engine: sa.Engine) -> None:
    names = [
        "Zürich 🚀 株式会社",
        "Tab\there",
        "New\nline",
        "CR\rLF\r\n",
        "Back\\slash",
        "\\N",
        "NULL",
        "",
        " padded ",
    ]
    companies = [CrmCompany(f"C{index}", name, None, None, None) for index, name in enumerate(names)]
    load_day(engine, DAY, companies, [])
    assert [row[2] for row in table_rows(engine)] == names


def test_bulk_loads_store_every_value_as_given_in_slices_of_copy_text(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COPY text is built on pyarrow columns a slice of rows at a time, from a table
    (bulk_insert_columns) or from rows (bulk_insert): every value comes back as it was given."""
    from pipeline.sources.crm_columnar import table_of_companies
    from pipeline.warehouse import sql
    from pipeline.warehouse.sql import bulk_insert_columns, normalise_value

    monkeypatch.setattr(sql, "PAYLOAD_SLICE_ROWS", 2)  # five rows: three slices of COPY text

    stamps = [
        dt.datetime(2026, 11, 1, 8, 30),
        dt.datetime(2026, 11, 1, 8, 30, 0, 7),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500000),
        dt.datetime(1000, 1, 1),
        None,
    ]
    names = ["Tab\there", "Back\\slash\\N", "New\nline\r", "", None]
    companies = [
        CrmCompany(f"C{index}", name, "DE" if index % 2 else None, "saas", stamp)
        for index, (name, stamp) in enumerate(zip(names, stamps, strict=True))
    ]
    by_rows, by_columns = DAY, DAY + dt.timedelta(days=1)
    with engine.begin() as connection:
        bulk_insert(
            connection,
            datasets.STAGED_CRM_TABLE,
            datasets.STAGED_CRM_COLUMNS,
            [(by_rows, *company.as_row()) for company in companies],
        )
        stored = bulk_insert_columns(
            connection,
            datasets.STAGED_CRM_TABLE,
            table_of_companies(companies),
            constants={"snapshot_date": by_columns},
        )
    assert stored == len(companies)

    def staged(day: dt.date) -> list[tuple]:
        with engine.connect() as connection:
            return sorted(
                tuple(normalise_value(value) for value in row)
                for row in run_sql(connection, "staging/select_staged_crm_day", snapshot_date=day)
            )

    given = sorted(tuple(normalise_value(value) for value in company.as_row()) for company in companies)
    assert staged(by_columns) == given
    assert staged(by_rows) == given
    # Text as SQLite stores it too: microseconds only where there are some.
    with engine.connect() as connection:
        texts = connection.exec_driver_sql(
            query(
                connection,
                "SELECT company_id, CAST(last_contact_at AS CHAR(26)) FROM {stg}.crm_daily "
                f"WHERE snapshot_date = '{by_columns.isoformat()}' ORDER BY company_id",
            )
        ).all()
    if engine.dialect.name == "sqlite":
        assert [text for _, text in texts] == [
            "2026-11-01 08:30:00",
            "2026-11-01 08:30:00.000007",
            "1969-12-31 23:59:59.500000",
            "1000-01-01 00:00:00",
            None,
        ]


def test_a_bulk_load_of_many_rows_per_insert_puts_every_value_in_its_own_row_and_column(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite binds many rows per INSERT, the date once per statement: slices of 150 rows are two whole
    statements of 64 rows and one of 22; a value bound one place off would land in another row."""
    import pyarrow as pa

    from pipeline.warehouse import sql
    from pipeline.warehouse.sql import bulk_insert_columns, normalise_value

    monkeypatch.setattr(sql, "SQLITE_SLICE_ROWS", 150)
    monkeypatch.setattr(sql, "SQLITE_ROWS_PER_INSERT", 64)
    count = 317  # two slices of 150 and one of 17: fewer rows than one statement holds
    ids = [f"C{index:04d}" for index in range(count)]
    usage = pa.table(
        {
            "company_id": ids,
            "active_users": pa.array(range(count), pa.int64()),
            "events": pa.array([index * 7 + 3 for index in range(count)], pa.int64()),
        }
    )
    with engine.begin() as connection:
        stored = bulk_insert_columns(
            connection, datasets.STAGED_USAGE_TABLE, usage, constants={"activity_date": DAY}
        )
    assert stored == count
    with engine.connect() as connection:
        staged = [
            tuple(row)
            for row in connection.exec_driver_sql(
                query(
                    connection,
                    "SELECT activity_date, company_id, active_users, events FROM {stg}.product_usage_daily "
                    "ORDER BY company_id",
                )
            )
        ]
    assert [(normalise_value(day), *rest) for day, *rest in staged] == [
        (DAY.isoformat(), company_id, index, index * 7 + 3) for index, company_id in enumerate(ids)
    ]


def test_a_columnar_bulk_load_that_the_table_refuses_fails_whole(engine: sa.Engine) -> None:
    from pipeline.sources.crm_columnar import table_of_companies
    from pipeline.warehouse.sql import bulk_insert_columns

    duplicate = table_of_companies([CrmCompany("A", None, None, None, None)] * 2)
    with (
        pytest.raises(BulkLoadError, match=r"bulk load of 2 rows into \S*crm_daily failed"),
        engine.begin() as connection,
    ):
        bulk_insert_columns(
            connection, datasets.STAGED_CRM_TABLE, duplicate, constants={"snapshot_date": DAY}
        )


class StopLoading(BaseException):
    """Not an Exception, as KeyboardInterrupt is not."""


@pytest.mark.parametrize("failure", [ValueError("chunk 2 is bad"), StopLoading("chunk 2 is bad")])
def test_a_failure_producing_a_later_chunk_is_raised_as_it_is_and_nothing_is_loaded(
    engine: sa.Engine, failure: BaseException
) -> None:
    """Chunks are loaded as they are produced (one COPY on PostgreSQL, whose driver would report an error of
    the chunks' source as a cancelled COPY): the source's own exception reaches the caller, and the
    transaction stores nothing of the chunks before it."""
    from pipeline.sources.crm_columnar import table_of_companies
    from pipeline.warehouse.sql import bulk_insert_columns

    def chunks() -> Iterator[object]:
        yield table_of_companies([CrmCompany("A", "first chunk", None, None, None)])
        raise failure

    with pytest.raises(type(failure), match="chunk 2 is bad"), engine.begin() as connection:
        bulk_insert_columns(connection, datasets.STAGED_CRM_TABLE, chunks(), constants={"snapshot_date": DAY})
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            query(connection, "SELECT COUNT(*) FROM {stg}.crm_daily")
        ).scalar()
    assert stored == 0


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_later_chunk_without_an_exact_binary_encoding_fails_the_copy_by_name_and_loads_nothing(
    engine: sa.Engine,
) -> None:
    """The first chunk's values fit the usage table's INTEGER columns; the second's do not (a count past
    2^31 - 1). Its encoding, half way through the one COPY, fails the COPY with the reason (not a wrapped
    value), and the transaction stores nothing of the first chunk."""
    import pyarrow as pa

    from pipeline.warehouse.sql import bulk_insert_columns

    def chunk(active_users: int) -> pa.Table:
        return pa.table(
            {
                "company_id": pa.array(["A"], pa.string()),
                "active_users": pa.array([active_users], pa.int64()),
                "events": pa.array([1], pa.int64()),
            }
        )

    with (
        pytest.raises(BulkLoadError, match="a later chunk's values have no exact binary encoding"),
        engine.begin() as connection,
    ):
        bulk_insert_columns(
            connection,
            datasets.STAGED_USAGE_TABLE,
            iter([chunk(7), chunk(2**31)]),
            constants={"activity_date": DAY},
        )
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            query(connection, "SELECT COUNT(*) FROM {stg}.product_usage_daily")
        ).scalar()
    assert stored == 0
