"""The CRM snapshot read column by column (pyarrow), with the precise parser's exact meaning.

A million-row snapshot takes seconds through :func:`crm_snapshot.parse_snapshot`, which reads every row
with Python's ``csv`` module and builds a Python object per company. Here pyarrow's C++ CSV reader reads
the file into columns and every rule of the contract (docs/contract.md, section 2) is checked on whole
columns: ids present after trimming and unique, timestamps ISO 8601 converted to UTC, empty values
unknown.

The fast reading is used only where it provably means what the precise parser means:

- the bytes have no NUL, no carriage return outside CRLF, and every line is made of plain fields (no
  quote) and fields quoted from first to last character with inner quotes doubled, so Python's strict
  ``csv`` reader and pyarrow split them into the same values (the line check runs in RE2 over all lines);
- no field is as long as ``csv.field_size_limit()``;
- values are trimmed exactly as ``str.strip`` does (values that start or end with anything but printable
  ASCII are trimmed by ``str.strip`` itself);
- timestamps of the common ISO shapes (``2026-11-20``, ``2026-11-20T14:03``, seconds, 1-6 digit fractions,
  ``Z`` or ``+hh:mm``) are converted on the column, calendar checked; any other non-empty value is parsed
  one by one by :func:`crm_snapshot.parse_timestamp`, the precise parser's own function.

Anything else, and every file with an error, goes to the precise parser: it names the first bad row, line
and column, or returns the same companies (then turned into the same columns). Which reader was used,
and why the fast one was not, is logged.

Staging reads the file in chunks of whole lines (:class:`ColumnarCrm`, about :data:`CHUNK_BYTES` each),
so that the warehouse loads one chunk while the next is read, and a million-row day is never one table in
memory. A chunk that cannot be proven raises :class:`NotProvable` where it is found, and the load that
consumed the chunks before it rolls back. Unique ids are the one rule checked on the whole file: the
staged table's key refuses a duplicate, and the precise parser then names it
(``pipeline.warehouse.staging.stage_landed_crm``); :func:`parse_table` checks them on its columns.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.datasets import CRM_REQUIRED_COLUMNS
from pipeline.sources import crm_snapshot

log = logging.getLogger(__name__)

# The staged columns of a snapshot, in order, as pyarrow types (timestamps: UTC without a zone).
TABLE_COLUMNS = ("company_id", "company_name", "country", "industry_tag", "last_contact_at")
_TRIMMED_COLUMNS = ("company_id", "country", "industry_tag", "last_contact_at")

_QUOTED_FIELD = r'"(?:[^"\r\n]|"")*"'
_PLAIN_FIELD = r'[^",\r\n]*'
_FIELD = f"(?:{_PLAIN_FIELD}|{_QUOTED_FIELD})"
_FIELDS = f"{_FIELD}(?:,{_FIELD})*"
# A line whose fields Python's csv (strict) and pyarrow split into the same values: without its line end
# (the header), and with it (the lines of _lines).
_AGREED_LINE = f"^{_FIELDS}$"
_AGREED_LINE_WITH_END = f"^{_FIELDS}\\r?\\n?$"
# What str.strip removes from ASCII text (Python's whitespace includes the separators \x1c-\x1f).
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
# The ISO 8601 shapes converted on the column, where pyarrow's cast and datetime.fromisoformat read
# the same instant; any other value is parsed by crm_snapshot.parse_timestamp.
_ISO_LOCAL = r"[1-9]\d{3}-\d{2}-\d{2}(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?)?"
_NAIVE_TIMESTAMP = f"^{_ISO_LOCAL}$"
_ZONED_TIMESTAMP = (
    r"^[1-9]\d{3}-\d{2}-\d{2}[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
_LATEST = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
# Staging reads a file in chunks of whole lines of about this many bytes (~35,000 rows of a usual
# snapshot): small enough for the warehouse to load one while the next is read (the first chunk is read
# before anything loads) and for a chunk's memory to be reused by the next, large enough that each column
# step runs over many rows at once. In alternating runs 2 MiB staged 100,000 rows 16% faster than 4 MiB on
# PostgreSQL and a million 4% faster; 8 MiB was slower than 4 MiB (docs/benchmarks.md).
CHUNK_BYTES = 2 << 20


@dataclass
class CrmTable:
    """A parsed snapshot as columns (:data:`TABLE_COLUMNS`, a ``pyarrow.Table``)."""

    source: str
    table: Any
    warnings: list[str] = field(default_factory=list)
    reader: str = "columnar"  # or "precise", when the fast reading could not prove its meaning

    @classmethod
    def of_snapshot(cls, snapshot: crm_snapshot.CrmSnapshot) -> CrmTable:
        """The columns of a snapshot parsed by the precise parser."""
        return cls(snapshot.source, table_of_companies(snapshot.companies), snapshot.warnings, "precise")

    @property
    def row_count(self) -> int:
        return self.table.num_rows


class NotProvable(Exception):
    """The columnar reading cannot prove it means what the precise parser means; the caller reads the file
    with the precise parser, and logs this reason."""


class ColumnarCrm:
    """A snapshot whose header and bytes passed the whole-file checks (else :class:`NotProvable`), to be
    read chunk by chunk.

    :meth:`chunks` yields the columns (:data:`TABLE_COLUMNS`) of about :data:`CHUNK_BYTES` of whole lines
    at a time and raises :class:`NotProvable` at the first chunk it cannot prove; ids are not checked to be
    unique across chunks (the staged table's key does that)."""

    reader = "columnar"

    def __init__(self, data: bytes, source: str, chunk_bytes: int | None = None) -> None:
        self.source = source
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        columns, rows_start = _check_whole_file(body, source)
        self.warnings = crm_snapshot.extra_column_warnings(columns, source)
        self._body = body
        self._width = len(columns)
        self._required = [columns.index(name) for name in CRM_REQUIRED_COLUMNS]
        self._bounds = _chunk_bounds(body, rows_start, chunk_bytes or CHUNK_BYTES)

    def chunks(self) -> Iterator[Any]:
        rows = 0
        for start, end in self._bounds:
            table = _chunk_table(self._body, start, end, self._width, self._required)
            rows += table.num_rows
            if table.num_rows:
                yield table
        if rows == 0:
            raise NotProvable("no rows")


def parse_table(data: bytes, source: str) -> CrmTable:
    """Parse a snapshot's bytes into one table of columns: fast where provably exact, else by the precise
    parser."""
    try:
        return _whole_table(ColumnarCrm(data, source))
    except NotProvable as reason:
        log.info("%s: read by the precise parser: %s", source, reason)
    return CrmTable.of_snapshot(crm_snapshot.parse_snapshot_bytes(data, source))


def _whole_table(reading: ColumnarCrm) -> CrmTable:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.concat_tables(reading.chunks()).combine_chunks()
    ids = table["company_id"]
    if len(pc.unique(ids)) != len(ids):
        raise NotProvable("duplicate company_id")
    return CrmTable(reading.source, table, reading.warnings)


def table_of_companies(companies: list[crm_snapshot.CrmCompany]) -> Any:
    """The columns of companies parsed by the precise parser."""
    import pyarrow as pa

    columns = list(zip(*(company.as_row() for company in companies), strict=True)) or [()] * 5
    return pa.table(
        {
            name: pa.array(values, type=_type(name))
            for name, values in zip(TABLE_COLUMNS, columns, strict=True)
        }
    )


def _type(name: str) -> Any:
    import pyarrow as pa

    return pa.timestamp("us") if name == "last_contact_at" else pa.string()


def _check_whole_file(body: bytes, source: str) -> tuple[list[str], int]:
    """The checks of the whole file's bytes and of its header: its columns, and where its rows start."""
    if not body or body.isspace():  # as bytes.strip() would leave nothing, without copying the file
        raise NotProvable("the file is empty")
    if b"\x00" in body or (b"\r" in body and body.count(b"\r") != body.count(b"\r\n")):
        raise NotProvable("NUL bytes or carriage returns outside CRLF line ends")
    header_end = body.find(b"\n")
    rows_start = len(body) if header_end < 0 else header_end + 1
    header_line = body[: header_end if header_end >= 0 else len(body)].rstrip(b"\r")
    try:
        header_text = header_line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotProvable("the header is not UTF-8") from error
    if not re.fullmatch(_AGREED_LINE, header_text):
        raise NotProvable("the header has quotes that are not whole quoted fields")
    try:
        header = next(csv.reader([header_text], strict=True))
    except csv.Error as error:  # a name past the field size limit: the precise parser names the line
        raise NotProvable(f"the header cannot be read as csv ({error})") from error
    return crm_snapshot.check_header([name.strip() for name in header], source), rows_start


def _chunk_bounds(body: bytes, start: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive pieces of ``body[start:]``, each about ``chunk_bytes`` long and ending
    after a line feed (or at the end of the file). A line feed ends a record in every file the columns
    read: a quoted line break is refused by the line check."""
    bounds = []
    while start < len(body):
        cut = body.find(b"\n", start + chunk_bytes)
        end = len(body) if cut < 0 else cut + 1
        bounds.append((start, end))
        start = end
    return bounds


def _chunk_table(body: bytes, start: int, end: int, width: int, required: list[int]) -> Any:
    """The columns of the whole lines ``body[start:end]``, every rule but unique ids checked."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    chunk = memoryview(body)[start:end]
    has_quotes = body.find(b'"', start, end) >= 0
    has_extra_columns = width > len(required)
    line_ends = _line_ends(chunk) if has_quotes or has_extra_columns else None
    if has_quotes:
        _check_lines_agree(chunk, line_ends)
    limit = csv.field_size_limit()
    if has_extra_columns and int(np.diff(line_ends, prepend=0).max()) >= limit:
        # The columns not read (extra ones) are not measured below; a line this long may hold a field
        # the csv module refuses. Characters are never more than bytes, so shorter lines cannot.
        raise NotProvable(f"a line of a file with extra columns reaches the csv field size limit ({limit})")
    table = _read_fields(chunk, width, required)
    for name in table.column_names:
        # Characters are never more than bytes: they are counted only where the bytes reach the limit.
        if (
            table.num_rows
            and pc.max(pc.binary_length(table[name])).as_py() >= limit
            and pc.max(pc.utf8_length(table[name])).as_py() >= limit
        ):
            raise NotProvable(f"a value of column {name} reaches the csv field size limit ({limit})")
    values = {name: table[name].combine_chunks() for name in table.column_names}
    for name in _TRIMMED_COLUMNS:
        values[name] = strip_like_python(values[name])
    if pc.any(pc.equal(values["company_id"], "")).as_py():
        raise NotProvable("an empty company_id")
    for name in ("company_name", "country", "industry_tag"):
        values[name] = _empty_as_null(values[name])
    values["last_contact_at"] = _timestamps(values["last_contact_at"])
    return pa.table({name: values[name] for name in TABLE_COLUMNS})


def _line_ends(chunk: memoryview) -> Any:
    """Where each line of ``chunk`` ends (a numpy array of offsets): after its line feed, or at the end of
    the chunk for a last line without one."""
    import numpy as np

    line_ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord("\n")) + 1
    if not len(line_ends) or line_ends[-1] != len(chunk):
        line_ends = np.append(line_ends, len(chunk))
    return line_ends


def _check_lines_agree(chunk: memoryview, line_ends: Any) -> None:
    """Every line with a quote is made of fields that Python's strict csv reader and pyarrow read alike."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    offsets = np.concatenate(([0], line_ends)).astype(np.int32)
    lines = pa.BinaryArray.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(chunk)]
    )
    # The line of each quote (the first line end after it), each line once: only those lines are matched.
    quotes = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord('"'))
    with_quotes = np.searchsorted(line_ends, quotes, side="right")
    with_quotes = with_quotes[np.concatenate(([True], with_quotes[1:] != with_quotes[:-1]))]
    quoted = lines.take(pa.array(with_quotes))
    if not pc.all(pc.match_substring_regex(quoted, _AGREED_LINE_WITH_END)).as_py():
        raise NotProvable("a line with quotes that are not whole quoted fields (or a quoted line break)")


def _all_text(names: list[str], include: list[str] | None = None) -> Any:
    """Conversion options that keep every field as the text it is: no NULL, no type inference."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    return pcsv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        include_columns=include or names,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[],
    )


def _read_fields(lines: memoryview, width: int, required: list[int]) -> Any:
    """The required fields of whole lines (no header) as text, as Python's csv module splits them."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    names = [f"field_{index}" for index in range(width)]
    try:
        table = pcsv.read_csv(
            pa.py_buffer(lines),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 26),
            parse_options=pcsv.ParseOptions(quote_char='"', double_quote=True, newlines_in_values=False),
            convert_options=_all_text(names, [names[index] for index in required]),
        )
    except pa.ArrowInvalid as error:  # a row of another width, bytes that are not UTF-8...
        raise NotProvable(f"pyarrow refused the file ({str(error).splitlines()[0][:200]})") from error
    return table.rename_columns(list(CRM_REQUIRED_COLUMNS))


def strip_like_python(values: Any) -> Any:
    """``str.strip`` of every value: on the column for ASCII text (the exact set of characters Python
    removes), by Python itself for the values with other characters."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.ascii_trim(values, characters=_ASCII_WHITESPACE)
    other = pc.invert(pc.string_is_ascii(values))
    if not pc.any(other).as_py():
        return trimmed
    stripped = [value.strip() for value in values.filter(other).to_pylist()]
    return pc.replace_with_mask(trimmed, other, pa.array(stripped, type=pa.string()))


def _empty_as_null(values: Any) -> Any:
    import pyarrow.compute as pc

    return pc.if_else(pc.equal(values, ""), None, values)


def _timestamps(values: Any) -> Any:
    """Trimmed text to UTC timestamps without a zone, with datetime.fromisoformat's meaning."""
    import pyarrow as pa
    import pyarrow.compute as pc

    naive = pc.match_substring_regex(values, _NAIVE_TIMESTAMP)
    zoned = pc.match_substring_regex(values, _ZONED_TIMESTAMP)
    try:
        stamps = pc.cast(pc.if_else(naive, values, None), pa.timestamp("us"))
        in_utc = pc.cast(pc.if_else(zoned, values, None), pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid as error:  # a day or time the calendar does not have
        raise NotProvable(f"an impossible timestamp ({str(error)[:200]})") from error
    stamps = pc.if_else(zoned, pc.cast(in_utc, pa.timestamp("us")), stamps)
    if pc.any(pc.greater(stamps, pa.scalar(_LATEST, pa.timestamp("us")))).as_py():
        raise NotProvable("a timestamp past year 9999 in UTC")
    others = pc.invert(pc.or_(pc.or_(naive, zoned), pc.equal(values, "")))
    if pc.any(others).as_py():
        try:
            parsed = [crm_snapshot.parse_timestamp(text) for text in values.filter(others).to_pylist()]
        except ValueError as error:
            raise NotProvable("a last_contact_at that is not ISO 8601") from error
        stamps = pc.replace_with_mask(stamps, others, pa.array(parsed, type=pa.timestamp("us")))
    return stamps
