"""One page of the usage API, parsed and checked row by row (docs/contract.md, section 3).

A page that is not valid JSON, or whose rows miss a field or carry a wrong type, fails the day with an
error naming the page and the row; a company id seen twice in one day (within or across pages) is an
error, not a silent double count.

:func:`parse_usage_page_columns` gives the same page as columns for staging: pyarrow reads the page in C
(its JSON reader, with the page's exact shape as the schema; where that reader refuses the page, Python's
``json`` and a conversion of the rows), and the rules are checked on whole columns. It only does so where
that provably means the same as the row-by-row parse (no float or NaN anywhere in the page, every row an
object of exactly the three fields, ids already trimmed); every other page, and every page with an error,
goes through :func:`parse_usage_page`, which words the error.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.datasets import USAGE_FIELDS
from pipeline.sources.product_api import UsagePageError

# The largest count the warehouse stores: its columns are INTEGER (docs/contract.md section 4), 32 bits
# on PostgreSQL and MySQL. A larger value fails the page here, naming the row, not the load later.
MAX_COUNT = 2**31 - 1


@dataclass(frozen=True)
class UsagePage:
    number: int
    rows: list[tuple[str, int, int]]
    next_cursor: str | None

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def company_ids(self) -> list[str]:
        return [row[0] for row in self.rows]


@dataclass(frozen=True)
class UsageColumns:
    """A page's rows as a ``pyarrow.RecordBatch`` (company_id, active_users, events)."""

    number: int
    batch: Any
    next_cursor: str | None

    @property
    def row_count(self) -> int:
        return self.batch.num_rows

    def company_ids(self) -> list[str]:
        return self.batch.column(0).to_pylist()


def usage_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("company_id", pa.string()), ("active_users", pa.int64()), ("events", pa.int64())])


def parse_usage_page_columns(raw: bytes, day: dt.date, number: int, path: Path | None = None) -> UsageColumns:
    """:func:`parse_usage_page` as columns: the same rows in the same order, or the same error."""
    import pyarrow as pa

    fast = provable_columns(raw, day, number)
    if fast is not None:
        return fast
    page = parse_usage_page(raw, day, number, path)
    values = [list(column) for column in zip(*page.rows, strict=True)] if page.rows else [[], [], []]
    return UsageColumns(page.number, pa.record_batch(values, schema=usage_schema()), page.next_cursor)


def provable_columns(raw: bytes, day: dt.date, number: int) -> UsageColumns | None:
    """The page as columns when every rule holds for every row in a form pyarrow converts exactly as the
    row parse reads it; None otherwise (the caller then parses row by row, which words any error)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.sources.crm_columnar import strip_like_python

    decoded = _read_by_arrow(raw, day)
    if decoded is None:
        decoded = _read_by_json(raw, day)
    if decoded is None:
        return None
    rows, next_cursor = decoded
    columns = rows.flatten()
    if rows.null_count or any(column.null_count for column in columns):
        return None
    company_id, active_users, events = columns
    if len(rows) and (
        pc.min(active_users).as_py() < 0
        or pc.min(events).as_py() < 0
        or pc.max(active_users).as_py() > MAX_COUNT
        or pc.max(events).as_py() > MAX_COUNT
        or pc.min(pc.binary_length(company_id)).as_py() == 0
        or not pc.all(pc.equal(company_id, strip_like_python(company_id))).as_py()
    ):
        return None
    schema = usage_schema()
    return UsageColumns(number, pa.RecordBatch.from_arrays(columns, schema=schema), next_cursor or None)


def _read_by_arrow(raw: bytes, day: dt.date) -> tuple[Any, str | None] | None:
    """The page's rows (a struct array) and cursor by pyarrow's JSON reader, given the page's exact shape:
    one object of ``date`` (text), ``data`` (objects of the three fields) and ``next_cursor`` (text), no
    other field anywhere. The reader refuses what the row parse would not read the same way (a float, a
    bool or text where a count goes, a count past 64 bits, a key twice in an object, an unknown field, an
    escape that is no character): None then, and the page is read by Python's ``json``."""
    import pyarrow as pa
    import pyarrow.json as pajson

    page_schema = pa.schema(
        [("date", pa.string()), ("data", pa.list_(pa.struct(usage_schema()))), ("next_cursor", pa.string())]
    )
    try:
        table = pajson.read_json(
            pa.py_buffer(raw),
            # One block for the whole page: an object split across blocks is refused, not read in parts.
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(raw) + (1 << 20)),
            parse_options=pajson.ParseOptions(
                explicit_schema=page_schema, unexpected_field_behavior="error", newlines_in_values=True
            ),
        )
        table.validate(full=True)  # the reader passes some bytes that are not UTF-8 through; this does not
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    # Exactly one object (blank input reads as none, two objects as two), with its rows as a list.
    if (
        table.num_rows != 1
        or table["data"].null_count
        or table["date"][0].as_py() not in (None, day.isoformat())
    ):
        return None
    rows = table["data"].combine_chunks().values
    return rows, table["next_cursor"][0].as_py()


def _read_by_json(raw: bytes, day: dt.date) -> tuple[Any, str | None] | None:
    """The page's rows (a struct array) and cursor by Python's ``json`` and a conversion of the rows; None
    where that conversion could differ from the row parse."""
    import pyarrow as pa

    inexact: list[str] = []

    def note_inexact(text: str) -> float:
        # pyarrow would truncate 3.5 to 3 in an integer column: any float or NaN sends the page row by row
        inexact.append(text)
        return float(text)

    try:
        body = json.loads(raw, parse_float=note_inexact, parse_constant=note_inexact)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if inexact or type(body) is not dict or body.get("date") not in (None, day.isoformat()):
        return None
    data, next_cursor = body.get("data"), body.get("next_cursor")
    if type(data) is not list or not (next_cursor is None or type(next_cursor) is str):
        return None
    # Exactly three keys, and (in the caller) none of the three fields missing or null: the three fields only.
    if not all(type(item) is dict and len(item) == 3 for item in data):
        return None
    try:
        rows = pa.array(data, type=pa.struct(usage_schema()))  # refuses a bool or text where an integer goes
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
        return None  # UnicodeEncodeError: a lone surrogate (the rows refuse it, naming the row)
    return rows, next_cursor


@dataclass(frozen=True)
class DecodedPage:
    """A page's JSON, its envelope checked (:func:`decode_usage_page`); its rows not yet checked."""

    number: int
    data: list[Any]
    next_cursor: str | None
    where: str  # "usage page N of D (path)", the start of every error about it
    # Whether the page may hold a \u escape (or is UTF-16 or UTF-32, whose bytes hold NULs): only an escape
    # makes text that UTF-8 cannot hold (a lone surrogate), so only such a page has its ids checked for one.
    escapes: bool = False


def parse_usage_page(raw: bytes, day: dt.date, number: int, path: Path | None = None) -> UsagePage:
    """Validate one page: JSON, the day asked for, ``data`` a list of well-typed rows, a cursor."""
    return checked_usage_page(decode_usage_page(raw, day, number, path))


def decode_usage_page(raw: bytes, day: dt.date, number: int, path: Path | None = None) -> DecodedPage:
    """The first half of :func:`parse_usage_page`: the JSON and its envelope (an object, the day asked
    for, ``data`` a list, ``next_cursor`` a string or null): enough to ask for the next page."""
    where = f"usage page {number} of {day.isoformat()}" + (f" ({path})" if path else "")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsagePageError(
            f"{where}: not valid JSON ({error}); the raw page is kept for inspection"
        ) from error
    if not isinstance(body, dict):
        raise UsagePageError(f"{where}: expected a JSON object, got {type(body).__name__}")
    if body.get("date") not in (None, day.isoformat()):
        raise UsagePageError(f"{where}: the page is for date {body.get('date')!r}, not {day.isoformat()}")
    data = body.get("data")
    if not isinstance(data, list):
        raise UsagePageError(f"{where}: 'data' must be a list, got {type(data).__name__}")
    next_cursor = body.get("next_cursor")
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise UsagePageError(f"{where}: 'next_cursor' must be a string or null")
    return DecodedPage(number, data, next_cursor or None, where, escapes=b"\\u" in raw or b"\x00" in raw)


def checked_usage_page(page: DecodedPage) -> UsagePage:
    """The second half of :func:`parse_usage_page`: every row of a decoded page checked."""
    where = page.where
    rows: list[tuple[str, int, int]] = []
    append = rows.append
    plain_text = not page.escapes
    for index, item in enumerate(page.data, start=1):
        # The common case, checked inline (a day can hold a million rows); anything unusual goes through
        # _usage_row, which applies the same rules and words the error.
        if type(item) is dict and len(item) == 3:
            company_id, users, events = item.get("company_id"), item.get("active_users"), item.get("events")
            if (
                type(users) is int
                and type(events) is int
                and type(company_id) is str
                and 0 <= users <= MAX_COUNT
                and 0 <= events <= MAX_COUNT
                and company_id == company_id.strip()
                and company_id
                and (plain_text or _is_utf8_text(company_id))
            ):
                append((company_id, users, events))
                continue
        append(_usage_row(item, f"{where}, row {index}"))
    return UsagePage(number=page.number, rows=rows, next_cursor=page.next_cursor)


def _is_utf8_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _usage_row(item: Any, where: str) -> tuple[str, int, int]:
    if not isinstance(item, dict):
        raise UsagePageError(f"{where}: expected an object, got {json.dumps(item)[:80]}")
    missing = [name for name in USAGE_FIELDS if name not in item]
    if missing:
        unexpected = sorted(set(item) - set(USAGE_FIELDS))
        extra = f"; unexpected field(s) {', '.join(unexpected)} (schema drift?)" if unexpected else ""
        raise UsagePageError(f"{where}: missing field(s) {', '.join(missing)}{extra}")
    company_id = item["company_id"]
    if not isinstance(company_id, str) or not company_id.strip():
        raise UsagePageError(f"{where}: company_id must be a non-empty string, got {json.dumps(company_id)}")
    if not _is_utf8_text(company_id):
        raise UsagePageError(
            f"{where}: company_id {json.dumps(company_id)} is not text the warehouse can store "
            "(an escaped lone surrogate)"
        )
    # Trimmed like the CRM snapshot's ids: "C1 " is the company C1 on every backend (MySQL's PAD SPACE
    # collations would match it with "C1" while PostgreSQL and SQLite would not).
    company_id = company_id.strip()
    counts = []
    for name in ("active_users", "events"):
        value = item[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsagePageError(
                f"{where} (company_id {company_id!r}): {name} must be a non-negative integer, "
                f"got {json.dumps(value)}"
            )
        if value > MAX_COUNT:
            raise UsagePageError(
                f"{where} (company_id {company_id!r}): {name} is {value}, more than the warehouse's "
                f"INTEGER holds ({MAX_COUNT})"
            )
        counts.append(value)
    return (company_id, counts[0], counts[1])


class DuplicateTracker:
    """Finds a company_id that appears twice in one day, naming both pages."""

    def __init__(self, day: dt.date) -> None:
        self.day = day
        self._seen: set[str] = set()
        self._pages: list[tuple[int, list[str]]] = []  # each page's ids: the first page of a twin

    def add(self, page: UsagePage | UsageColumns) -> None:
        ids = page.company_ids()
        unique = set(ids)
        if len(unique) == len(ids) and self._seen.isdisjoint(unique):
            self._seen |= unique  # the common case, at C speed
            self._pages.append((page.number, ids))
            return
        on_this_page: set[str] = set()
        for company_id in ids:
            if company_id in self._seen:
                first = next(number for number, earlier in self._pages if company_id in earlier)
                raise self._twin(company_id, f"page {first} and page {page.number}")
            if company_id in on_this_page:
                raise self._twin(company_id, f"page {page.number}")
            on_this_page.add(company_id)

    def _twin(self, company_id: str, pages: str) -> UsagePageError:
        return UsagePageError(
            f"usage for {self.day.isoformat()}: company_id {company_id!r} appears twice (in {pages}); "
            "refusing to double count"
        )
