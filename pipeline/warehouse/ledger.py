"""The load ledger: which dataset/date pairs are staged (``stg.loads``) and which days are merged
(``analytics.loaded_days``), with the landings they came from.

Completeness is a chain of landing ids: a landing's manifest names it, staging records which landing it
loaded, and the merge records which staged landings it merged. Fetch a day again and everything
downstream becomes due again, without any clock comparison or marker cleanup.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Connection

from pipeline.clock import as_date, utc_now
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
