"""Running the SQL of ``sql/``: one statement's purpose per file, named by its layer and file
(``run_sql(connection, "marts/insert_company_daily_activity_day", ...)``), and bulk loads.

**Schema names.** The files name their tables ``{stg}.crm_daily`` and ``{analytics}.company_daily_activity``:
``[pipeline] stg_schema`` and ``analytics_schema`` choose the real names (schemas on PostgreSQL, databases on
MySQL, attached files on SQLite). This is templating of two identifiers, not rewriting of SQL: the names
are validated (``^[a-z_][a-z0-9_]{0,62}$``), quoted by the dialect's own identifier preparer, and put in
place once per engine and file (cached, never per statement); values are always bound parameters, and a
placeholder other than ``{stg}`` / ``{analytics}`` is an error. SQLAlchemy's ``schema_translate_map`` would
be the library's answer, but it does not apply to ``text()`` SQL (its documentation says so), and a
session ``search_path`` cannot work on MySQL, where one statement reads ``stg`` and writes ``analytics``.

**Dialect variants.** Where a dialect needs other SQL, ``sql/<layer>/<name>.<family>.sql`` sits beside the
common file; :func:`read_sql` is the one place that chooses, by dialect family (``mysql`` for both MySQL and
MariaDB). No statement is rewritten at run time.

Values are bound typed (dates as DATE, timestamps as UTC without a zone), so each backend gets its native
value; the boolean columns are read back as True/False/None on every backend. Bulk loads take pyarrow
columns (rows are turned into columns first) and are ``COPY`` on PostgreSQL (binary where the column types
allow), ``LOAD DATA LOCAL INFILE`` on MySQL and ``executemany`` in slices on SQLite, in the caller's
transaction, and fail as :class:`BulkLoadError` whatever the backend.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect, Engine

from pipeline import project
from pipeline.prefetch import Prefetched
from pipeline.warehouse import pg_binary_copy

log = logging.getLogger("pipeline")

# Timestamps are stored as UTC without a zone. On SQLite that is ISO text without the 'T' (the format
# of SQLite's own datetime()), and without microseconds when there are none.
UtcTimestamp = sa.DateTime().with_variant(
    sqlite_dialect.DATETIME(
        storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
        regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
    ),
    "sqlite",
)

# The BOOLEAN columns of the warehouse. PostgreSQL returns bool, SQLite and MySQL (TINYINT(1)) 1/0: typed
# here, once, every query of run_sql reads them back as True/False/None on every backend.
BOOLEAN_COLUMNS = ("is_churn_risk", "success", "accept_row_drop", "row_drop_accepted")

# The placeholders of the SQL files and the [pipeline] keys that name them.
SCHEMA_KEYS = ("stg", "analytics")
# Lower case: MySQL's lower_case_table_names differs between Linux and Windows/macOS servers. At most 63
# characters: PostgreSQL truncates longer identifiers (MySQL allows 64).
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PLACEHOLDER = re.compile(r"\{([^{}\s]*)\}")

# Option of the engines made by pipeline.warehouse.engine: what their SQL is rendered with.
SQL_CONTEXT_OPTION = "pipeline_sql_context"


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or set up."""


class SchemaNameError(WarehouseError, ValueError):
    """A configured schema name is not a plain lower-case identifier."""


class SqlTemplateError(WarehouseError):
    """A SQL file or table name has a placeholder other than ``{stg}`` and ``{analytics}``."""


class BulkLoadError(WarehouseError):
    """A bulk load did not store exactly the rows it was given (a duplicate key, a value the column
    refuses...): the caller's transaction rolls back."""


@dataclass(frozen=True)
class SchemaNames:
    """The names of the two schemas (``[pipeline] stg_schema``, ``analytics_schema``), validated."""

    stg: str = "stg"
    analytics: str = "analytics"

    def __post_init__(self) -> None:
        for key in SCHEMA_KEYS:
            name = getattr(self, key)
            if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
                raise SchemaNameError(
                    f"[pipeline] {key}_schema = {name!r} is not a valid schema name: use 1 to 63 lower-case "
                    "letters, digits and underscores, not starting with a digit"
                )
        if self.stg == self.analytics:
            raise SchemaNameError(
                f"[pipeline] stg_schema and analytics_schema are both {self.stg!r}: give them different names"
            )


def dialect_family(dialect: Dialect) -> str:
    """``sqlite``, ``postgresql`` or ``mysql``: MariaDB speaks the MySQL family's SQL (SQLAlchemy names its
    dialect ``mariadb`` for a ``mariadb://`` URL, ``mysql`` otherwise)."""
    return "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name


@dataclass(frozen=True)
class SqlContext:
    """What one engine's SQL is rendered with: its dialect family (which file variants) and the two schema
    names, quoted for that dialect. Built once per engine and kept in its execution options."""

    family: str
    schemas: SchemaNames
    quoted: tuple[tuple[str, str], ...]

    @classmethod
    def for_dialect(cls, dialect: Dialect, schemas: SchemaNames) -> SqlContext:
        preparer = dialect.identifier_preparer
        quoted = tuple((key, preparer.quote_schema(getattr(schemas, key))) for key in SCHEMA_KEYS)
        return cls(dialect_family(dialect), schemas, quoted)

    def render(self, template: str, origin: str = "SQL") -> str:
        """``template`` with ``{stg}`` and ``{analytics}`` replaced by the quoted schema names."""
        names = dict(self.quoted)

        def substitute(match: re.Match) -> str:
            key = match.group(1)
            if key not in names:
                raise SqlTemplateError(
                    f"{origin} has the placeholder {{{key}}}: only {{stg}} and {{analytics}} are known "
                    "(values are bound parameters, :name)"
                )
            return names[key]

        return _PLACEHOLDER.sub(substitute, template)


def sql_context(bind: Connection | Engine) -> SqlContext:
    """The :class:`SqlContext` of the engine behind ``bind``."""
    context = bind.get_execution_options().get(SQL_CONTEXT_OPTION)
    if context is None:
        raise WarehouseError(
            "this engine does not know the warehouse's schema names: open the warehouse with "
            "pipeline.warehouse.engine.create_engine or open_warehouse"
        )
    return context


def with_schema_names(bind: Connection | Engine, template: str) -> str:
    """A table name or ad-hoc statement (``"{stg}.crm_daily"``) with the schema names of ``bind``."""
    return sql_context(bind).render(template, repr(template))


def is_postgres(connection: Connection | Engine) -> bool:
    return connection.dialect.name == "postgresql"


def is_mysql(connection: Connection | Engine) -> bool:
    """MySQL or MariaDB."""
    return dialect_family(connection.dialect) == "mysql"


@functools.lru_cache(maxsize=256)
def read_sql(name: str, family: str) -> str:
    """The text of ``sql/<name>.<family>.sql`` when that variant exists, else of ``sql/<name>.sql``.

    The one place where a dialect's variant is chosen (``family`` from :func:`dialect_family`)."""
    directory = project.sql_dir()
    variant = directory / f"{name}.{family}.sql"
    path = variant if variant.exists() else directory / f"{name}.sql"
    if not path.exists():
        raise WarehouseError(f"missing SQL file {path}")
    return path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=512)
def rendered_sql(name: str, context: SqlContext) -> str:
    """The file ``name`` for ``context`` without comments, schema names in place: rendered once per
    engine configuration (the cache key), then reused by every statement."""
    # Comments go: SQLAlchemy would read a ":name" in a comment as a parameter.
    return context.render(strip_comments(read_sql(name, context.family)), f"sql/{name}.sql")


def split_statements(sql_text: str) -> list[str]:
    """Statements of a DDL file: separated by a semicolon at the end of a line, comments dropped. A
    ``$$``-quoted body (a PostgreSQL function or ``DO`` block) is one piece of its statement, whatever
    semicolons it holds."""
    pieces = strip_comments(sql_text).split("$$")
    if len(pieces) % 2 == 0:
        raise WarehouseError("a DDL file has an unterminated $$-quoted body")
    statements, current = [], ""
    for index, piece in enumerate(pieces):
        if index % 2:  # inside $$ ... $$
            current += f"$${piece}$$"
            continue
        parts = re.split(r";\s*\n", piece + ("\n" if index == len(pieces) - 1 else ""))
        parts[0] = current + parts[0]
        statements.extend(parts[:-1])
        current = parts[-1]
    statements.append(current)
    return [statement.strip() for statement in statements if statement.strip()]


def strip_comments(sql_text: str) -> str:
    return re.sub(r"--[^\n]*", "", sql_text).strip()


def bound_statement(statement: str, params: dict[str, Any]) -> sa.TextClause:
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


_BOOLEAN_RESULT_TYPES = {name: sa.Boolean() for name in BOOLEAN_COLUMNS}


def run_sql(connection: Connection, name: str, **params: Any) -> sa.CursorResult:
    """Run the one statement in ``sql/<name>.sql`` (or its dialect's variant) with named parameters.

    Result columns named like a BOOLEAN column come back as True/False/None on every backend (typed by
    name: a column of that name that a query does not return is simply not there)."""
    statement = bound_statement(rendered_sql(name, sql_context(connection)), params)
    return connection.execute(statement.columns(**_BOOLEAN_RESULT_TYPES))


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _copy_text_value(value: Any) -> str:
    """One value in PostgreSQL's COPY text format (also what MySQL's LOAD DATA reads, see below)."""
    if value is None:
        return r"\N"
    text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def bulk_insert(
    connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert many rows (tuples in the order of ``columns``) into ``table`` in the connection's
    transaction: the rows are turned into columns and loaded by :func:`bulk_insert_columns`. Returns the
    rows inserted; a row the table refuses raises :class:`BulkLoadError` naming the table."""
    import pyarrow as pa

    materialised = [tuple(row) for row in rows]
    try:
        values = list(zip(*materialised, strict=True)) if materialised else [()] * len(columns)
        arrays = pa.table(
            {name: pa.array(list(column)) for name, column in zip(columns, values, strict=True)}
        )
    except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise BulkLoadError(
            f"bulk load of {len(materialised)} rows into {with_schema_names(connection, table)} failed: "
            f"the rows are not {len(columns)} columns of one type each ({_first_line(error)})"
        ) from error
    return bulk_insert_columns(connection, table, arrays)


def bulk_insert_columns(
    connection: Connection, table: str, columns: Any, constants: dict[str, Any] | None = None
) -> int:
    """:func:`bulk_insert` of a ``pyarrow.Table`` without a Python object per row: the payload is built on
    the columns. PostgreSQL: COPY in the binary format where every column has an exact encoding for its
    column's type (:mod:`pg_binary_copy`; the staged tables' columns do), else in the text format (the
    text :func:`_copy_text_value` writes). MySQL: LOAD DATA LOCAL of that text. SQLite: ``executemany``
    of multi-row INSERTs in slices of :data:`SQLITE_SLICE_ROWS` rows.
    ``columns`` may also be an iterable of tables with the same columns (a file read chunk by chunk): the
    next ones are produced in a background thread while the database loads the current one
    (:mod:`prefetch`), one COPY on PostgreSQL, one LOAD DATA or ``executemany`` per table elsewhere. An
    exception raised producing a table is raised here as it is, and the caller's transaction rolls back.
    ``constants`` (``{"snapshot_date": day}``) fills leading columns with one value. Returns the rows."""
    import pyarrow as pa

    constants = constants or {}
    if isinstance(columns, pa.Table):
        return _bulk_insert_pieces(connection, table, [columns] if columns.num_rows else [], constants)
    with Prefetched(columns) as pieces:
        return _bulk_insert_pieces(connection, table, pieces, constants)


def _bulk_insert_pieces(
    connection: Connection, table: str, pieces: Iterable[Any], constants: dict[str, Any]
) -> int:
    target = with_schema_names(connection, table)
    remaining = iter(pieces)
    first = next(remaining, None)
    if first is None:
        return 0
    names = [*constants, *first.column_names]
    quoted = ", ".join(f'"{name}"' for name in names)
    family = sql_context(connection).family
    dbapi_error = connection.dialect.loaded_dbapi.Error
    count = 0  # the rows handed to the database so far

    def counted() -> Iterator[Any]:
        nonlocal count
        for piece in itertools.chain((first,), remaining):
            count += piece.num_rows
            yield piece

    try:
        if family == "postgresql":
            _copy_columns(connection, target, names, quoted, counted(), constants)
        else:
            load = _executemany_columns if family == "sqlite" else _load_data_payload
            for piece in counted():
                load(connection, target, quoted, piece, constants)
    except (sa.exc.DBAPIError, dbapi_error) as error:
        raise refused_bulk_load(target, count, error) from error
    return count


def refused_bulk_load(target: str, count: int, error: BaseException) -> BulkLoadError:
    """The :class:`BulkLoadError` of a load of ``count`` rows into ``target`` that the database refused:
    its first line, and PostgreSQL's detail (which key is duplicated) when there is one."""
    reason = getattr(error, "orig", None) or error
    detail = getattr(getattr(reason, "diag", None), "message_detail", None)
    return BulkLoadError(
        f"bulk load of {count} rows into {target} failed: {_first_line(reason)}"
        + (f" ({detail})" if detail else "")
    )


# SQLite has no bulk path: executemany of this many rows at a time keeps memory flat,
SQLITE_SLICE_ROWS = 50_000
# with this many rows per INSERT (well within SQLite's 32,766 bound parameters of a statement).
SQLITE_ROWS_PER_INSERT = 64
# A bulk load's payload is built this many rows at a time: memory stays flat, and a slice stays far below
# the 2 GiB a pyarrow string or binary array can hold.
PAYLOAD_SLICE_ROWS = 250_000


class _PayloadReader:
    """A bulk load's payload as a binary file (``read(size)``): ``leading`` bytes, then ``encode(slice)``
    of each slice of rows of each table of ``pieces``, built one slice at a time, then ``trailing`` bytes.
    An exception raised building the payload is kept in :attr:`failure`: a driver that calls ``read``
    (psycopg2's ``copy_expert``) reports it as its own error, without it."""

    def __init__(
        self,
        pieces: Iterable[Any],
        encode: Callable[[Any], Any],
        leading: bytes = b"",
        trailing: bytes = b"",
    ) -> None:
        step = PAYLOAD_SLICE_ROWS
        slices = (piece.slice(start, step) for piece in pieces for start in range(0, piece.num_rows, step))
        self._pieces = itertools.chain((leading,), (encode(piece) for piece in slices), (trailing,))
        self._buffer = memoryview(b"")
        self.failure: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            try:
                piece = next(self._pieces, None)
            except BaseException as error:  # an interrupt too: the driver would report it as a failed COPY
                self.failure = error
                raise
            if piece is None:
                return b""
            self._buffer = memoryview(piece)
        if size is None or size < 0:
            size = len(self._buffer)
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk.tobytes()


def _text_columns(columns: Any) -> list[Any]:
    """Each column as text, nulls kept: dates ISO, timestamps as ``isoformat(sep=" ")`` writes them
    (microseconds only when there are some), numbers in decimal."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = []
    for column in columns.itercolumns():
        values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_timestamp(values.type):
            # pyarrow writes "2026-11-20 14:03:00.000000"; isoformat leaves out a zero fraction.
            values = pc.replace_substring(pc.cast(values, pa.string()), ".000000", "")
        elif not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        texts.append(values)
    return texts


def _copy_text_payload(columns: Any, constants: dict[str, Any]) -> Any:
    """The COPY text of ``columns`` (TAB between fields, LF after each row, ``\\N`` for NULL, backslash
    escapes) as one pyarrow buffer."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = [pa.scalar(_copy_text_value(value)) for value in constants.values()]
    for values in _text_columns(columns):
        for special, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
            if pc.any(pc.match_substring(values, special)).as_py():
                values = pc.replace_substring(values, special, escaped)
        fields.append(pc.fill_null(values, "\\N"))
    rows = pc.binary_join_element_wise(*fields, "\t")
    lines = pc.binary_join_element_wise(rows, pa.scalar(""), "\n")  # each row followed by LF
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    return pg_binary_copy.joined_bytes(lines)


def _copy_columns(
    connection: Connection,
    target: str,
    names: list[str],
    quoted: str,
    pieces: Iterator[Any],
    constants: dict[str, Any],
) -> None:
    """One COPY of the tables ``pieces`` into ``target``: in the binary format where the first table's
    values have an exact encoding for their columns' types (pg_binary_copy), else in the text format."""
    types = dict(run_sql(connection, "staging/select_column_types", table_name=target).all())
    target_types = [types.get(name, "") for name in names]
    first = next(pieces)
    pieces = itertools.chain((first,), pieces)
    if pg_binary_copy.binary_encoding(first, constants, target_types):

        def encode(piece: Any) -> Any:
            if piece is not first and not pg_binary_copy.binary_encoding(piece, constants, target_types):
                raise BulkLoadError(
                    f"bulk load into {target} failed: a later chunk's values have no exact binary "
                    "encoding for the columns' types (an integer out of the column's range?)"
                )
            return pg_binary_copy.binary_rows(piece, constants, target_types)

        statement = f"COPY {target} ({quoted}) FROM STDIN WITH (FORMAT binary)"
        payload = _PayloadReader(pieces, encode, pg_binary_copy.SIGNATURE, pg_binary_copy.TRAILER)
    else:
        statement = f"COPY {target} ({quoted}) FROM STDIN"
        payload = _PayloadReader(pieces, lambda piece: _copy_text_payload(piece, constants))
    cursor = connection.connection.cursor()
    try:
        cursor.copy_expert(statement, payload, size=1 << 20)
    except connection.dialect.loaded_dbapi.Error:
        if payload.failure is not None:  # the payload's own error, not the driver's word for it
            raise payload.failure from None
        raise
    finally:
        cursor.close()


def _rows_as_text(columns: Any, constants: dict[str, Any]) -> list[tuple]:
    """The rows of ``columns`` as tuples of text (None for NULL): the INSERT fallback of LOAD DATA."""
    values = [[_sqlite_value(value)] * columns.num_rows for value in constants.values()]
    values += [texts.to_pylist() for texts in _text_columns(columns)]
    return list(zip(*values, strict=True))


def _load_data_payload(
    connection: Connection, target: str, quoted: str, columns: Any, constants: dict[str, Any]
) -> None:
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the server reads it, removed below
        "wb", prefix="pipeline-load-", suffix=".tsv", delete=False
    )
    try:
        with handle:
            payload = _PayloadReader([columns], lambda piece: _copy_text_payload(piece, constants))
            while chunk := payload.read(1 << 22):
                handle.write(chunk)
        _load_data_file(
            connection,
            target,
            quoted,
            handle.name,
            columns.num_rows,
            lambda: _rows_as_text(columns, constants),
        )
    finally:
        os.unlink(handle.name)


def _executemany_columns(
    connection: Connection, target: str, quoted: str, columns: Any, constants: dict[str, Any]
) -> None:
    """SQLite's load: ``executemany`` of an INSERT of :data:`SQLITE_ROWS_PER_INSERT` rows at a time (half
    the cost of one row per INSERT: the per-statement step, not the binding, is what a row pays), the
    constants bound once per statement, in slices of :data:`SQLITE_SLICE_ROWS` rows."""
    import pyarrow as pa

    leading = [_sqlite_value(value) for value in constants.values()]
    width = columns.num_columns
    keep = [pa.types.is_integer(field.type) or pa.types.is_boolean(field.type) for field in columns.schema]
    per_insert = SQLITE_ROWS_PER_INSERT * width
    statement = _multi_row_insert(target, quoted, len(leading), width, SQLITE_ROWS_PER_INSERT)
    cursor = connection.connection.cursor()
    try:
        for start in range(0, columns.num_rows, SQLITE_SLICE_ROWS):
            piece = columns.slice(start, SQLITE_SLICE_ROWS)
            texts = _text_columns(piece)
            flat: list[Any] = [None] * (piece.num_rows * width)  # row after row, as the VALUES bind them
            for index in range(width):
                flat[index::width] = (
                    piece.column(index).to_pylist() if keep[index] else texts[index].to_pylist()
                )
            whole = len(flat) - len(flat) % per_insert
            cursor.executemany(
                statement, ([*leading, *flat[at : at + per_insert]] for at in range(0, whole, per_insert))
            )
            if whole < len(flat):
                rest = (len(flat) - whole) // width
                cursor.execute(
                    _multi_row_insert(target, quoted, len(leading), width, rest), [*leading, *flat[whole:]]
                )
    finally:
        cursor.close()


def _multi_row_insert(target: str, quoted: str, constants: int, width: int, rows: int) -> str:
    """``INSERT INTO target (columns) VALUES (...), (...)`` of ``rows`` rows of ``constants`` values bound
    once (?1 .. ?constants) and ``width`` values of their own."""
    shared = [f"?{number}" for number in range(1, constants + 1)]
    groups = (
        "("
        + ", ".join([*shared, *(f"?{constants + row * width + column}" for column in range(1, width + 1))])
        + ")"
        for row in range(rows)
    )
    return f"INSERT INTO {target} ({quoted}) VALUES {', '.join(groups)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# MySQL errors of a server or client that refuses LOAD DATA LOCAL: 1148 (older servers), 3948 (MySQL 8.0
# with local_infile=OFF), 4166 (MariaDB with local_infile off on either side).
LOCAL_INFILE_REFUSED = (1148, 3948, 4166)
# Key of Connection.info (kept with the pooled DBAPI connection): this connection was refused LOCAL.
_LOCAL_INFILE_REFUSED = "pipeline_local_infile_refused"
# LOAD DATA reads exactly the COPY text format of _copy_text_value: fields split by TAB, rows by LF, "\N"
# is NULL, backslash escapes. Hex literals, because '\t'-style literals change meaning (or fail with
# error 1083) when the session has NO_BACKSLASH_ESCAPES.
_LOAD_DATA = (
    "LOAD DATA LOCAL INFILE %s INTO TABLE {target} CHARACTER SET utf8mb4 "
    "FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' ({columns})"
)


def _load_data_file(
    connection: Connection,
    target: str,
    quoted: str,
    path: str,
    count: int,
    fallback_rows: Callable[[], Sequence[Sequence[Any]]],
) -> None:
    """LOAD DATA LOCAL INFILE of the COPY text file ``path`` (``count`` rows); batched INSERTs of
    ``fallback_rows()`` when the server refuses LOCAL.

    LOCAL makes the server treat bad rows like IGNORE does, even in strict mode (it cannot stop the
    client's transfer half way): a duplicate key is skipped and a bad value stored as something else,
    each with a warning. So any warning, or a row count other than the rows sent, fails the load.

    A refusal is remembered on the connection: the other chunks of a load (and later loads on that
    connection) go straight to INSERTs, with one warning rather than one a chunk."""
    cursor = connection.connection.cursor()
    try:
        refused = connection.info.get(_LOCAL_INFILE_REFUSED, False)
        if not refused:
            try:
                cursor.execute(_LOAD_DATA.format(target=target, columns=quoted), (path,))
            except connection.dialect.loaded_dbapi.Error as error:
                if not error.args or error.args[0] not in LOCAL_INFILE_REFUSED:
                    raise
                log.warning(
                    "the MySQL server refuses LOAD DATA LOCAL INFILE (%s): loading %s with batched "
                    "INSERTs, about 4x slower; set the server's local_infile = ON (docs/mysql.md)",
                    _first_line(error),
                    target,
                )
                refused = connection.info[_LOCAL_INFILE_REFUSED] = True
        if refused:
            rows = fallback_rows()
            cursor.executemany(
                f"INSERT INTO {target} ({quoted}) VALUES ({', '.join('%s' for _ in rows[0])})", rows
            )
        loaded = cursor.rowcount
        cursor.execute("SHOW WARNINGS")
        warnings = cursor.fetchall()
    finally:
        cursor.close()
    if warnings or loaded != count:
        details = "; ".join(f"{level} {code}: {message}" for level, code, message in warnings[:3])
        raise BulkLoadError(
            f"bulk load of {count} rows into {target} failed: the server stored {loaded} rows"
            + (f" with {len(warnings)} warning(s): {details}" if warnings else "")
        )


def normalise_value(value: Any) -> Any:
    """A value read back from any backend in one comparable form (dates and timestamps as text)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
