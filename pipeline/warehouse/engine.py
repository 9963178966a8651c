"""The warehouse connection: one SQLAlchemy engine per URL, the schemas, and the write lock.

Both backends get the schemas ``stg`` and ``analytics``. On PostgreSQL they are real schemas; on SQLite
they are databases attached beside the main file (``warehouse.db`` -> ``warehouse.stg.db`` and
``warehouse.analytics.db``), so the same qualified names work in the same SQL files.

The write lock (:func:`lock_warehouse_for_writing`) serialises staging and merge transactions: SQLite
has it already (``BEGIN IMMEDIATE`` with a busy timeout: one writer at a time); on PostgreSQL it is a
transaction-level advisory lock, released by the commit, the rollback or the server when the connection
dies. One lock for all days, not one per day: a merge of D rewrites the rolling columns of D .. D+6 and
reads D-6 .. D, so merges of nearby days must not interleave (docs/operations_concurrency.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.warehouse.sql import WarehouseError, is_postgres, read_sql, split_statements

SCHEMAS = ("stg", "analytics")
# PostgreSQL advisory locks of the pipeline: pg_advisory_xact_lock(PG_LOCK_CLASS, key), one key per purpose.
PG_LOCK_CLASS = 7261
PG_WAREHOUSE_WRITES = 1  # staging and merge transactions
PG_SCHEMA_SETUP = 2  # the first run's CREATE ... IF NOT EXISTS
SQLITE_BUSY_TIMEOUT_MS = 60_000


def sqlite_schema_path(main_database: str, schema: str) -> str:
    """Where the attached database of ``schema`` lives for a SQLite main file."""
    if main_database in ("", ":memory:"):
        return ":memory:"
    path = Path(main_database)
    return str(path.with_name(f"{path.stem}.{schema}{path.suffix or '.db'}"))


_engines: dict[str, Engine] = {}
_fork_hook_registered = False


def create_engine(database_url: str) -> Engine:
    """An engine for ``database_url`` with the ``stg`` and ``analytics`` schemas reachable.

    Cached per URL: Luigi asks many tasks for completeness and each would otherwise open a pool.
    """
    global _fork_hook_registered
    if not _fork_hook_registered:
        # Registered with the first engine, not at import: importing a module has no side effects.
        os.register_at_fork(after_in_child=_drop_inherited_connections)
        _fork_hook_registered = True
    if database_url not in _engines:
        _engines[database_url] = _new_engine(database_url)
    return _engines[database_url]


def _drop_inherited_connections() -> None:
    # In a forked child (Luigi's --workers N runs each task in one): open new database connections. The
    # pooled ones belong to the parent; two processes on one PostgreSQL socket corrupt both sessions
    # ("error with status PGRES_TUPLES_OK and no message from the libpq"). close=False: closing them
    # here would end the parent's sessions too.
    for engine in _engines.values():
        engine.dispose(close=False)


def _new_engine(database_url: str) -> Engine:
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(postgres_url(url), pool_pre_ping=True)
    raise WarehouseError(
        f"unsupported database URL {url.render_as_string(hide_password=True)}: use sqlite or postgresql"
    )


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


def _create_sqlite_engine(url: sa.URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    if not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, poolclass=sa.pool.StaticPool if in_memory else sa.pool.NullPool)

    @sa.event.listens_for(engine, "connect")
    def _attach_schemas(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN below is the only one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        for schema in SCHEMAS:
            cursor.execute(f"ATTACH DATABASE ? AS {schema}", (sqlite_schema_path(database, schema),))
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout instead of one of
        # them failing with "database is locked" when it upgrades a read lock half way.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def ensure_schema(engine: Engine) -> None:
    """Create the schemas and tables if they do not exist (idempotent)."""
    with engine.begin() as connection:
        if is_postgres(connection):
            # Serialise concurrent first runs: CREATE ... IF NOT EXISTS races on the catalog otherwise.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_CLASS}, {PG_SCHEMA_SETUP})")
            for schema in SCHEMAS:
                connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name in ("schema/stg", "schema/analytics", "schema/validation"):
            for statement in split_statements(read_sql(name)):
                connection.exec_driver_sql(statement)


def open_warehouse(database_url: str) -> Engine:
    """The engine of ``database_url``, with the schemas and tables created on first use."""
    engine = create_engine(database_url)
    if engine not in _schema_ready:
        ensure_schema(engine)
        _schema_ready.add(engine)
    return engine


_schema_ready: set = set()


# -- reading without writing -------------------------------------------------------------------------------


def read_only_engine(database_url: str) -> Engine | None:
    """An engine that can only read the warehouse and creates nothing: no file, no schema, no table.

    For ``python -m pipeline status`` and the freshness check, which must work on a warehouse that is
    being loaded and change nothing in it. SQLite: the files are opened read-only (``mode=ro``), and a
    schema whose file does not exist is not attached (its tables then do not exist, see
    :func:`table_exists`); None when the main file does not exist (nothing was ever loaded). PostgreSQL:
    every transaction is read-only (``default_transaction_read_only``). Not cached: a status run is short.
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            return None
        engine = sa.create_engine(
            f"sqlite:///{_read_only_uri(database)}?mode=ro&uri=true", poolclass=sa.pool.NullPool
        )

        @sa.event.listens_for(engine, "connect")
        def _attach_existing_schemas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            for schema in SCHEMAS:
                path = sqlite_schema_path(database, schema)
                if Path(path).is_file():
                    cursor.execute(f"ATTACH DATABASE ? AS {schema}", (f"{_read_only_uri(path)}?mode=ro",))
            cursor.close()

        return engine
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(
            postgres_url(url),
            poolclass=sa.pool.NullPool,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    raise WarehouseError(
        f"unsupported database URL {url.render_as_string(hide_password=True)}: use sqlite or postgresql"
    )


def _read_only_uri(path: str) -> str:
    """A SQLite URI filename (``file:/abs/path``), with the characters a URI reserves quoted."""
    import urllib.parse

    return "file:" + urllib.parse.quote(str(Path(path).resolve()))


def table_exists(connection: Connection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists (on SQLite: in an attached schema file)."""
    if connection.dialect.name == "sqlite":
        attached = {row[1] for row in connection.exec_driver_sql("PRAGMA database_list")}
        if schema not in attached:
            return False
        found = connection.exec_driver_sql(
            f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).first()
        return found is not None
    return sa.inspect(connection).has_table(table, schema=schema)


# pg_advisory_xact_lock(int4, int4) keys: their key space is separate from the one-bigint form that
# warehouse.ensure_schema uses.


def lock_warehouse_for_writing(connection: Connection) -> None:
    """Serialise this transaction with every other staging and merge transaction (see the module doc).

    Call it first in the transaction. SQLite: nothing to do, ``BEGIN IMMEDIATE`` took the database's
    write lock (waiting up to its busy timeout). PostgreSQL: an advisory lock held until the transaction
    ends; a transaction that waits for it reads what the holder committed (READ COMMITTED).
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_CLASS}, {PG_WAREHOUSE_WRITES})")
