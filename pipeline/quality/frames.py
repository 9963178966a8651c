"""A day's rows read from the warehouse as the DataFrames the suites check.

Typed as the suites expect (timestamps as datetime64[ns], the churn flag as TRUE/FALSE/NULL objects) so
that one suite means the same on every backend, and the same frame whatever the read path:

* PostgreSQL: ``COPY (<the select>) TO STDOUT`` in CSV, parsed by pyarrow with an explicit type per
  column (:func:`copy_out_frame`): psycopg2 built a Python tuple and a datetime per row, the whole day
  as Python objects before pandas copied it; the CSV is one bytes buffer, parsed in C (a million CRM rows:
  3.2 s and 600 MB of peak memory before, 1.0 s and 190 MB after, ``bench/bench_readback.py``).
* SQLite and MariaDB: the DBAPI cursor's rows (:func:`_fetched_frame`). ``pandas.read_sql`` (the same
  fetchall, then a frame built from the records) measured within 5% of it, fetching by columns slower.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy.engine import Connection

from pipeline.warehouse.sql import bound_statement, is_postgres, rendered_sql, run_sql, sql_context

# The type of every column the validation queries return, for the CSV of COPY: explicit, never inferred
# from the values (an id "007" must stay text, an all-NULL column must not become a guess).
_COPY_COLUMN_TYPES = {
    "company_id": "string",
    "company_name": "string",
    "country": "string",
    "industry_tag": "string",
    "last_contact_at": "timestamp",
    "active_users": "int64",
    "events": "int64",
    "7d_active_users": "int64",
    "is_churn_risk": "bool",
}

# FORCE_QUOTE *: every non-NULL value is quoted, and COPY writes NULL as an unquoted empty field, so an
# empty string ("") and NULL are told apart exactly (the parser is told that only unquoted fields may be
# NULL); "NA", "null" and the like are plain quoted text.
_COPY_TO_CSV = b"COPY (%s) TO STDOUT WITH (FORMAT csv, HEADER true, FORCE_QUOTE *)"


class ReadBackError(RuntimeError):
    """A validation query returned a column the COPY read-back has no type for."""


def _frame(connection: Connection, name: str, **params: Any) -> Any:
    """The rows of ``sql/<name>.sql`` as a DataFrame, the same on every backend and read path."""
    if is_postgres(connection):
        return copy_out_frame(connection, name, **params)
    return _fetched_frame(run_sql(connection, name, **params))


def _fetched_frame(result: Any) -> Any:
    """A DataFrame of a result's rows, read from the DBAPI cursor: building it from SQLAlchemy Row objects
    costs 5x more (0.6 s against 0.1 s per 100,000 rows), more than the checks themselves."""
    import pandas as pd

    columns = list(result.keys())
    cursor = getattr(result, "cursor", None)
    rows = cursor.fetchall() if cursor is not None else [tuple(row) for row in result.fetchall()]
    result.close()
    return pd.DataFrame(rows, columns=columns)


def copy_out(connection: Connection, name: str, buffer: Any, **params: Any) -> str:
    """Write the rows of ``sql/<name>.sql`` to ``buffer`` (a binary file) as CSV with a header, by
    PostgreSQL's ``COPY ... TO STDOUT``, in the connection's transaction (so a merge's uncommitted day is
    what is read). Returns the Python name of the bytes' encoding (the connection's client encoding).

    The statement is the file as :func:`run_sql` runs it: rendered for the engine, values bound typed by
    the same binding and rendered into the statement by psycopg2's own quoting (``cursor.mogrify``), as
    COPY takes no parameters. Text columns come back quoted, NULL unquoted and empty (see _COPY_TO_CSV).
    """
    import psycopg2.extensions

    if not connection.in_transaction():
        connection.begin()  # what run_sql's execute would do: the read is part of the caller's transaction
    statement = bound_statement(rendered_sql(name, sql_context(connection)), params)
    compiled = statement.compile(dialect=connection.dialect)
    cursor = connection.connection.cursor()
    try:
        select = cursor.mogrify(compiled.string, compiled.params)
        # psycopg2 sets DateStyle ISO on connecting (it parses dates itself): timestamps are ISO text.
        cursor.copy_expert(_COPY_TO_CSV % select, buffer)
        encoding = cursor.connection.encoding
    finally:
        cursor.close()
    return psycopg2.extensions.encodings.get(encoding, encoding)


def copy_out_frame(connection: Connection, name: str, **params: Any) -> Any:
    """The rows of ``sql/<name>.sql`` on PostgreSQL by COPY, as the DataFrame the cursor path builds
    (:func:`_fetched_frame`): same columns, dtypes and values.

    That frame's dtypes are pandas' inference from Python values, and kept here: text as pandas' string
    dtype (NaN for NULL), integers as int64 (float64 with NaN when a NULL is among them), timestamps as
    datetime64, booleans as bool (objects with None when a NULL is among them); a column that is NULL in
    every row is an object column of None, and an empty result has object columns."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv  # pa.csv below

    buffer = io.BytesIO()
    encoding = copy_out(connection, name, buffer, **params)
    buffer.seek(0)
    columns = next(csv.reader([buffer.readline().decode(encoding)]))
    unknown = [column for column in columns if column not in _COPY_COLUMN_TYPES]
    if unknown:
        raise ReadBackError(f"sql/{name}.sql returns column(s) {', '.join(unknown)} of no known type")
    buffer.seek(0)
    types = {column: _arrow_type(pa, _COPY_COLUMN_TYPES[column]) for column in columns}
    table = _parse_csv(pa, buffer, encoding, types)
    del buffer  # the CSV's bytes go before pandas' copy is made
    all_null = [column for column in columns if table.column(column).null_count == table.num_rows]
    frame = table.to_pandas()
    # As pandas infers a column of None (and every column of an empty day): objects, not typed NaN/NaT.
    for column in all_null:
        frame[column] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame


def _arrow_type(pa: Any, name: str) -> Any:
    return {
        "string": pa.string(),
        "timestamp": pa.timestamp("us"),  # PostgreSQL's resolution
        "int64": pa.int64(),
        "bool": pa.bool_(),
    }[name]


def _parse_csv(pa: Any, source: Any, encoding: str, types: dict[str, Any]) -> Any:
    return pa.csv.read_csv(
        source,
        read_options=pa.csv.ReadOptions(encoding=encoding),
        # Values may hold newlines (quoted, as COPY writes them).
        parse_options=pa.csv.ParseOptions(newlines_in_values=True),
        convert_options=pa.csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def crm_frame(connection: Connection, snapshot_date: dt.date) -> Any:
    """The staged snapshot, ``last_contact_at`` as datetime64[ns] (NaT where it does not parse).

    ``last_contact_at_unparseable`` holds the value as loaded where it does not parse (None elsewhere),
    so that 'parseable' is a check of the suite like the others, with examples; a row condition on the
    loaded values would cost GE a copy of the whole frame (1.1 s per million rows)."""
    import pandas as pd

    frame = _frame(connection, "staging/select_staged_crm_day", snapshot_date=snapshot_date)
    loaded = frame["last_contact_at"]
    # datetime64[ns]: GE compares it with the bound vectorised; other units fall back to a slow Python
    # loop. The bound is a full timestamp: date-only strings misbehave against datetimes on pandas 3.
    parsed = pd.to_datetime(loaded, errors="coerce", format="ISO8601").astype("datetime64[ns]")
    unparseable = parsed.isna() & loaded.notna()
    # Objects only for the unparseable values (none on PostgreSQL and MariaDB, whose column is a
    # timestamp): turning every loaded value into an object first cost 2.4 s a million rows.
    values = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if unparseable.any():
        values[unparseable] = loaded[unparseable].astype(object)
    frame["last_contact_at"] = parsed
    frame["last_contact_at_unparseable"] = values
    return frame


def usage_frame(connection: Connection, activity_date: dt.date) -> Any:
    frame = _frame(connection, "staging/select_staged_usage_day", activity_date=activity_date)
    if frame.empty:  # keep the integer columns integer: an empty day must fail as empty, nothing else
        frame = frame.astype({"company_id": object, "active_users": "int64", "events": "int64"})
    return frame


def output_frame(connection: Connection, activity_date: dt.date) -> Any:
    import pandas as pd

    frame = _frame(
        connection, "quality/select_company_daily_activity_day_for_validation", activity_date=activity_date
    )
    # TRUE/FALSE/NULL on both backends (SQLite returns 1/0, as floats once a NULL is among them): an
    # object column of booleans, so that NULL never equals TRUE in the suite's row condition.
    raw = frame["is_churn_risk"]
    known = raw.notna()
    flags = pd.Series(None, index=frame.index, dtype=object)
    flags[known] = raw[known].astype(bool)
    frame["is_churn_risk"] = flags
    return frame
