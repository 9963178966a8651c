"""The warehouse connection: one SQLAlchemy engine per warehouse, the schemas, and the write lock.

A warehouse is :class:`WarehouseSettings`: the database URL and the names of its two schemas
(``[pipeline] stg_schema`` and ``analytics_schema``, default ``stg`` and ``analytics``). On PostgreSQL they
are real schemas; on MySQL / MariaDB they are databases of the server; on SQLite they are databases
attached beside the main file under the configured names (``warehouse.db`` -> ``warehouse.stg.db`` and
``warehouse.analytics.db``), so the same qualified names work in the same SQL files (``{stg}.crm_daily``:
see :mod:`pipeline.warehouse.sql`). What MySQL needs on top is in docs/mysql.md.

The write lock (:func:`lock_warehouse_for_writing`) serialises merge transactions: SQLite has it already
(``BEGIN IMMEDIATE`` with a busy timeout: one writer at a time); on PostgreSQL it is a transaction-level
advisory lock, released by the commit, the rollback or the server when the connection dies; on MySQL it
is a named lock (``GET_LOCK``), which belongs to the session rather than the transaction: the engine
releases it when the connection goes back to its pool, right after the commit or rollback, and the server
when the connection dies. One lock for all days, not one per day: a merge of D rewrites the rolling
columns of D .. D+6 and reads D-6 .. D, so merges of nearby days must not interleave
(docs/operations_concurrency.md).

Staging takes the lock of what it writes (:func:`lock_for_staging`). On PostgreSQL that is one staged
day's advisory lock (:func:`lock_staged_day`), which a merge also takes for the CRM snapshot and the
usage day it reads: staging a day waits for nothing but the staging or merge of that same day, so with
``--workers 2`` one day is staged while another is merged. On SQLite and MySQL staging takes the write
lock, as merges do.

Why one module of about 500 lines: the three backends' engines, their schema set-up and their write
locks are one decision per backend, read side by side (MySQL's is the longest: session set-up, GET_LOCK,
CREATE DATABASE only when missing); the next split, when it grows, is a module per backend.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.datasets import CRM, USAGE
from pipeline.warehouse.sql import (
    SCHEMA_KEYS,
    SQL_CONTEXT_OPTION,
    SchemaNames,
    SqlContext,
    WarehouseError,
    dialect_family,
    rendered_sql,
    split_statements,
    sql_context,
)

# PostgreSQL advisory locks of the pipeline: pg_advisory_xact_lock(PG_LOCK_CLASS, key), one key per purpose.
PG_LOCK_CLASS = 7261
PG_WAREHOUSE_WRITES = 1  # merge transactions
PG_SCHEMA_SETUP = 2  # the first run's CREATE ... IF NOT EXISTS
SQLITE_BUSY_TIMEOUT_MS = 60_000

log = logging.getLogger("pipeline")
DDL_FILES = ("schema/stg", "schema/analytics", "schema/validation")


@dataclass(frozen=True)
class WarehouseSettings:
    """Which warehouse: ``[pipeline] database_url``, ``stg_schema``, ``analytics_schema`` and
    ``lock_timeout_seconds`` (``WarehouseSettings(**PipelineConfig().warehouse_settings())``)."""

    database_url: str
    stg_schema: str = "stg"
    analytics_schema: str = "analytics"
    lock_timeout_seconds: float = 3600.0

    def __post_init__(self) -> None:
        self.schemas  # noqa: B018 - validates both names now, not at the first query

    @property
    def schemas(self) -> SchemaNames:
        return SchemaNames(stg=self.stg_schema, analytics=self.analytics_schema)

    def __repr__(self) -> str:
        # The URL may carry a password: never print it.
        url = sa.make_url(self.database_url).render_as_string(hide_password=True)
        return (
            f"WarehouseSettings({url!r}, stg_schema={self.stg_schema!r}, "
            f"analytics_schema={self.analytics_schema!r}, lock_timeout_seconds={self.lock_timeout_seconds!r})"
        )


def sqlite_schema_path(main_database: str, schema: str) -> str:
    """Where the attached database of ``schema`` lives for a SQLite main file."""
    if main_database in ("", ":memory:"):
        return ":memory:"
    path = Path(main_database)
    return str(path.with_name(f"{path.stem}.{schema}{path.suffix or '.db'}"))


_engines: dict[WarehouseSettings, Engine] = {}
_fork_hook_registered = False


def create_engine(warehouse: WarehouseSettings) -> Engine:
    """An engine for ``warehouse`` with its two schemas reachable under their configured names.

    Cached per warehouse: Luigi asks many tasks for completeness and each would otherwise open a pool.
    """
    global _fork_hook_registered
    if not isinstance(warehouse, WarehouseSettings):
        raise TypeError(f"create_engine takes WarehouseSettings, not {type(warehouse).__name__}")
    if not _fork_hook_registered:
        # Registered with the first engine, not at import: importing a module has no side effects.
        os.register_at_fork(after_in_child=_drop_inherited_connections)
        _fork_hook_registered = True
    if warehouse not in _engines:
        _engines[warehouse] = _new_engine(warehouse)
    return _engines[warehouse]


def close_engine(warehouse: WarehouseSettings) -> None:
    """Close the pooled connections of ``warehouse`` and forget its engine (a test's or a benchmark's
    throwaway warehouse, before its schemas are dropped)."""
    engine = _engines.pop(warehouse, None)
    if engine is not None:
        _schema_ready.discard(engine)
        engine.dispose()


def _drop_inherited_connections() -> None:
    # In a forked child (Luigi's --workers N runs each task in one): open new database connections. The
    # pooled ones belong to the parent; two processes on one PostgreSQL socket corrupt both sessions
    # ("error with status PGRES_TUPLES_OK and no message from the libpq"). close=False: closing them
    # here would end the parent's sessions too.
    for engine in _engines.values():
        engine.dispose(close=False)


def _new_engine(warehouse: WarehouseSettings) -> Engine:
    url = sa.make_url(warehouse.database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = _create_sqlite_engine(url, warehouse.schemas)
    elif backend == "postgresql":
        engine = sa.create_engine(postgres_url(url), pool_pre_ping=True)
    elif backend in MYSQL_DRIVERS:
        engine = _create_mysql_engine(url, warehouse.schemas)
    else:
        raise WarehouseError(
            f"unsupported database URL {url.render_as_string(hide_password=True)}: use sqlite://, "
            "postgresql:// or mysql:// (MySQL and MariaDB)"
        )
    # Every connection of the engine knows how to render the SQL files (pipeline.warehouse.sql).
    context = SqlContext.for_dialect(engine.dialect, warehouse.schemas)
    engine.update_execution_options(
        **{SQL_CONTEXT_OPTION: context, LOCK_TIMEOUT_OPTION: float(warehouse.lock_timeout_seconds)}
    )
    return engine


def absolute_database_url(database_url: str) -> str:
    """``database_url`` with a relative SQLite path made absolute (from the current directory), so that
    a process started elsewhere (the report's notebook kernel) opens the same database file."""
    url = sa.make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return database_url
    return url.set(database=str(Path(url.database).resolve())).render_as_string(hide_password=False)


def postgres_url(url: sa.URL | str) -> sa.URL:
    """A PostgreSQL URL on psycopg2 (our driver: it has COPY), whatever driver SQLAlchemy would default to."""
    url = sa.make_url(url)
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


# -- MySQL / MariaDB ---------------------------------------------------------------------------------------

MYSQL_DRIVERS = ("mysql", "mariadb")
# Every session: ANSI_QUOTES (the SQL files quote "7d_active_users"; without it MySQL reads a double-quoted
# name in a SELECT list as a string literal and returns wrong rows, silently), strict mode for the tables
# (a value that does not fit is an error, never quietly changed, whatever the server's default) and UTC
# (the DATETIME columns hold UTC; no session zone converts them, but NOW() and friends would follow it).
# An offset, not 'UTC': named zones need the server's time zone tables, which are often empty.
# init_command runs inside PyMySQL's connect, before SQLAlchemy's first look at the server, so the dialect
# sees these modes too (a connect event would run after it).
MYSQL_SESSION_SETUP = (
    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES,STRICT_TRANS_TABLES'), time_zone = '+00:00'"
)
# PyMySQL ignores MYSQL_PWD (libmysqlclient and the mysql CLI read it): the engine reads it itself.
MYSQL_PASSWORD_ENV = "MYSQL_PWD"
MYSQL_OPTION_FILE = Path("~/.my.cnf")
# The client side of LOAD DATA LOCAL INFILE; the server must allow it too (local_infile = ON), otherwise
# bulk loads fall back to batched INSERTs (pipeline.warehouse.sql).
MYSQL_LOCAL_INFILE = True
# CREATE DATABASE refused: 1044 (no privilege on that database), 1227 (a global privilege is missing).
MYSQL_ACCESS_DENIED = (1044, 1227)
# GET_LOCK names are server-wide and at most 64 characters on MySQL 5.7+ (MariaDB allows 192).
MYSQL_LOCK_NAME_MAX = 64
LOCK_WAIT_LOG_EVERY_SECONDS = 60.0
# Engine option: [pipeline] lock_timeout_seconds, for the MySQL locks.
LOCK_TIMEOUT_OPTION = "pipeline_lock_timeout_seconds"


class WarehouseLockTimeoutError(WarehouseError):
    """Another run held the warehouse's write lock longer than ``[pipeline] lock_timeout_seconds``."""


def mysql_url(url: sa.URL | str) -> sa.URL:
    """A MySQL / MariaDB URL on PyMySQL: ``mysql://`` and ``mariadb://`` as users write them (SQLAlchemy
    would pick mysqlclient, a C extension this project does not install), ``+pymysql`` as it is.

    Other drivers are refused: the bulk loads, the password and the session set-up are PyMySQL's."""
    url = sa.make_url(url)
    if url.drivername in MYSQL_DRIVERS:
        return url.set(drivername=f"{url.drivername}+pymysql")
    if url.get_driver_name() != "pymysql":
        raise WarehouseError(
            f"the MySQL driver {url.get_driver_name()!r} is not supported: write the URL as mysql://... or "
            "mariadb://... (the pipeline uses PyMySQL)"
        )
    return url


def _create_mysql_engine(url: sa.URL, schemas: SchemaNames) -> Engine:
    if url.database:
        # Every statement names its database ({stg}, {analytics}): a default database is never used, and
        # connecting to one that does not exist (or that the user may not see) would only fail.
        log.warning(
            "database_url names the MySQL database %r, which the pipeline does not use: its tables are in "
            "the databases %r and %r ([pipeline] stg_schema, analytics_schema)",
            url.database,
            schemas.stg,
            schemas.analytics,
        )
        url = url._replace(database=None)  # URL.set() cannot clear a field; URL is a NamedTuple
    connect_args: dict[str, Any] = {
        "init_command": MYSQL_SESSION_SETUP,
        "charset": "utf8mb4",
        "local_infile": MYSQL_LOCAL_INFILE,
    }
    option_file = MYSQL_OPTION_FILE.expanduser()
    if option_file.is_file():
        # The [client] group of ~/.my.cnf, as the mysql CLI reads it: PyMySQL fills in only what the URL
        # leaves out (the password, typically), and only when asked to.
        connect_args["read_default_file"] = str(option_file)
    engine = sa.create_engine(
        mysql_url(url),
        connect_args=connect_args,
        # PostgreSQL's level, which the code assumes: a transaction that waited for the write lock reads
        # what the holder committed (under REPEATABLE READ it could keep an older snapshot).
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
    )

    @sa.event.listens_for(engine, "do_connect")
    def _password_from_environment(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        # A password in the URL wins, then MYSQL_PWD, then ~/.my.cnf (PyMySQL reads it only for a
        # password still missing). The value is never logged: pipeline.redaction masks MYSQL_PWD.
        password = os.environ.get(MYSQL_PASSWORD_ENV)
        if password and not params.get("password"):
            params["password"] = password

    @sa.event.listens_for(engine, "reset")
    def _release_named_locks(dbapi_connection: Any, _record: Any, _reset_state: Any) -> None:
        # GET_LOCK belongs to the session, not the transaction: a pooled connection would keep the write
        # lock after the commit. The pool resets a connection as it takes it back, right after the
        # COMMIT or ROLLBACK of engine.begin(), so the lock never ends before the data is committed.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT RELEASE_ALL_LOCKS()")
        finally:
            cursor.close()

    return engine


def mysql_lock_name(schemas: SchemaNames, purpose: str) -> str:
    """The server-wide name of one of the warehouse's locks (``pipeline:stg:analytics:writes``), hashed
    when it would pass MySQL's 64 characters. Lower case: MariaDB compares lock names case-sensitively."""
    name = f"pipeline:{schemas.stg}:{schemas.analytics}:{purpose}"
    if len(name) > MYSQL_LOCK_NAME_MAX:
        digest = hashlib.sha256(f"{schemas.stg}\0{schemas.analytics}".encode()).hexdigest()[:20]
        name = f"pipeline:{digest}:{purpose}"
    return name


def _get_mysql_lock(connection: Connection, name: str, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the named lock, logging every minute who holds it."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        # Whole seconds: MySQL documents GET_LOCK's timeout in seconds, and MariaDB refuses negatives.
        wait = max(0, min(math.ceil(remaining), int(LOCK_WAIT_LOG_EVERY_SECONDS)))
        got = connection.execute(
            sa.text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": wait}
        ).scalar()
        if got == 1:
            return
        if got is None:  # 0 is a timeout; NULL an error (the server said why in a warning)
            raise WarehouseError(f"GET_LOCK({name!r}) failed on the MySQL server (it returned NULL)")
        holder = connection.execute(sa.text("SELECT IS_USED_LOCK(:name)"), {"name": name}).scalar()
        if time.monotonic() >= deadline:
            raise WarehouseLockTimeoutError(
                f"the warehouse lock {name!r} was held by MySQL connection {holder} for more than "
                f"{timeout:g}s ([pipeline] lock_timeout_seconds): another run is staging or merging; let it "
                f"finish, or look it up with SHOW PROCESSLIST (Id {holder})"
            )
        log.info("waiting for the warehouse lock %s, held by MySQL connection %s", name, holder)


def _create_mysql_databases(connection: Connection, context: SqlContext) -> None:
    """Create the stg and analytics databases that do not exist yet, when the user may.

    Only the missing ones: ``CREATE DATABASE IF NOT EXISTS`` needs the CREATE privilege even for a database
    that exists, and a production user often has privileges on its two databases only."""
    names = [getattr(context.schemas, key) for key in SCHEMA_KEYS]
    existing = {
        row[0]
        for row in connection.execute(
            sa.text(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN :names"
            ).bindparams(sa.bindparam("names", expanding=True)),
            {"names": names},
        )
    }
    for key, quoted in context.quoted:
        name = getattr(context.schemas, key)
        if name in existing:
            continue
        try:
            connection.exec_driver_sql(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        except sa.exc.DBAPIError as error:
            code = error.orig.args[0] if error.orig is not None and error.orig.args else None
            if code not in MYSQL_ACCESS_DENIED:
                raise
            user = connection.exec_driver_sql("SELECT CURRENT_USER()").scalar()
            raise WarehouseError(
                f"the MySQL database {name!r} ([pipeline] {key}_schema) does not exist and {user} may not "
                f"create it: ask a DBA to run CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE "
                f"utf8mb4_bin; and to grant {user} SELECT, INSERT, UPDATE, DELETE, CREATE on it "
                "(docs/mysql.md)"
            ) from error
        log.info("created the MySQL database %s", name)


def _create_sqlite_engine(url: sa.URL, schemas: SchemaNames) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    if not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, poolclass=sa.pool.StaticPool if in_memory else sa.pool.NullPool)
    preparer = engine.dialect.identifier_preparer

    @sa.event.listens_for(engine, "connect")
    def _attach_schemas(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN below is the only one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        for key in SCHEMA_KEYS:
            schema = getattr(schemas, key)
            # The name is validated (SchemaNames) and quoted: an identifier cannot be a bound parameter.
            cursor.execute(
                f"ATTACH DATABASE ? AS {preparer.quote_schema(schema)}",
                (sqlite_schema_path(database, schema),),
            )
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout instead of one of
        # them failing with "database is locked" when it upgrades a read lock half way.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def ensure_schema(engine: Engine) -> None:
    """Create the schemas and tables if they do not exist (idempotent)."""
    context = sql_context(engine)
    with engine.begin() as connection:
        if context.family == "postgresql":
            # Serialise concurrent first runs: CREATE ... IF NOT EXISTS races on the catalog otherwise.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_CLASS}, {PG_SCHEMA_SETUP})")
            for _key, quoted in context.quoted:
                connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        elif context.family == "mysql":
            # Every DDL statement commits on MySQL, so this transaction gives no atomicity: the named lock
            # (held until the connection goes back to the pool) is what serialises concurrent first runs.
            _get_mysql_lock(connection, mysql_lock_name(context.schemas, "setup"), _lock_timeout(connection))
            _create_mysql_databases(connection, context)
        # no_parameters: the DBAPI gets the text as written, so a "%" (PostgreSQL's format()) is not
        # read as a parameter marker.
        ddl = connection.execution_options(no_parameters=True)
        for name in DDL_FILES:
            for statement in split_statements(rendered_sql(name, context)):
                ddl.exec_driver_sql(statement)


def open_warehouse(warehouse: WarehouseSettings) -> Engine:
    """The engine of ``warehouse``, with the schemas and tables created on first use."""
    engine = create_engine(warehouse)
    if engine not in _schema_ready:
        ensure_schema(engine)
        _schema_ready.add(engine)
    return engine


_schema_ready: set[Engine] = set()


# -- reading without writing -------------------------------------------------------------------------------


def read_only_engine(warehouse: WarehouseSettings) -> Engine | None:
    """An engine that only reads the warehouse and creates nothing: no file, no schema, no table.

    For ``python -m pipeline status`` and the freshness check, which must work on a warehouse that is
    being loaded and change nothing in it. SQLite: the files are opened read-only (``mode=ro``), and a
    schema whose file does not exist is not attached (its tables then do not exist, see
    :func:`table_exists`); None when the main file does not exist (nothing was ever loaded). PostgreSQL:
    every transaction is read-only (``default_transaction_read_only``). MySQL / MariaDB: the session is
    set up as the pipeline's (ANSI_QUOTES, UTC) and only reads; the two servers name the read-only
    session variable differently, so it is not set. Not cached: a status run is short.
    """
    url = sa.make_url(warehouse.database_url)
    backend = url.get_backend_name()
    schemas = warehouse.schemas
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            return None
        engine = sa.create_engine(
            f"sqlite:///{_read_only_uri(database)}?mode=ro&uri=true", poolclass=sa.pool.NullPool
        )
        preparer = engine.dialect.identifier_preparer

        @sa.event.listens_for(engine, "connect")
        def _attach_existing_schemas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            for key in SCHEMA_KEYS:
                name = getattr(schemas, key)
                path = sqlite_schema_path(database, name)
                if Path(path).is_file():
                    cursor.execute(
                        f"ATTACH DATABASE ? AS {preparer.quote_schema(name)}",
                        (f"{_read_only_uri(path)}?mode=ro",),
                    )
            cursor.close()

    elif backend == "postgresql":
        engine = sa.create_engine(
            postgres_url(url),
            poolclass=sa.pool.NullPool,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    elif backend in MYSQL_DRIVERS:
        engine = sa.create_engine(
            mysql_url(url),
            poolclass=sa.pool.NullPool,
            connect_args={"init_command": MYSQL_SESSION_SETUP, "charset": "utf8mb4"},
        )
    else:
        raise WarehouseError(
            f"unsupported database URL {url.render_as_string(hide_password=True)}: use sqlite://, "
            "postgresql:// or mysql:// (MySQL and MariaDB)"
        )
    engine.update_execution_options(**{SQL_CONTEXT_OPTION: SqlContext.for_dialect(engine.dialect, schemas)})
    return engine


def _read_only_uri(path: str) -> str:
    """A SQLite URI filename (``file:/abs/path``), with the characters a URI reserves quoted."""
    import urllib.parse

    return "file:" + urllib.parse.quote(str(Path(path).resolve()))


def table_exists(connection: Connection, schema_key: str, table: str) -> bool:
    """Whether the table exists in the schema configured for ``schema_key`` (``"stg"`` or
    ``"analytics"``); on SQLite: in an attached schema file."""
    schema = getattr(sql_context(connection).schemas, schema_key)
    if connection.dialect.name == "sqlite":
        attached = {row[1] for row in connection.exec_driver_sql("PRAGMA database_list")}
        if schema not in attached:
            return False
        found = connection.exec_driver_sql(
            f"SELECT 1 FROM \"{schema}\".sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).first()
        return found is not None
    return sa.inspect(connection).has_table(table, schema=schema)


def _lock_timeout(connection: Connection) -> float:
    return float(connection.get_execution_options().get(LOCK_TIMEOUT_OPTION, 3600.0))


def lock_warehouse_for_writing(connection: Connection) -> None:
    """Serialise this transaction with every other merge transaction, and with every staging
    transaction on SQLite and MySQL (see the module doc).

    Call it first in the transaction. SQLite: nothing to do, ``BEGIN IMMEDIATE`` took the database's
    write lock (waiting up to its busy timeout). PostgreSQL: an advisory lock held until the transaction
    ends; a transaction that waits for it reads what the holder committed (READ COMMITTED). MySQL: the
    named lock ``pipeline:<stg>:<analytics>:writes``, waited for up to ``[pipeline] lock_timeout_seconds``
    (then :class:`WarehouseLockTimeoutError`) and released when the connection returns to the pool; first
    in the transaction, so that nothing was read before it (READ COMMITTED as well).
    """
    family = dialect_family(connection.dialect)
    if family == "postgresql":
        # pg_advisory_xact_lock(int4, int4) keys: their key space is separate from the one-bigint form.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_CLASS}, {PG_WAREHOUSE_WRITES})")
    elif family == "mysql":
        name = mysql_lock_name(sql_context(connection).schemas, "writes")
        _get_mysql_lock(connection, name, _lock_timeout(connection))


def lock_staged_day(connection: Connection, dataset: str, day: dt.date) -> None:
    """PostgreSQL: wait for, then hold until the transaction ends, the lock of one staged day of
    ``dataset`` (``datasets.CRM`` or ``datasets.USAGE``). Staging that day takes it, and so does a merge
    for each staged day it reads, before it reads them: the merge sees the day's load record and rows of
    one staging, never half of a re-staging. Other backends: nothing (their staging takes the warehouse
    write lock)."""
    if dialect_family(connection.dialect) == "postgresql":
        lock_class = _pg_staged_day_lock_class(sql_context(connection).schemas.stg, dataset)
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({lock_class}, {day.toordinal()})")


def _pg_staged_day_lock_class(stg_schema: str, dataset: str) -> int:
    """pg_advisory_xact_lock(class, day) keys of one staged table: the class is a hash of the schema and
    the dataset, so that warehouses sharing a database (other schema names) never wait for each other."""
    if dataset not in (CRM, USAGE):
        raise ValueError(f"no staged table for dataset {dataset!r}")
    digest = hashlib.sha256(f"{stg_schema}:{dataset}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def lock_for_staging(connection: Connection, dataset: str, day: dt.date) -> None:
    """The lock a transaction staging ``day`` of ``dataset`` takes first. PostgreSQL: that day's lock
    (:func:`lock_staged_day`), so that it waits neither for merges of other days nor for the staging of
    other days. SQLite and MySQL: the warehouse write lock (SQLite has one writer at a time anyway)."""
    if dialect_family(connection.dialect) == "postgresql":
        lock_staged_day(connection, dataset, day)
    else:
        lock_warehouse_for_writing(connection)
