"""What only MySQL / MariaDB needs (docs/mysql.md): URLs and the driver, the session, passwords, database
creation, the named write lock, LOAD DATA LOCAL and its fallback. Against the local MariaDB
(PIPELINE_TEST_MYSQL_URL); everything the other backends do too is tested on all three elsewhere."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import MYSQL_ADMIN_URL, company, load_day, make_warehouse, query, table_rows

from pipeline import datasets
from pipeline.redaction import SecretRedactingFilter
from pipeline.sources import crm_columnar, crm_location
from pipeline.warehouse import engine as warehouse_engine
from pipeline.warehouse import staging
from pipeline.warehouse.engine import (
    WarehouseLockTimeoutError,
    WarehouseSettings,
    close_engine,
    create_engine,
    lock_warehouse_for_writing,
    mysql_lock_name,
    mysql_url,
    open_warehouse,
)
from pipeline.warehouse.sql import BulkLoadError, SchemaNames, WarehouseError, bulk_insert, sql_context

pytestmark = pytest.mark.mariadb

DAY = dt.date(2026, 11, 1)


@pytest.fixture
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSettings]:
    with make_warehouse("mariadb", request, tmp_path) as settings:
        yield settings


@pytest.fixture
def admin() -> Iterator[sa.Connection]:
    engine = sa.create_engine(mysql_url(MYSQL_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        yield connection
    engine.dispose()


# -- URLs and the session ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, driver",
    [
        ("mysql://u@db:3306/x", "mysql+pymysql"),
        ("mariadb://u@db/x", "mariadb+pymysql"),
        ("mysql+pymysql://u@db/x", "mysql+pymysql"),
        ("mariadb+pymysql://u@db/x", "mariadb+pymysql"),
    ],
)
def test_mysql_urls_as_users_write_them_run_on_pymysql(url: str, driver: str) -> None:
    assert mysql_url(url).drivername == driver


def test_another_mysql_driver_is_refused_with_what_to_write() -> None:
    with pytest.raises(WarehouseError, match=r"'mysqldb' is not supported: write the URL as mysql://"):
        create_engine(WarehouseSettings("mysql+mysqldb://u@db/x"))


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_both_schemes_open_the_warehouse_with_the_session_it_needs(
    scheme: str, tmp_path: Path, request
) -> None:
    with make_warehouse("mariadb", request, tmp_path) as base:
        warehouse = WarehouseSettings(
            base.database_url.replace("mysql://", f"{scheme}://", 1), base.stg_schema, base.analytics_schema
        )
        try:
            engine = open_warehouse(warehouse)
            assert sql_context(engine).family == "mysql"
            with engine.connect() as connection:
                modes, zone, isolation, charset, utc = connection.exec_driver_sql(
                    "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.tx_isolation, "
                    "@@SESSION.character_set_client, NOW() = UTC_TIMESTAMP()"
                ).one()
            assert {"ANSI_QUOTES", "STRICT_TRANS_TABLES"} <= set(modes.split(","))
            assert (zone, isolation, charset, utc) == ("+00:00", "READ-COMMITTED", "utf8mb4", 1)
        finally:
            close_engine(warehouse)


def test_a_database_in_the_url_is_not_used_and_need_not_exist(
    warehouse: WarehouseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    named = WarehouseSettings(
        warehouse.database_url.rstrip("/") + "/no_such_database",
        warehouse.stg_schema,
        warehouse.analytics_schema,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            load_day(open_warehouse(named), DAY, [company("A")], [])
        assert f"its tables are in the databases '{warehouse.stg_schema}' and" in caplog.text
        with open_warehouse(warehouse).connect() as connection:
            count = connection.exec_driver_sql(
                query(connection, "SELECT COUNT(*) FROM {analytics}.company_daily_activity")
            ).scalar()
        assert count == 1
    finally:
        close_engine(named)


def test_the_tables_are_innodb_utf8mb4_bin_with_datetime6(warehouse: WarehouseSettings, admin) -> None:
    open_warehouse(warehouse)
    tables = admin.execute(
        sa.text(
            "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA IN (:stg, :analytics) ORDER BY TABLE_NAME"
        ),
        {"stg": warehouse.stg_schema, "analytics": warehouse.analytics_schema},
    ).all()
    assert [row[0] for row in tables] == [
        "company_daily_activity",
        "crm_daily",
        "day_corrections",
        "day_validations",
        "loaded_days",
        "loads",
        "product_usage_daily",
        "rows_before_merge",
    ]
    assert {(row[1], row[2]) for row in tables} == {("InnoDB", "utf8mb4_bin")}
    types = admin.execute(
        sa.text(
            "SELECT DISTINCT COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA IN (:stg, :analytics) "
            "AND COLUMN_NAME IN ('last_contact_at', 'record_loaded_at', 'loaded_at', 'validated_at')"
        ),
        {"stg": warehouse.stg_schema, "analytics": warehouse.analytics_schema},
    ).all()
    assert types == [("datetime(6)",)]


def test_timestamps_are_stored_as_given_whatever_the_session_time_zone(warehouse: WarehouseSettings) -> None:
    engine = open_warehouse(warehouse)
    stamp = dt.datetime(2026, 3, 29, 1, 30, 0, 123456)  # a DST change in Europe: no zone may touch it
    load_day(engine, DAY, [company("A", last_contact_at=stamp)], [])
    with engine.connect() as connection:
        connection.exec_driver_sql("SET SESSION time_zone = '+05:30'")
        read = connection.exec_driver_sql(
            query(connection, "SELECT last_contact_at FROM {analytics}.company_daily_activity")
        ).scalar()
        connection.exec_driver_sql("SET SESSION time_zone = '+00:00'")  # as the pool's next user expects
    assert read == stamp and read.tzinfo is None


# -- passwords -----------------------------------------------------------------------------------------------


@pytest.fixture
def password_user(admin) -> Iterator[tuple[str, str]]:
    """A user with a password and every privilege on the ``pw_*`` databases only."""
    user, password = f"pw{uuid.uuid4().hex[:8]}", f"secret-{uuid.uuid4().hex}"
    admin.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
    # "_" is a wildcard in a GRANT's database name: escaped, it is the letter.
    admin.execute(sa.text(f"GRANT ALL ON `{user}\\_%`.* TO '{user}'@'%'"))
    try:
        yield user, password
    finally:
        admin.execute(sa.text(f"DROP USER '{user}'@'%'"))
        for (name,) in admin.execute(sa.text(f"SHOW DATABASES LIKE '{user}\\_%'")).all():
            admin.exec_driver_sql(f"DROP DATABASE `{name}`")


def _user_url(user: str) -> str:
    return (
        sa.make_url(MYSQL_ADMIN_URL).set(username=user, password=None).render_as_string(hide_password=False)
    )


def test_the_password_comes_from_mysql_pwd_and_never_reaches_a_log(
    password_user, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = password_user
    warehouse = WarehouseSettings(_user_url(user), f"{user}_stg", f"{user}_analytics")
    monkeypatch.setattr(warehouse_engine, "MYSQL_OPTION_FILE", Path("/nonexistent/.my.cnf"))
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    with pytest.raises(sa.exc.OperationalError, match="using password: NO"):
        open_warehouse(warehouse)
    close_engine(warehouse)

    monkeypatch.setenv("MYSQL_PWD", password)
    redacting = SecretRedactingFilter()
    caplog.handler.addFilter(redacting)
    with caplog.at_level(logging.DEBUG, logger="sqlalchemy"):
        try:
            engine = open_warehouse(warehouse)
            load_day(engine, DAY, [company("A")], [("A", 1, 1)])
            assert len(table_rows(engine)) == 1
        finally:
            close_engine(warehouse)
            caplog.handler.removeFilter(redacting)
    assert password not in caplog.text
    assert password not in repr(warehouse) and password not in str(engine.url)


def test_the_password_comes_from_the_option_file_when_the_environment_has_none(
    password_user, monkeypatch, tmp_path: Path
) -> None:
    user, password = password_user
    option_file = tmp_path / "my.cnf"
    option_file.write_text(f"[client]\npassword = {password}\n")
    monkeypatch.setattr(warehouse_engine, "MYSQL_OPTION_FILE", option_file)
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    warehouse = WarehouseSettings(_user_url(user), f"{user}_stg", f"{user}_analytics")
    try:
        load_day(open_warehouse(warehouse), DAY, [company("A")], [])
    finally:
        close_engine(warehouse)


def test_a_missing_database_the_user_may_not_create_asks_for_a_dba(password_user, admin, monkeypatch) -> None:
    user, password = password_user
    monkeypatch.setenv("MYSQL_PWD", password)
    # The DBA made the databases (outside the user's pattern), granted the user their tables only.
    stg, analytics = f"dba{uuid.uuid4().hex[:8]}_stg", f"dba{uuid.uuid4().hex[:8]}_analytics"
    admin.exec_driver_sql(f"CREATE DATABASE `{stg}`")
    try:
        admin.execute(sa.text(f"GRANT ALL ON `{stg}`.* TO '{user}'@'%'"))
        missing = WarehouseSettings(_user_url(user), stg, analytics)
        with pytest.raises(
            WarehouseError, match=rf"'{analytics}' \(\[pipeline\] analytics_schema\) does not exist"
        ):
            open_warehouse(missing)
        close_engine(missing)

        admin.exec_driver_sql(f"CREATE DATABASE `{analytics}`")
        admin.execute(sa.text(f"GRANT ALL ON `{analytics}`.* TO '{user}'@'%'"))
        try:
            load_day(open_warehouse(missing), DAY, [company("A")], [])  # no CREATE DATABASE needed now
        finally:
            close_engine(missing)
    finally:
        admin.exec_driver_sql(f"DROP DATABASE IF EXISTS `{stg}`")
        admin.exec_driver_sql(f"DROP DATABASE IF EXISTS `{analytics}`")


def test_the_databases_are_created_with_a_binary_collation(warehouse: WarehouseSettings, admin) -> None:
    open_warehouse(warehouse)
    collations = admin.execute(
        sa.text(
            "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (:a, :b)"
        ),
        {"a": warehouse.stg_schema, "b": warehouse.analytics_schema},
    ).all()
    assert collations == [("utf8mb4_bin",), ("utf8mb4_bin",)]


# -- the write lock ---------------------------------------------------------------------------------------


def test_lock_names_name_the_warehouse_and_stay_within_64_characters() -> None:
    assert mysql_lock_name(SchemaNames(), "writes") == "pipeline:stg:analytics:writes"
    long = SchemaNames("s" * 63, "a" * 63)
    name = mysql_lock_name(long, "writes")
    assert len(name) <= 64 and name.startswith("pipeline:") and name.endswith(":writes")
    assert name != mysql_lock_name(SchemaNames("s" * 63, "b" * 63), "writes")


def test_the_write_lock_waits_then_fails_naming_the_holder_and_ends_with_the_transaction(
    warehouse: WarehouseSettings,
) -> None:
    short = WarehouseSettings(
        warehouse.database_url, warehouse.stg_schema, warehouse.analytics_schema, lock_timeout_seconds=1
    )
    try:
        engine, waiter = open_warehouse(warehouse), open_warehouse(short)
        with engine.begin() as holder:
            lock_warehouse_for_writing(holder)
            holder_id = holder.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            started = time.monotonic()
            with (
                pytest.raises(WarehouseLockTimeoutError, match=rf"held by MySQL connection {holder_id} for"),
                waiter.begin() as other,
            ):
                lock_warehouse_for_writing(other)
            assert 0.9 < time.monotonic() - started < 10
        # Committed: the pool's reset released it, although GET_LOCK belongs to the session.
        with waiter.begin() as after:
            lock_warehouse_for_writing(after)
        with pytest.raises(ZeroDivisionError), engine.begin() as failing:
            lock_warehouse_for_writing(failing)
            _ = 1 / 0
        with waiter.begin() as after_rollback:
            lock_warehouse_for_writing(after_rollback)
    finally:
        close_engine(short)


def test_another_warehouse_on_the_same_server_is_not_blocked(
    warehouse: WarehouseSettings, request, tmp_path
) -> None:
    with make_warehouse("mariadb", request, tmp_path / "other") as other:
        quick = WarehouseSettings(other.database_url, other.stg_schema, other.analytics_schema, 0)
        try:
            with open_warehouse(warehouse).begin() as holder:
                lock_warehouse_for_writing(holder)
                with open_warehouse(quick).begin() as connection:
                    lock_warehouse_for_writing(connection)  # its own name: free
        finally:
            close_engine(quick)


def test_a_killed_holder_releases_the_write_lock(warehouse: WarehouseSettings, tmp_path: Path) -> None:
    engine = open_warehouse(warehouse)
    engine.dispose()  # no pooled connection crosses the fork
    ready = tmp_path / "locked"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the lock until it is killed
        try:
            with create_engine(warehouse).begin() as connection:
                lock_warehouse_for_writing(connection)
                ready.write_text("locked")
                time.sleep(60)
        finally:
            os._exit(0)
    reaped = False
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline, "the child never took the lock"
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reaped = True
        started = time.monotonic()
        with engine.begin() as connection:
            lock_warehouse_for_writing(connection)
        assert time.monotonic() - started < 5, "the server must drop a dead session's lock"
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# -- bulk loads ---------------------------------------------------------------------------------------------


def test_a_server_that_refuses_load_data_local_gets_batched_inserts(
    warehouse: WarehouseSettings, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(warehouse_engine, "MYSQL_LOCAL_INFILE", False)  # the client refuses: same error
    engine = open_warehouse(warehouse)
    names = ["Zürich 🚀", "Tab\there", "Back\\slash", "NULL", "\\N"]
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        load_day(engine, DAY, [company(f"C{index}", name) for index, name in enumerate(names)], [])
    assert "refuses LOAD DATA LOCAL INFILE" in caplog.text and "batched INSERTs" in caplog.text
    assert [row[2] for row in table_rows(engine)] == names
    with pytest.raises(BulkLoadError, match="Duplicate entry"), engine.begin() as connection:
        bulk_insert(
            connection, datasets.STAGED_USAGE_TABLE, datasets.STAGED_USAGE_COLUMNS, [(DAY, "A", 1, 1)] * 2
        )


def test_a_refused_load_data_local_is_warned_about_once_for_a_file_loaded_in_chunks(
    warehouse: WarehouseSettings, monkeypatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(warehouse_engine, "MYSQL_LOCAL_INFILE", False)
    monkeypatch.setattr(crm_columnar, "CHUNK_BYTES", 200)  # a dozen chunks
    source = tmp_path / f"crm_{DAY.isoformat()}.csv"
    lines = [f"C{index:03d},Company {index},DE,saas,2026-10-01T08:00:00Z" for index in range(60)]
    source.write_text("company_id,company_name,country,industry_tag,last_contact_at\n" + "\n".join(lines))
    crm_location.land_snapshot(str(tmp_path / "crm_{date}.csv"), tmp_path / "data", DAY)
    engine = open_warehouse(warehouse)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        staged = staging.stage_landed_crm(engine, DAY, tmp_path / "data")
    assert (staged.rows, staged.reader) == (60, "columnar")
    assert caplog.text.count("refuses LOAD DATA LOCAL INFILE") == 1
    with engine.connect() as connection:
        ids = connection.exec_driver_sql(
            query(connection, "SELECT company_id FROM {stg}.crm_daily ORDER BY company_id")
        ).scalars()
        assert list(ids) == [f"C{index:03d}" for index in range(60)]


def test_load_data_local_warnings_fail_the_load_and_name_them(warehouse: WarehouseSettings) -> None:
    engine = open_warehouse(warehouse)
    staging.stage_usage(engine, DAY, [("KEEP", 1, 1)], "test", "l1")
    too_long = "X" * 65  # LOAD DATA LOCAL would store it cut to 64 characters, with a warning
    with pytest.raises(
        BulkLoadError, match=r"rows into \S+product_usage_daily failed: .*1 warning\(s\): Warning 1265"
    ):
        staging.stage_usage(engine, DAY, [(too_long, 1, 1)], "test", "l2")
    with engine.connect() as connection:
        assert connection.exec_driver_sql(
            query(connection, "SELECT company_id FROM {stg}.product_usage_daily")
        ).all() == [("KEEP",)]
