"""Staging: load one day of each source into ``stg`` in one transaction, replacing that day only.

Each transaction takes the warehouse write lock first (``pipeline.locks``): two runs staging the same
day one after the other, never interleaved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from pipeline.crm import CrmSnapshot
from pipeline.faultpoints import fault_point
from pipeline.locks import lock_warehouse_for_writing
from pipeline.transform import staged_load, utc_now
from pipeline.warehouse import bulk_insert, run_sql

CRM_DATASET = "crm"
USAGE_DATASET = "product_usage"
CRM_COLUMNS = ("snapshot_date", "company_id", "company_name", "country", "industry_tag", "last_contact_at")
USAGE_COLUMNS = ("activity_date", "company_id", "active_users", "events")


def stage_crm(engine: Engine, snapshot_date: dt.date, snapshot: CrmSnapshot, landing_id: str) -> int:
    """Replace the staged CRM snapshot of ``snapshot_date``; returns the rows staged."""
    rows = ((snapshot_date, *company.as_row()) for company in snapshot.companies)
    with engine.begin() as connection:
        lock_warehouse_for_writing(connection)
        run_sql(connection, "delete_staged_crm_day", snapshot_date=snapshot_date)
        fault_point("stage:deleted")
        count = bulk_insert(connection, "stg.crm_daily", CRM_COLUMNS, rows)
        fault_point("stage:inserted")
        _record_load(connection, CRM_DATASET, snapshot_date, count, snapshot.source, landing_id)
    return count


def stage_usage(
    engine: Engine,
    activity_date: dt.date,
    usage_rows: Sequence[tuple[str, int, int]],
    source: str,
    landing_id: str,
) -> int:
    """Replace the staged product usage of ``activity_date``; returns the rows staged."""
    rows = (
        (activity_date, company_id, active_users, events) for company_id, active_users, events in usage_rows
    )
    with engine.begin() as connection:
        lock_warehouse_for_writing(connection)
        run_sql(connection, "delete_staged_usage_day", activity_date=activity_date)
        fault_point("stage:deleted")
        count = bulk_insert(connection, "stg.product_usage_daily", USAGE_COLUMNS, rows)
        fault_point("stage:inserted")
        _record_load(connection, USAGE_DATASET, activity_date, count, source, landing_id)
    return count


def _record_load(
    connection, dataset: str, load_date: dt.date, count: int, source: str, landing_id: str
) -> None:
    run_sql(connection, "delete_load_record", dataset=dataset, load_date=load_date)
    run_sql(
        connection,
        "record_load",
        dataset=dataset,
        load_date=load_date,
        row_count=count,
        source=source,
        landing_id=landing_id,
        loaded_at=utc_now(),
    )


def staged_landing_id(engine: Engine, dataset: str, load_date: dt.date) -> str | None:
    """Which raw landing the staged rows of a dataset/date pair came from (None: not staged)."""
    with engine.connect() as connection:
        record = staged_load(connection, dataset, load_date)
    return None if record is None else record["landing_id"]
