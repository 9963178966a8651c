"""The merge: build one day of ``analytics.company_daily_activity`` from staging, in one transaction.

For a day D the merge (docs/contract.md section 4) is two set-based statements:

1. ``sql/marts/insert_company_daily_activity_day.sql`` writes D's rows once, with their rolling columns
   computed from the rows of D-6 .. D-1 already in the mart;
2. ``sql/marts/update_rolling_activity_following_days.sql`` recomputes, in one pass, the rolling columns
   of the loaded days D+1 .. D+6 whose windows hold D (late or corrected data). A nightly run loads the
   newest day, so nothing follows it and this statement is skipped.

Both read at most the 13 days D-6 .. D+6, so the cost follows the number of companies, never the length
of history. Every day's rolling values are computed from the rows of its window whenever any day in
that window changes, so the table converges to the same rows whatever the order the days are loaded in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine

from pipeline.clock import as_date, utc_now
from pipeline.datasets import CRM, USAGE
from pipeline.faultpoints import fault_point
from pipeline.warehouse.corrections import DayCorrection, keep_rows_before_merge, record_changes
from pipeline.warehouse.engine import lock_staged_day, lock_warehouse_for_writing
from pipeline.warehouse.ledger import loaded_day, staged_load
from pipeline.warehouse.sql import is_postgres, run_sql

WINDOW_DAYS = 7
DAY = dt.timedelta(days=1)


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
    # What this merge changed on D .. D+6 when D was loaded before (a refresh); empty for a first load.
    corrections: tuple[DayCorrection, ...] = ()


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
        set_up_merge_transaction(connection)
        result = _write_day(connection, activity_date, loaded_at)
        if before_commit is not None:
            before_commit(connection, result)
        fault_point("merge:validated")
    return result


def set_up_merge_transaction(connection: Connection) -> None:
    """The merge's settings for the rest of the current transaction (PostgreSQL; none elsewhere)."""
    if is_postgres(connection):
        # The planner overestimates the insert's join and JIT-compiles it (0.3 s a day for nothing);
        # the per-company window sums of 100,000+ companies spill to disk at the 4 MB default.
        connection.exec_driver_sql("SET LOCAL jit = off")
        connection.exec_driver_sql("SET LOCAL work_mem = '256MB'")


def _write_day(connection: Connection, activity_date: dt.date, loaded_at: dt.datetime) -> MergeResult:
    snapshot_value = run_sql(
        connection, "staging/select_effective_crm_snapshot", activity_date=activity_date
    ).scalar()
    if snapshot_value is None:
        raise MergeError(f"no CRM snapshot dated on or before {activity_date} is staged: stage the CRM first")
    crm_snapshot_date = as_date(snapshot_value)
    # Before reading a staged row or load record: a re-staging of either day commits before or after it.
    # (stg.loads is not a staged table: reading it above holds no lock a re-staging waits for.)
    lock_staged_day(connection, CRM, crm_snapshot_date)
    lock_staged_day(connection, USAGE, activity_date)
    usage_load = staged_load(connection, USAGE, activity_date)
    if usage_load is None:
        raise MergeError(f"product usage for {activity_date} is not staged: stage the API pages first")
    crm_load = staged_load(connection, CRM, crm_snapshot_date)
    assert crm_load is not None  # the snapshot date came from stg.loads
    crm_rows, usage_rows = int(crm_load["row_count"]), int(usage_load["row_count"])

    last_affected = activity_date + (WINDOW_DAYS - 1) * DAY
    reloading = loaded_day(connection, activity_date) is not None
    if reloading:
        keep_rows_before_merge(connection, activity_date, last_affected)
    run_sql(connection, "marts/delete_company_daily_activity_day", activity_date=activity_date)
    fault_point("merge:deleted")
    output_rows = run_sql(
        connection,
        "marts/insert_company_daily_activity_day",
        activity_date=activity_date,
        crm_snapshot_date=crm_snapshot_date,
        window_start=activity_date - (WINDOW_DAYS - 1) * DAY,
        previous_date=activity_date - DAY,
        loaded_at=loaded_at,
    ).rowcount  # the rows written: D had none after the delete
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
    following = recompute_following_days(connection, activity_date, loaded_at)
    recomputed = (activity_date, *following)
    corrections: tuple[DayCorrection, ...] = ()
    if reloading:
        corrections = record_changes(connection, activity_date, activity_date, last_affected, loaded_at)
    fault_point("merge:recomputed")
    return MergeResult(
        activity_date=activity_date,
        crm_snapshot_date=crm_snapshot_date,
        crm_rows=crm_rows,
        usage_rows=usage_rows,
        orphan_rows=orphan_rows,
        output_rows=output_rows,
        recomputed_days=recomputed,
        corrections=corrections,
    )


def recompute_following_days(
    connection: Connection, changed_date: dt.date, loaded_at: dt.datetime
) -> tuple[dt.date, ...]:
    """Recompute the rolling columns of the loaded days D+1 .. D+6 (D = ``changed_date``); returns them."""
    following = [
        as_date(row.activity_date)
        for row in run_sql(
            connection,
            "marts/select_loaded_days_in_range",
            first_date=changed_date + DAY,
            last_date=changed_date + (WINDOW_DAYS - 1) * DAY,
        )
    ]
    if not following:
        return ()
    targets = {f"day{k}": changed_date + k * DAY for k in range(1, WINDOW_DAYS)}
    window_starts = {f"from{k}": changed_date + (k - WINDOW_DAYS + 1) * DAY for k in range(1, WINDOW_DAYS)}
    run_sql(
        connection,
        "marts/update_rolling_activity_following_days",
        **targets,
        **window_starts,
        # Only the rows that some loaded target day's window holds: the first window start and the last
        # loaded target day.
        scan_from=min(following) - (WINDOW_DAYS - 1) * DAY,
        scan_to=max(following),
        loaded_at=loaded_at,
    )
    return tuple(following)
