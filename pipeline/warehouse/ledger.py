"""The load ledger: which dataset/date pairs are staged (``stg.loads``) and which days are merged
(``analytics.loaded_days``), with the landings they came from.

Completeness is a chain of landing ids: a landing's manifest names it, staging records which landing it
loaded, and the merge records which staged landings it merged. Fetch a day again and everything
downstream becomes due again, without any clock comparison or marker cleanup.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from pipeline.clock import as_date, utc_now
from pipeline.datasets import LOADED_DAY_COUNT
from pipeline.warehouse.sql import run_sql


def staged_load(connection: Connection, dataset: str, load_date: dt.date) -> dict | None:
    """The staging record of a dataset/date pair (row_count, source, landing_id...), or None."""
    row = run_sql(connection, "staging/select_load_record", dataset=dataset, load_date=load_date).first()
    return None if row is None else dict(row._mapping)


def loaded_day(connection: Connection, activity_date: dt.date) -> dict | None:
    """The load record of a day, or None when the day is not loaded."""
    row = run_sql(connection, "marts/select_loaded_day", activity_date=activity_date).first()
    return None if row is None else dict(row._mapping)


def record_load(
    connection: Connection, dataset: str, load_date: dt.date, count: int, source: str, landing_id: str
) -> None:
    run_sql(connection, "staging/delete_load_record", dataset=dataset, load_date=load_date)
    run_sql(
        connection,
        "staging/record_load",
        dataset=dataset,
        load_date=load_date,
        row_count=count,
        source=source,
        landing_id=landing_id,
        loaded_at=utc_now(),
    )


def previous_loaded_day(connection: Connection, day: dt.date) -> dict[str, Any] | None:
    """The latest loaded day before ``day`` with its row counts, or None (the first day)."""
    row = run_sql(connection, "marts/select_previous_loaded_day", activity_date=day).first()
    if row is None:
        return None
    record = dict(row._mapping)
    record["activity_date"] = as_date(record["activity_date"])
    return record


# -- the baseline of the row-drop checks ([validation] row_drop_baseline) ---------------------------------

PREVIOUS_DAY, SAME_WEEKDAY, TRAILING_MEDIAN = "previous_day", "same_weekday", "trailing_median"
ROW_DROP_BASELINES = (PREVIOUS_DAY, SAME_WEEKDAY, TRAILING_MEDIAN)
# same_weekday looks back this many weeks for a loaded day of D's weekday (D-7 first, then D-14, ...).
SAME_WEEKDAY_WEEKS = 4
# trailing_median takes the median of this many loaded days before D (fewer when fewer are loaded).
TRAILING_DAYS = 7


@dataclass(frozen=True)
class RowCountBaseline:
    """What a day's row counts are compared with: the loaded days it comes from (none: no baseline) and
    one count per ``analytics.loaded_days`` count column (``crm_rows``, ``usage_rows``, ``output_rows``)."""

    method: str
    day: dt.date
    compared_days: tuple[dt.date, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, column: str) -> int | None:
        return self.counts.get(column)

    @property
    def newest_day(self) -> dt.date | None:
        return max(self.compared_days) if self.compared_days else None


def same_weekday_candidates(day: dt.date) -> list[dt.date]:
    """The days same_weekday may compare ``day`` with, in order of preference: D-7, D-14, ..."""
    return [day - dt.timedelta(weeks=weeks) for weeks in range(1, SAME_WEEKDAY_WEEKS + 1)]


def row_count_baseline(connection: Connection, day: dt.date, method: str = PREVIOUS_DAY) -> RowCountBaseline:
    """The baseline of ``day``'s row-drop checks, by ``method`` (docs/contract.md section 5):

    * ``previous_day``: the latest loaded day before D;
    * ``same_weekday``: D-7 when loaded, else the latest loaded of D-14, D-21, D-28 (the same weekday);
      none loaded: no baseline (the check passes and says so);
    * ``trailing_median``: per count, the median of the last 7 loaded days before D (the lower middle
      value when fewer, an even number, are loaded).

    Only loaded days count: they passed every check, or an operator accepted them.
    """
    columns = tuple(LOADED_DAY_COUNT.values())
    if method == PREVIOUS_DAY:
        record = previous_loaded_day(connection, day)
        records = [record] if record else []
    elif method == SAME_WEEKDAY:
        candidates = same_weekday_candidates(day)
        rows = run_sql(
            connection,
            "marts/select_loaded_day_counts_between",
            first_date=candidates[-1],
            last_date=candidates[0],
        )
        loaded = {as_date(row.activity_date): dict(row._mapping) for row in rows}
        records = [loaded[candidate] for candidate in candidates if candidate in loaded][:1]
    elif method == TRAILING_MEDIAN:
        rows = run_sql(
            connection, "marts/select_loaded_days_before", activity_date=day, day_count=TRAILING_DAYS
        )
        records = [dict(row._mapping) for row in rows]
    else:
        raise ValueError(
            f"[validation] row_drop_baseline = {method!r} is not one of {', '.join(ROW_DROP_BASELINES)}"
        )
    if not records:
        return RowCountBaseline(method, day)
    days = tuple(sorted(as_date(record["activity_date"]) for record in records))
    counts = {column: int(statistics.median_low(int(r[column]) for r in records)) for column in columns}
    return RowCountBaseline(method, day, days, counts)
