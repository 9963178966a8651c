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
    return usage_pages._columns_when_provably_equal(raw, DAY, 3) is not None


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
    }


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
