"""The warehouse connection: one SQLAlchemy engine per warehouse, the schemas, and the write lock.

A warehouse is :class:`WarehouseSettings`: the database URL and the names of its two schemas
(``[pipeline] stg_schema`` and ``analytics_schema``, default ``stg`` and ``analytics``). On PostgreSQL they
are real schemas; on SQLite they are databases attached beside the main file under the configured names
(``warehouse.db`` -> ``warehouse.stg.db`` and ``warehouse.analytics.db``), so the same qualified names work
in the same SQL files (``{stg}.crm_daily``: see :mod:`pipeline.warehouse.sql`).

The write lock (:func:`lock_warehouse_for_writing`) serialises staging and merge transactions: SQLite
has it already (``BEGIN IMMEDIATE`` with a busy timeout: one writer at a time); on PostgreSQL it is a
transaction-level advisory lock, released by the commit, the rollback or the server when the connection
dies. One lock for all days, not one per day: a merge of D rewrites the rolling columns of D .. D+6 and
reads D-6 .. D, so merges of nearby days must not interleave (docs/operations_concurrency.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.warehouse.sql import (
    SCHEMA_KEYS,
    SQL_CONTEXT_OPTION,
    SchemaNames,
    SqlContext,
    WarehouseError,
    rendered_sql,
    split_statements,
    sql_context,
)

# PostgreSQL advisory locks of the pipeline: pg_advisory_xact_lock(PG_LOCK_CLASS, key), one key per purpose.
PG_LOCK_CLASS = 7261
PG_WAREHOUSE_WRITES = 1  # staging and merge transactions
PG_SCHEMA_SETUP = 2  # the first run's CREATE ... IF NOT EXISTS
SQLITE_BUSY_TIMEOUT_MS = 60_000
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
    else:
        raise WarehouseError(
            f"unsupported database URL {url.render_as_string(hide_password=True)}: use sqlite or postgresql"
        )
    # Every connection of the engine knows how to render the SQL files (pipeline.warehouse.sql).
    context = SqlContext.for_dialect(engine.dialect, warehouse.schemas)
    engine.update_execution_options(**{SQL_CONTEXT_OPTION: context})
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
        for name in DDL_FILES:
            for statement in split_statements(rendered_sql(name, context)):
                connection.exec_driver_sql(statement)


def open_warehouse(warehouse: WarehouseSettings) -> Engine:
    """The engine of ``warehouse``, with the schemas and tables created on first use."""
    engine = create_engine(warehouse)
    if engine not in _schema_ready:
        ensure_schema(engine)
        _schema_ready.add(engine)
    return engine


_schema_ready: set[Engine] = set()


def lock_warehouse_for_writing(connection: Connection) -> None:
    """Serialise this transaction with every other staging and merge transaction (see the module doc).

    Call it first in the transaction. SQLite: nothing to do, ``BEGIN IMMEDIATE`` took the database's
    write lock (waiting up to its busy timeout). PostgreSQL: an advisory lock held until the transaction
    ends; a transaction that waits for it reads what the holder committed (READ COMMITTED).
    """
    if connection.dialect.name == "postgresql":
        # pg_advisory_xact_lock(int4, int4) keys: their key space is separate from the one-bigint form.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_CLASS}, {PG_WAREHOUSE_WRITES})")
