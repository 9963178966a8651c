"""The merge: build one day of ``analytics.company_daily_activity`` from staging, in one transaction.

For a day D the merge replaces D's rows, records D as loaded, and recomputes the rolling columns of
every loaded day D .. D+6 (their 7-day windows contain D). Each of those windows reads at most seven
days of rows, so the cost follows the number of companies, never the length of history. Because every
day's rolling values are recomputed from the rows of its window whenever any day in that window
changes, the table converges to the same rows whatever the order the days are loaded in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine

from pipeline.clock import as_date, utc_now
from pipeline.datasets import CRM, USAGE
from pipeline.faultpoints import fault_point
from pipeline.warehouse.engine import lock_warehouse_for_writing
from pipeline.warehouse.ledger import staged_load
from pipeline.warehouse.sql import run_sql

WINDOW_DAYS = 7


class MergeError(RuntimeError):
    """A day cannot be merged (for example its sources are not staged)."""


@dataclass(frozen=True)
class MergeResult:
    activity_date: dt.date
    crm_snapshot_date: dt.date
    crm_rows: int
    usage_rows: int
    orphan_rows: int
    output_rows: int
    recomputed_days: tuple[dt.date, ...]


def merge_day(
    engine: Engine,
    activity_date: dt.date,
    *,
    before_commit: Callable[[Connection, MergeResult], None] | None = None,
    loaded_at: dt.datetime | None = None,
) -> MergeResult:
    """Merge ``activity_date`` into the mart and recompute the rolling columns of D .. D+6.

    ``before_commit`` sees the new rows inside the transaction (the output checks run there); if it
    raises, the transaction rolls back and the table stays exactly as it was.
    """
    loaded_at = loaded_at or utc_now()
    with engine.begin() as connection:
        # Merges of days less than a week apart read and rewrite each other's rows: one at a time.
        lock_warehouse_for_writing(connection)
        result = _write_day(connection, activity_date, loaded_at)
        if before_commit is not None:
            before_commit(connection, result)
        fault_point("merge:validated")
    return result


def _write_day(connection: Connection, activity_date: dt.date, loaded_at: dt.datetime) -> MergeResult:
    snapshot_value = run_sql(
        connection, "staging/select_effective_crm_snapshot", activity_date=activity_date
    ).scalar()
    if snapshot_value is None:
        raise MergeError(f"no CRM snapshot dated on or before {activity_date} is staged: stage the CRM first")
    crm_snapshot_date = as_date(snapshot_value)
    usage_load = staged_load(connection, USAGE, activity_date)
    if usage_load is None:
        raise MergeError(f"product usage for {activity_date} is not staged: stage the API pages first")
    crm_load = staged_load(connection, CRM, crm_snapshot_date)
    assert crm_load is not None  # the snapshot date came from stg.loads
    crm_rows, usage_rows = int(crm_load["row_count"]), int(usage_load["row_count"])

    run_sql(connection, "marts/delete_company_daily_activity_day", activity_date=activity_date)
    fault_point("merge:deleted")
    run_sql(
        connection,
        "marts/populate_company_daily_activity",
        activity_date=activity_date,
        crm_snapshot_date=crm_snapshot_date,
        loaded_at=loaded_at,
    )
    output_rows = int(
        run_sql(connection, "marts/count_company_daily_activity_day", activity_date=activity_date).scalar()
    )
    # Every company of the snapshot gets a row, so the rest are the orphans.
    orphan_rows = output_rows - crm_rows
    fault_point("merge:populated")

    run_sql(connection, "marts/delete_loaded_day", activity_date=activity_date)
    run_sql(
        connection,
        "marts/record_loaded_day",
        activity_date=activity_date,
        crm_snapshot_date=crm_snapshot_date,
        crm_rows=crm_rows,
        usage_rows=usage_rows,
        orphan_rows=orphan_rows,
        output_rows=output_rows,
        crm_landing_id=crm_load["landing_id"],
        usage_landing_id=usage_load["landing_id"],
        loaded_at=loaded_at,
    )
    recomputed = recompute_rolling_columns(connection, activity_date, loaded_at)
    fault_point("merge:recomputed")
    return MergeResult(
        activity_date=activity_date,
        crm_snapshot_date=crm_snapshot_date,
        crm_rows=crm_rows,
        usage_rows=usage_rows,
        orphan_rows=orphan_rows,
        output_rows=output_rows,
        recomputed_days=recomputed,
    )


def recompute_rolling_columns(
    connection: Connection, changed_date: dt.date, loaded_at: dt.datetime
) -> tuple[dt.date, ...]:
    """Recompute the rolling columns of the loaded days whose 7-day window holds ``changed_date``."""
    last_affected = changed_date + dt.timedelta(days=WINDOW_DAYS - 1)
    loaded = [
        as_date(row.activity_date)
        for row in run_sql(
            connection, "marts/select_loaded_days_in_range", first_date=changed_date, last_date=last_affected
        )
    ]
    for target_date in loaded:
        run_sql(
            connection,
            "marts/update_rolling_activity",
            target_date=target_date,
            window_start=target_date - dt.timedelta(days=WINDOW_DAYS - 1),
            loaded_at=loaded_at,
        )
    return tuple(loaded)
