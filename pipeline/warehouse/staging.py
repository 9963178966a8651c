"""Staging: load one day of each source into ``stg`` in one transaction, replacing that day only.

Each transaction takes the warehouse write lock first (``engine.lock_warehouse_for_writing``): two runs
staging the same day go one after the other, never interleaved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection, Engine

from pipeline.datasets import (
    CRM,
    STAGED_CRM_TABLE,
    STAGED_USAGE_COLUMNS,
    STAGED_USAGE_TABLE,
    USAGE,
)
from pipeline.faultpoints import fault_point
from pipeline.sources.crm_columnar import CrmTable
from pipeline.sources.crm_snapshot import CrmSnapshot
from pipeline.warehouse.engine import lock_warehouse_for_writing
from pipeline.warehouse.ledger import record_load
from pipeline.warehouse.sql import bulk_insert, bulk_insert_columns, is_postgres, run_sql


def stage_crm(
    engine: Engine, snapshot_date: dt.date, snapshot: CrmTable | CrmSnapshot, landing_id: str
) -> int:
    """Replace the staged CRM snapshot of ``snapshot_date``; returns the rows staged."""
    if isinstance(snapshot, CrmSnapshot):
        snapshot = CrmTable.of_snapshot(snapshot)
    with engine.begin() as connection:
        lock_warehouse_for_writing(connection)
        run_sql(connection, "staging/delete_staged_crm_day", snapshot_date=snapshot_date)
        fault_point("stage:deleted")
        count = bulk_insert_columns(
            connection, STAGED_CRM_TABLE, snapshot.table, constants={"snapshot_date": snapshot_date}
        )
        fault_point("stage:inserted")
        _refresh_statistics(connection, "staging/refresh_staged_crm_statistics")
        record_load(connection, CRM, snapshot_date, count, snapshot.source, landing_id)
    return count


def stage_usage(
    engine: Engine,
    activity_date: dt.date,
    usage_rows: Sequence[tuple[str, int, int]] | Any,
    source: str,
    landing_id: str,
) -> int:
    """Replace the staged product usage of ``activity_date``; returns the rows staged. ``usage_rows``: a
    ``pyarrow.Table`` (company_id, active_users, events) or a sequence of such tuples."""
    with engine.begin() as connection:
        lock_warehouse_for_writing(connection)
        run_sql(connection, "staging/delete_staged_usage_day", activity_date=activity_date)
        fault_point("stage:deleted")
        if isinstance(usage_rows, Sequence):
            rows = ((activity_date, *row) for row in usage_rows)
            count = bulk_insert(connection, STAGED_USAGE_TABLE, STAGED_USAGE_COLUMNS, rows)
        else:
            count = bulk_insert_columns(
                connection, STAGED_USAGE_TABLE, usage_rows, constants={"activity_date": activity_date}
            )
        fault_point("stage:inserted")
        _refresh_statistics(connection, "staging/refresh_staged_usage_statistics")
        record_load(connection, USAGE, activity_date, count, source, landing_id)
    return count


def _refresh_statistics(connection: Connection, statement: str) -> None:
    """PostgreSQL: the planner's statistics of the table just loaded, so the merge's joins are planned for
    the rows really staged. (MySQL's ANALYZE TABLE would commit the transaction; InnoDB and SQLite plan
    these joins by their keys without it.)"""
    if is_postgres(connection):
        # A sample of 3,000 rows rather than 30,000: enough for the row counts per date the plans need,
        # and ANALYZE then costs ~0.02 s instead of 0.15-0.5 s (ten times a 30-day backfill's share).
        connection.exec_driver_sql("SET LOCAL default_statistics_target = 10")
        run_sql(connection, statement)
