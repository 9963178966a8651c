"""A usage page as columns means exactly what the row-by-row parse means (docs/contract.md section 3).

The row parse (``parse_usage_page``) is the oracle: on every page, ``parse_usage_page_columns`` returns the
same rows in the same order and the same cursor, or raises the same error naming the same page and row.
"""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from pipeline.sources import usage_pages
from pipeline.sources.product_api import UsagePageError
from pipeline.sources.usage_pages import parse_usage_page, parse_usage_page_columns

DAY = dt.date(2026, 11, 20)


def by_rows(raw: bytes) -> object:
    try:
        page = parse_usage_page(raw, DAY, 3)
    except UsagePageError as error:
        return str(error)
    return page.rows, page.next_cursor


def by_columns(raw: bytes) -> object:
    try:
        page = parse_usage_page_columns(raw, DAY, 3)
    except UsagePageError as error:
        return str(error)
    assert page.number == 3 and page.batch.schema == usage_schema_of_rows()
    return [tuple(row.values()) for row in page.batch.to_pylist()], page.next_cursor


def usage_schema_of_rows():
    return usage_pages.usage_schema()


def page(data: object, **fields: object) -> bytes:
    return json.dumps({"date": DAY.isoformat(), "data": data, "next_cursor": "n2", **fields}).encode()


def took_the_column_path(raw: bytes) -> bool:
    return usage_pages.provable_columns(raw, DAY, 3) is not None


GOOD = [
    {"company_id": "C1", "active_users": 5, "events": 7},
    {"company_id": "C2", "active_users": 0, "events": 0},
]

PAGES = {
    "plain": page(GOOD),
    "empty page": page([]),
    "last page": page(GOOD, next_cursor=None),
    "no date field": json.dumps({"data": GOOD}).encode(),
    "unicode ids": page([{"company_id": "Zürich ÄG", "active_users": 1, "events": 1}]),
    "the largest counts": page([{"company_id": "C1", "active_users": 2**31 - 1, "events": 2**31 - 1}]),
    "an unrelated field": page(GOOD, meta={"total": 2}),
    "escapes in an id": page([{"company_id": "C\u00e9\ud83d\ude00\u0000", "active_users": 1, "events": 1}]),
    "an escaped key": b'{"data": [{"\\u0063ompany_id": "C1", "active_users": 1, "events": 2}]}',
    "printed over lines": json.dumps({"date": DAY.isoformat(), "data": GOOD}, indent=2).encode(),
    "a byte order mark": b"\xef\xbb\xbf" + page(GOOD),
    "a page over a MiB": page(
        [{"company_id": f"C{n:07d}", "active_users": n % 7, "events": n % 11} for n in range(25_000)]
    ),
    "an empty cursor": page(GOOD, next_cursor=""),
    # Accepted by the rows but not provably by the columns: they go row by row, same result.
    "a float elsewhere": page(GOOD, meta=1.5),
    "an id to trim": page([{"company_id": " C1\t", "active_users": 1, "events": 1}]),
    "an id with unicode space": page([{"company_id": "\u2003C1\u00a0", "active_users": 1, "events": 1}]),
    "an id with a separator": page([{"company_id": "C1\x1f", "active_users": 1, "events": 1}]),
    "an extra field": page([{"company_id": "C1", "active_users": 1, "events": 1, "plan": "pro"}]),
    "keys twice": b'{"data": [{"company_id": "A", "company_id": "B", "active_users": 1, "events": 2}]}',
    # Errors: the same message either way.
    "a float count": page([{"company_id": "C1", "active_users": 3.5, "events": 1}]),
    "an integral float count": page([{"company_id": "C1", "active_users": 3.0, "events": 1}]),
    "NaN": b'{"data": [{"company_id": "C1", "active_users": NaN, "events": 1}]}',
    "a bool count": page([{"company_id": "C1", "active_users": True, "events": 1}]),
    "a text count": page([{"company_id": "C1", "active_users": "3", "events": 1}]),
    "a null count": page([{"company_id": "C1", "active_users": None, "events": 1}]),
    "a count above INTEGER": page([{"company_id": "C1", "active_users": 1, "events": 2**31}]),
    "a count above 64 bits": page([{"company_id": "C1", "active_users": 2**70, "events": 1}]),
    "a negative count": page([{"company_id": "C1", "active_users": 1, "events": -1}]),
    "a missing field": page([{"company_id": "C1", "active_users": 1, "plan": 1}]),
    "a numeric id": page([{"company_id": 17, "active_users": 1, "events": 1}]),
    "an empty id": page([{"company_id": "", "active_users": 1, "events": 1}]),
    "a blank id": page([{"company_id": "  ", "active_users": 1, "events": 1}]),
    "a null id": page([{"company_id": None, "active_users": 1, "events": 1}]),
    "a row that is a list": page([["C1", 1, 1]]),
    "a null row": page([None]),
    "data not a list": page({"C1": 1}),
    "another day": page(GOOD, date="2026-11-19"),
    "a numeric cursor": page(GOOD, next_cursor=5),
    "not an object": b"[1, 2]",
    "not JSON": b'{"data": [',
    "not UTF-8": b'{"data": [{"company_id": "\xff", "active_users": 1, "events": 1}]}',
    "not UTF-8 inside an id": b'{"data": [{"company_id": "C\xff1", "active_users": 1, "events": 1}]}',
    "a lone surrogate": b'{"data": [{"company_id": "C\\ud800", "active_users": 1, "events": 1}]}',
    "a key twice in the page": b'{"date": "2026-11-19", "date": "2026-11-20", "data": []}',
    "two objects": b'{"data": []}\n{"data": []}',
    "blank": b"  \n",
    "a count past 64 bits in a page read by pyarrow": page(
        [{"company_id": "C1", "active_users": 2**63, "events": 1}]
    ),
    "an exponent": b'{"data": [{"company_id": "C1", "active_users": 1e3, "events": 1}]}',
    "a leading zero": b'{"data": [{"company_id": "C1", "active_users": 01, "events": 1}]}',
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_a_page_as_columns_is_the_page_as_rows(name: str) -> None:
    raw = PAGES[name]
    assert by_columns(raw) == by_rows(raw)


def test_the_column_path_is_taken_for_plain_pages_and_only_for_them() -> None:
    provable = {name for name, raw in PAGES.items() if took_the_column_path(raw)}
    assert provable == {
        "plain",
        "empty page",
        "last page",
        "no date field",
        "unicode ids",
        "the largest counts",
        "an unrelated field",
        "keys twice",  # json.loads keeps the last value: both paths read the same object
        "escapes in an id",
        "an escaped key",
        "printed over lines",
        "a byte order mark",
        "a page over a MiB",
        "an empty cursor",
        "a key twice in the page",
    }


def test_plain_pages_are_read_by_pyarrows_json_reader_and_the_rest_by_pythons_json() -> None:
    by_arrow = {name for name, raw in PAGES.items() if usage_pages._read_by_arrow(raw, DAY) is not None}
    assert {
        "plain",
        "empty page",
        "last page",
        "no date field",
        "printed over lines",
        "a page over a MiB",
    } <= by_arrow
    # An unknown field, a key twice, a value that is no exact count, bytes that are not UTF-8: refused by the
    # reader, read by json (and by the rows where json's reading could differ).
    for name in (
        "an unrelated field",
        "keys twice",
        "a key twice in the page",
        "a float count",
        "a bool count",
        "a count past 64 bits in a page read by pyarrow",
        "not UTF-8",
        "not UTF-8 inside an id",
        "a lone surrogate",
        "two objects",
        "blank",
        "an exponent",
        "a leading zero",
        "an extra field",
    ):
        assert name not in by_arrow, name


def test_random_pages_as_columns_are_the_pages_as_rows() -> None:
    """Seeded random pages, most of them with one damaged or unusual row: the same rows or error."""
    generator = random.Random(20261129)
    odd_values = [3.5, 2.0, True, False, None, "4", -1, 2**31, 2**64, [], {}, "", " x ", "\u3000", 0, 10**9]
    paths = {"columns": 0, "rows": 0}
    for _ in range(300):
        rows = [
            {
                "company_id": f"C{generator.randrange(10**6):06d}{generator.choice(['', 'é'] * 20 + [' '])}",
                "active_users": generator.randrange(500),
                "events": generator.randrange(5000),
            }
            for _ in range(generator.randrange(0, 40))
        ]
        if rows and generator.random() < 0.7:
            victim = generator.choice(rows)
            action = generator.randrange(3)
            key = generator.choice(["company_id", "active_users", "events"])
            if action == 0:
                victim[key] = generator.choice(odd_values)
            elif action == 1:
                del victim[key]
            else:
                victim[generator.choice(["x", key.upper()])] = generator.choice(odd_values)
        raw = page(rows)
        paths["columns" if took_the_column_path(raw) else "rows"] += 1
        assert by_columns(raw) == by_rows(raw), raw
    assert paths["columns"] > 50 and paths["rows"] > 50, paths


def test_a_count_the_warehouse_cannot_hold_fails_the_page_naming_the_row() -> None:
    raw = page([*GOOD, {"company_id": "C3", "active_users": 1, "events": 2**31}])
    with pytest.raises(
        UsagePageError, match=r"usage page 3 of 2026-11-20, row 3 \(company_id 'C3'\): events"
    ):
        parse_usage_page_columns(raw, DAY, 3)


def test_an_id_with_an_escaped_lone_surrogate_fails_the_page_naming_the_row() -> None:
    """JSON can escape half of a UTF-16 pair; Python reads it as text that no UTF-8 column can store."""
    raw = b'{"data": [{"company_id": "C1", "active_users": 1, "events": 1}, '
    raw += b'{"company_id": "C\\udc00", "active_users": 1, "events": 1}]}'
    message = (
        r"usage page 3 of 2026-11-20, row 2: company_id \"C\\udc00\" is not text the warehouse can store"
    )
    for parse in (parse_usage_page, parse_usage_page_columns):
        with pytest.raises(UsagePageError, match=message):
            parse(raw, DAY, 3)
    # The same page in UTF-16 (JSON's other encodings, which json reads too) is refused the same way.
    with pytest.raises(UsagePageError, match="row 2: company_id"):
        parse_usage_page(raw.decode().encode("utf-16"), DAY, 3)
