"""Running the SQL of ``sql/``: one statement's purpose per file, named by its layer and file
(``run_sql(connection, "marts/insert_company_daily_activity_day", ...)``), and bulk loads.

Values are bound typed (dates as DATE, timestamps as UTC without a zone), so each backend gets its native
value. Bulk loads are ``COPY`` on PostgreSQL and one ``executemany`` on SQLite, in the caller's
transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from pipeline import project

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


def is_postgres(connection: Connection | Engine) -> bool:
    return connection.dialect.name == "postgresql"


@functools.lru_cache(maxsize=128)
def read_sql(name: str) -> str:
    """The text of ``sql/<name>.sql``."""
    path = project.sql_dir() / f"{name}.sql"
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
