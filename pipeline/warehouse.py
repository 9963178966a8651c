"""The warehouse connection: one SQLAlchemy engine for SQLite or PostgreSQL, the SQL files, bulk loads.

Both backends get the schemas ``stg`` and ``analytics``. On PostgreSQL they are real schemas; on SQLite
they are databases attached beside the main file (``warehouse.db`` -> ``warehouse.stg.db`` and
``warehouse.analytics.db``), so the same qualified names work in the same SQL files.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
SCHEMAS = ("stg", "analytics")
SQLITE_BUSY_TIMEOUT_MS = 60_000

# Timestamps are stored as UTC without a zone. On SQLite that is ISO text without the 'T' (the format
# of SQLite's own datetime()), and without microseconds when there are none.
UtcTimestamp = sa.DateTime().with_variant(
    sqlite_dialect.DATETIME(
        storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
        regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
    ),
    "sqlite",
)


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or set up."""


def sqlite_schema_path(main_database: str, schema: str) -> str:
    """Where the attached database of ``schema`` lives for a SQLite main file."""
    if main_database in ("", ":memory:"):
        return ":memory:"
    path = Path(main_database)
    return str(path.with_name(f"{path.stem}.{schema}{path.suffix or '.db'}"))


_engines: dict[str, Engine] = {}


def create_engine(database_url: str) -> Engine:
    """An engine for ``database_url`` with the ``stg`` and ``analytics`` schemas reachable.

    Cached per URL: Luigi asks many tasks for completeness and each would otherwise open a pool.
    """
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


os.register_at_fork(after_in_child=_drop_inherited_connections)


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


def is_postgres(connection: Connection | Engine) -> bool:
    return connection.dialect.name == "postgresql"


@functools.lru_cache(maxsize=64)
def read_sql(name: str) -> str:
    """The text of ``sql/<name>.sql``."""
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise WarehouseError(f"missing SQL file {path}")
    return path.read_text(encoding="utf-8")


def split_statements(sql_text: str) -> list[str]:
    """Statements of a DDL file: separated by a semicolon at the end of a line, comments dropped."""
    without_comments = strip_comments(sql_text)
    return [
        statement.strip() for statement in re.split(r";\s*\n", without_comments + "\n") if statement.strip()
    ]


def _bound(statement: str, params: dict[str, Any]) -> sa.TextClause:
    """``text(statement)`` with dates and timestamps typed, so each backend gets its native value."""
    binds = []
    for key, value in params.items():
        if isinstance(value, dt.datetime):
            binds.append(sa.bindparam(key, value, type_=UtcTimestamp))
        elif isinstance(value, dt.date):
            binds.append(sa.bindparam(key, value, type_=sa.Date()))
        else:
            binds.append(sa.bindparam(key, value))
    return sa.text(statement).bindparams(*binds)


@functools.lru_cache(maxsize=64)
def _statement(name: str) -> str:
    # Comments go: SQLAlchemy would read a ":name" in a comment as a parameter.
    return strip_comments(read_sql(name))


def strip_comments(sql_text: str) -> str:
    return re.sub(r"--[^\n]*", "", sql_text).strip()


def run_sql(connection: Connection, name: str, **params: Any) -> sa.CursorResult:
    """Run the one statement in ``sql/<name>.sql`` with named parameters."""
    return connection.execute(_bound(_statement(name), params))


def ensure_schema(engine: Engine) -> None:
    """Create the schemas and tables if they do not exist (idempotent)."""
    with engine.begin() as connection:
        if is_postgres(connection):
            # Serialise concurrent first runs: CREATE ... IF NOT EXISTS races on the catalog otherwise.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7261001)")
            for schema in SCHEMAS:
                connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name in ("schema_stg", "schema_analytics", "schema_validation"):
            for statement in split_statements(read_sql(name)):
                connection.exec_driver_sql(statement)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _copy_text_value(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return r"\N"
    text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def bulk_insert(
    connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert many rows in the connection's transaction: COPY on PostgreSQL, executemany on SQLite."""
    quoted = ", ".join(f'"{column}"' for column in columns)
    if is_postgres(connection):
        buffer = io.StringIO()
        count = 0
        for row in rows:
            buffer.write("\t".join(_copy_text_value(value) for value in row))
            buffer.write("\n")
            count += 1
        buffer.seek(0)
        cursor = connection.connection.cursor()
        try:
            cursor.copy_expert(f"COPY {table} ({quoted}) FROM STDIN", buffer)
        finally:
            cursor.close()
        return count
    materialised = [tuple(_sqlite_value(value) for value in row) for row in rows]
    if materialised:
        placeholders = ", ".join("?" for _ in columns)
        connection.exec_driver_sql(f"INSERT INTO {table} ({quoted}) VALUES ({placeholders})", materialised)
    return len(materialised)


def normalise_value(value: Any) -> Any:
    """A value read back from either backend in one comparable form (dates and timestamps as text)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
