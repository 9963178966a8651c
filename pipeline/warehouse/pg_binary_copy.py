"""PostgreSQL's binary COPY format built on pyarrow columns, without a Python object per row.

COPY's text format makes the server parse every value from text (a timestamp costs a date parser per row)
and the client format every value as text, with escapes. The binary format sends each value as the
server stores it: a million staged CRM rows load in about two thirds of the server's time, and the
payload is built in a fraction of the text one's (docs/benchmarks.md).

The binary format must match the target column's type exactly (an ``int8`` sent into an ``integer``
column is refused), so :func:`binary_encoding` pairs each arrow column with its target column's type and
says no where a pair has no exact encoding here (another type, an integer out of the column's range, a
timestamp with a zone or finer than microseconds). The load then uses the text format: the server's own
error for a bad value stays exactly what it was.

Layout (PostgreSQL's documentation, "COPY", "Binary Format"): a signature and header; per row, the field
count (int16) and, per field, its byte length (int32, -1 for NULL) and its bytes, big-endian; a trailer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, header extension length 0
TRAILER = b"\xff\xff"  # a field count of -1

_NULL_LENGTH = -1
_POSTGRES_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_DAYS = (_POSTGRES_EPOCH.date() - dt.date(1970, 1, 1)).days
_EPOCH_MICROSECONDS = _EPOCH_DAYS * 86_400_000_000

# Target types (as ``format_type`` names them, without a length) by how their values are sent.
_TEXT_TYPES = frozenset({"character varying", "text", "character"})
_INTEGER_BYTES = {"smallint": 2, "integer": 4, "bigint": 8}
_DATE_TYPE = "date"
_TIMESTAMP_TYPE = "timestamp without time zone"


def binary_encoding(columns: Any, constants: dict[str, Any], target_types: Sequence[str]) -> bool:
    """Whether every column of ``columns`` (a ``pyarrow.Table``) and every constant has an exact binary
    encoding for its target column's type (``target_types``: constants first, then the table's columns)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    constant_types, column_types = target_types[: len(constants)], target_types[len(constants) :]
    for value, target in zip(constants.values(), constant_types, strict=True):
        if _constant_field(value, target) is None:
            return False
    for values, target in zip(columns.itercolumns(), column_types, strict=True):
        kind = values.type
        if target in _TEXT_TYPES:
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                return False
        elif target in _INTEGER_BYTES:
            if not pa.types.is_integer(kind):
                return False
            bounds = pc.min_max(values).as_py()
            limit = 1 << (8 * _INTEGER_BYTES[target] - 1)
            if bounds["min"] is not None and not (-limit <= bounds["min"] and bounds["max"] < limit):
                return False
        elif target == _DATE_TYPE:
            if not pa.types.is_date32(kind):
                return False
        elif target == _TIMESTAMP_TYPE:
            if not (pa.types.is_timestamp(kind) and kind.tz is None and kind.unit in ("s", "ms", "us")):
                return False
        else:
            return False
    return True


def binary_rows(columns: Any, constants: dict[str, Any], target_types: Sequence[str]) -> Any:
    """The binary COPY rows of ``columns`` (no signature, no trailer) as one pyarrow buffer; every pair
    of column and type must pass :func:`binary_encoding`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    constant_types, column_types = target_types[: len(constants)], target_types[len(constants) :]
    field_count = len(constants) + columns.num_columns
    leading = _big_endian(field_count, 2)
    for value, target in zip(constants.values(), constant_types, strict=True):
        leading += _constant_field(value, target)
    parts: list[Any] = [pa.scalar(leading, pa.binary())]
    for values, target in zip(columns.itercolumns(), column_types, strict=True):
        parts.extend(_column_fields(_one_chunk(values), target))
    return joined_bytes(pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary())))


def joined_bytes(values: Any) -> Any:
    """The bytes of every value of a string or binary array (int32 offsets), end to end, without a copy."""
    offsets = memoryview(values.buffers()[1]).cast("i")
    return values.buffers()[2][offsets[values.offset] : offsets[values.offset + len(values)]]


def _one_chunk(values: Any) -> Any:
    import pyarrow as pa

    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _column_fields(values: Any, target: str) -> list[Any]:
    """Per row, the field's length (4 bytes) and its bytes (none for NULL), as two binary arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if target in _TEXT_TYPES:
        data = values.cast(pa.binary())
        lengths = pc.fill_null(pc.binary_length(data), _NULL_LENGTH)
        return [_fixed_width(lengths, ">i4"), pc.fill_null(data, pa.scalar(b"", pa.binary()))]
    if target in _INTEGER_BYTES:
        width = _INTEGER_BYTES[target]
        numbers = pc.fill_null(values, 0)
        data = _fixed_width(numbers, f">i{width}")
    elif target == _DATE_TYPE:
        days = pc.subtract(pc.fill_null(values.cast(pa.int32()), _EPOCH_DAYS), _EPOCH_DAYS)
        width, data = 4, _fixed_width(days, ">i4")
    else:  # timestamp without time zone: microseconds since 2000-01-01
        micros = pc.fill_null(values.cast(pa.timestamp("us")).cast(pa.int64()), _EPOCH_MICROSECONDS)
        width, data = 8, _fixed_width(pc.subtract(micros, _EPOCH_MICROSECONDS), ">i8")
    valid = pc.is_valid(values)
    lengths = pc.if_else(valid, pa.scalar(width, pa.int32()), pa.scalar(_NULL_LENGTH, pa.int32()))
    return [_fixed_width(lengths, ">i4"), pc.if_else(valid, data, pa.scalar(b"", pa.binary()))]


def _fixed_width(numbers: Any, numpy_type: str) -> Any:
    """Integers (no nulls) as a binary array of their big-endian bytes."""
    import pyarrow as pa

    encoded = numbers.to_numpy(zero_copy_only=False).astype(numpy_type)
    width = encoded.dtype.itemsize
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(encoded), [None, pa.py_buffer(encoded.tobytes())]
    )
    return fixed.cast(pa.binary())


def _constant_field(value: Any, target: str) -> bytes | None:
    """One value's field (length and bytes), or None where it has no exact encoding for ``target``."""
    if value is None:
        return _big_endian(_NULL_LENGTH, 4)
    if target in _TEXT_TYPES and isinstance(value, str):
        data = value.encode("utf-8")
    elif target in _INTEGER_BYTES and isinstance(value, int) and not isinstance(value, bool):
        width = _INTEGER_BYTES[target]
        if not -(1 << (8 * width - 1)) <= value < 1 << (8 * width - 1):
            return None
        data = _big_endian(value, width)
    elif target == _DATE_TYPE and type(value) is dt.date:
        data = _big_endian(value.toordinal() - _POSTGRES_EPOCH.toordinal(), 4)
    elif target == _TIMESTAMP_TYPE and isinstance(value, dt.datetime) and value.tzinfo is None:
        data = _big_endian((value - _POSTGRES_EPOCH) // dt.timedelta(microseconds=1), 8)
    else:
        return None
    return _big_endian(len(data), 4) + data


def _big_endian(number: int, width: int) -> bytes:
    return number.to_bytes(width, "big", signed=True)
