"""Staging: load one day of each source into ``stg`` in one transaction, replacing that day only.

Each transaction first takes the lock of the day it stages (``engine.lock_for_staging``): two runs staging
the same day go one after the other, never interleaved, and a merge reading that day waits for it. On
PostgreSQL it is that day's lock only, so a day is staged while another is merged; on SQLite and MySQL it
is the warehouse write lock.

How a day's rows replace the previous ones depends on the table:

* PostgreSQL, partitioned staged tables (``sql/schema/stg.postgresql.sql``, every warehouse created since
  they were introduced): the day is a partition of its own. Its previous partition is dropped, the rows are
  loaded into a new table without a key (COPY, binary format) whose constraint checks each row is of that
  day, and attaching it builds the key in one sorted pass. A million CRM rows: about 1.0 s (0.6-0.7 s of
  COPY, 0.3-0.4 s of attach), against 3.0-3.5 s of text COPY into the keyed table (docs/benchmarks.md).
* Otherwise (SQLite, MySQL / MariaDB, and PostgreSQL warehouses whose staged tables were created
  unpartitioned): the day's rows are deleted and the new ones inserted into the keyed table.

Either way the whole replacement is one transaction: a failure leaves the previous rows of the day.

A landed CRM snapshot is staged as it is read (:func:`stage_landed_crm`): chunk by chunk on the columns
(``crm_columnar``), the warehouse loading one chunk while the next is read, or by the precise parser
where the columns cannot prove their meaning. When the load refuses the columns' rows (a duplicate id:
the one rule the staged table's key checks for them), the precise parser reads the file to name the row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.datasets import (
    CRM,
    STAGED_CRM_TABLE,
    STAGED_USAGE_COLUMNS,
    STAGED_USAGE_TABLE,
    USAGE,
)
from pipeline.faultpoints import fault_point
from pipeline.sources import crm_columnar, crm_snapshot
from pipeline.sources.crm_columnar import ColumnarCrm, CrmTable
from pipeline.sources.crm_snapshot import CrmSnapshot
from pipeline.warehouse.engine import lock_for_staging
from pipeline.warehouse.ledger import record_load
from pipeline.warehouse.sql import (
    BulkLoadError,
    bulk_insert,
    bulk_insert_columns,
    is_postgres,
    refused_bulk_load,
    run_sql,
    with_schema_names,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedCrm:
    """What :func:`stage_landed_crm` staged: the rows, which reader read them, and the file's warnings."""

    rows: int
    reader: str
    warnings: list[str]


def stage_landed_crm(engine: Engine, snapshot_date: dt.date, data_dir: Path) -> StagedCrm:
    """Replace the staged CRM snapshot of ``snapshot_date`` by the day's landed file (no download): read on
    the columns chunk by chunk as it loads, else by the precise parser. A bad file raises the precise
    parser's :class:`~pipeline.sources.crm_snapshot.CrmSnapshotError` (file, row, line, column), and
    the staged rows of the day stay as they were."""
    manifest, data, source = crm_snapshot.read_landed_bytes(data_dir, snapshot_date)
    landing_id = manifest["landing_id"]
    try:
        reading = ColumnarCrm(data, source)
        rows = stage_crm(engine, snapshot_date, reading, landing_id)
        return StagedCrm(rows, reading.reader, reading.warnings)
    except crm_columnar.NotProvable as reason:
        log.info("%s: read by the precise parser: %s", source, reason)
    except BulkLoadError as refused:
        # The columns mean what the precise parser means: if the file breaks a rule (a duplicate id), the
        # precise parser refuses it too and names the row; if not, the warehouse refused it for a reason
        # of its own (a value longer than its column), which stands.
        try:
            crm_snapshot.parse_snapshot_bytes(data, source)
        except crm_snapshot.CrmSnapshotError as bad_file:
            raise bad_file from refused
        raise
    snapshot = crm_snapshot.parse_snapshot_bytes(data, source)
    rows = stage_crm(engine, snapshot_date, snapshot, landing_id)
    return StagedCrm(rows, "precise", snapshot.warnings)


def stage_crm(
    engine: Engine,
    snapshot_date: dt.date,
    snapshot: CrmTable | CrmSnapshot | ColumnarCrm,
    landing_id: str,
) -> int:
    """Replace the staged CRM snapshot of ``snapshot_date``; returns the rows staged. A
    :class:`ColumnarCrm` is loaded chunk by chunk as it is read; its ``NotProvable`` is raised here."""
    if isinstance(snapshot, CrmSnapshot):
        snapshot = CrmTable.of_snapshot(snapshot)
    columns = snapshot.chunks() if isinstance(snapshot, ColumnarCrm) else snapshot.table

    def load(connection: Connection, target: str) -> int:
        return bulk_insert_columns(connection, target, columns, constants={"snapshot_date": snapshot_date})

    return _stage_day(engine, CRM, snapshot_date, load, snapshot.source, landing_id)


def stage_usage(
    engine: Engine,
    activity_date: dt.date,
    usage_rows: Sequence[tuple[str, int, int]] | Any,
    source: str,
    landing_id: str,
) -> int:
    """Replace the staged product usage of ``activity_date``; returns the rows staged. ``usage_rows``: a
    ``pyarrow.Table`` (company_id, active_users, events) or a sequence of such tuples."""

    def load(connection: Connection, target: str) -> int:
        if isinstance(usage_rows, Sequence):
            rows = ((activity_date, *row) for row in usage_rows)
            return bulk_insert(connection, target, STAGED_USAGE_COLUMNS, rows)
        return bulk_insert_columns(connection, target, usage_rows, constants={"activity_date": activity_date})

    return _stage_day(engine, USAGE, activity_date, load, source, landing_id)


def _stage_day(
    engine: Engine,
    dataset: str,
    day: dt.date,
    load: Callable[[Connection, str], int],
    source: str,
    landing_id: str,
) -> int:
    """One transaction: the day's lock, its rows replaced by what ``load(connection, target table)``
    inserts, and its load record."""
    with engine.begin() as connection:
        lock_for_staging(connection, dataset, day)
        count = _replace_day(connection, _STAGED_TABLE[dataset], day, lambda target: load(connection, target))
        record_load(connection, dataset, day, count, source, landing_id)
    return count


# Per dataset, its staged table; per staged table, its date column and the statements of the
# unpartitioned path.
_STAGED_TABLE = {CRM: STAGED_CRM_TABLE, USAGE: STAGED_USAGE_TABLE}
_DATE_COLUMN = {STAGED_CRM_TABLE: "snapshot_date", STAGED_USAGE_TABLE: "activity_date"}
_DELETE_DAY = {
    STAGED_CRM_TABLE: "staging/delete_staged_crm_day",
    STAGED_USAGE_TABLE: "staging/delete_staged_usage_day",
}
_REFRESH_STATISTICS = {
    STAGED_CRM_TABLE: "staging/refresh_staged_crm_statistics",
    STAGED_USAGE_TABLE: "staging/refresh_staged_usage_statistics",
}


def _replace_day(connection: Connection, table: str, day: dt.date, load: Callable[[str], int]) -> int:
    """Replace the rows of ``day`` in the staged ``table`` by what ``load(target table)`` inserts."""
    parent = with_schema_names(connection, table)
    date_column = _DATE_COLUMN[table]
    if _is_partitioned(connection, parent):
        day_table = run_sql(
            connection, "staging/new_staged_day_table", parent=parent, date_column=date_column, day=day
        ).scalar_one()
        fault_point("stage:deleted")
        count = load(day_table)
        fault_point("stage:inserted")
        _sample_statistics_cheaply(connection)
        try:
            run_sql(
                connection, "staging/attach_staged_day_table", parent=parent, day_table=day_table, day=day
            )
        except sa.exc.DBAPIError as error:  # the key is built here: a duplicate id is refused here
            raise refused_bulk_load(parent, count, error) from error
        return count
    run_sql(connection, _DELETE_DAY[table], **{date_column: day})
    fault_point("stage:deleted")
    count = load(table)
    fault_point("stage:inserted")
    if is_postgres(connection):
        _sample_statistics_cheaply(connection)
        run_sql(connection, _REFRESH_STATISTICS[table])
    return count


def _is_partitioned(connection: Connection, parent: str) -> bool:
    return is_postgres(connection) and bool(
        run_sql(connection, "staging/select_staged_table_is_partitioned", table_name=parent).scalar_one()
    )


def _sample_statistics_cheaply(connection: Connection) -> None:
    """PostgreSQL: the ANALYZE after a load (the planner's statistics of the rows really staged, so the
    merge's joins are planned for them) samples 3,000 rows rather than 30,000: enough for the row counts
    the plans need, and it costs ~0.02 s instead of 0.15-0.5 s. (MySQL's ANALYZE TABLE would commit the
    transaction; InnoDB and SQLite plan these joins by their keys without it.)"""
    connection.exec_driver_sql("SET LOCAL default_statistics_target = 10")
