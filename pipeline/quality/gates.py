"""Data-quality gates (docs/contract.md, section 5): the suites under ``expectations/`` run on each
day's data.

Where they run in the graph:

* ``ValidateCrm(D)`` and ``ValidateProductUsage(D)`` validate the staged rows of D between staging and
  the merge (:func:`validate_crm`, :func:`validate_product_usage`);
* ``MergeDay(D)`` validates its own result inside the merge's transaction, before it commits
  (:func:`output_validator` is its ``before_commit``): a failing output check rolls the day back and
  leaves ``analytics.company_daily_activity`` exactly as it was.

Each verdict is recorded in ``analytics.day_validations`` as well as on disk. Warning-level checks (a
country that is not ISO 3166-1 alpha-2, extra CRM columns) are logged and kept with the results.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from pipeline.clock import utc_now
from pipeline.datasets import CRM, OUTPUT, USAGE
from pipeline.quality.frames import crm_frame, output_frame, usage_frame
from pipeline.quality.results import ValidationOutcome, raise_for_failures
from pipeline.quality.runner import run_suite
from pipeline.warehouse.ledger import PREVIOUS_DAY, loaded_day, row_count_baseline
from pipeline.warehouse.merge import MergeResult
from pipeline.warehouse.sql import run_sql

log = logging.getLogger("pipeline.validation")


DEFAULT_MAX_ROW_DROP = 0.10


def record_validation(connection: Connection, outcome: ValidationOutcome) -> None:
    """Record the verdict in ``analytics.day_validations`` (in the caller's transaction)."""
    run_sql(connection, "quality/delete_day_validation", activity_date=outcome.date, dataset=outcome.dataset)
    run_sql(
        connection,
        "quality/record_day_validation",
        activity_date=outcome.date,
        dataset=outcome.dataset,
        success=outcome.success,
        row_count=outcome.row_count,
        previous_date=outcome.previous_date,
        previous_row_count=outcome.previous_row_count,
        min_row_count=outcome.min_row_count,
        accept_row_drop=outcome.accept_row_drop,
        row_drop_accepted=outcome.row_drop_accepted,
        failed_checks=len(outcome.failures),
        warning_count=len(outcome.warnings),
        landing_id=outcome.landing_id,
        results_path=outcome.html_path,
        validated_at=utc_now(),
    )


def recorded_validations(connection: Connection, day: dt.date) -> list[dict[str, Any]]:
    """The verdicts recorded for ``day``, one per dataset (for the report and for tests)."""
    return [
        dict(row._mapping) for row in run_sql(connection, "quality/select_day_validations", activity_date=day)
    ]


def validate_crm(
    engine: Engine,
    day: dt.date,
    data_dir: Path,
    *,
    landing_id: str | None,
    accept_row_drop: bool = False,
    max_row_drop: float = DEFAULT_MAX_ROW_DROP,
    row_drop_baseline: str = PREVIOUS_DAY,
    extra_warnings: Iterable[str] = (),
) -> ValidationOutcome:
    """Validate the staged CRM snapshot of ``day``; raises :class:`DataValidationError` on failure."""
    with engine.connect() as connection:
        frame = crm_frame(connection, day)
        previous = row_count_baseline(connection, day, row_drop_baseline)
    latest_allowed = dt.datetime.combine(day + dt.timedelta(days=2), dt.time())
    outcome = run_suite(
        CRM,
        day,
        frame,
        parameters={"last_contact_at_max": latest_allowed.isoformat()},
        previous=previous,
        max_row_drop=max_row_drop,
        accept_row_drop=accept_row_drop,
        data_dir=data_dir,
        landing_id=landing_id,
        extra_warnings=list(extra_warnings),
    )
    with engine.begin() as connection:
        record_validation(connection, outcome)
    return raise_for_failures(outcome)


def validate_product_usage(
    engine: Engine,
    day: dt.date,
    data_dir: Path,
    *,
    landing_id: str | None,
    accept_row_drop: bool = False,
    max_row_drop: float = DEFAULT_MAX_ROW_DROP,
    row_drop_baseline: str = PREVIOUS_DAY,
) -> ValidationOutcome:
    """Validate the staged product usage of ``day``; raises :class:`DataValidationError` on failure."""
    with engine.connect() as connection:
        frame = usage_frame(connection, day)
        previous = row_count_baseline(connection, day, row_drop_baseline)
    outcome = run_suite(
        USAGE,
        day,
        frame,
        parameters={},
        previous=previous,
        max_row_drop=max_row_drop,
        accept_row_drop=accept_row_drop,
        data_dir=data_dir,
        landing_id=landing_id,
    )
    with engine.begin() as connection:
        record_validation(connection, outcome)
    return raise_for_failures(outcome)


def validate_output(
    connection: Connection,
    result: MergeResult,
    data_dir: Path,
    *,
    accept_row_drop: bool = False,
    max_row_drop: float = DEFAULT_MAX_ROW_DROP,
    row_drop_baseline: str = PREVIOUS_DAY,
) -> ValidationOutcome:
    """Validate the merged day inside the merge's transaction; raises :class:`DataValidationError`.

    Raising from the merge's ``before_commit`` rolls the whole day back. A passing verdict is recorded
    in the same transaction, so it commits with the day.
    """
    day = result.activity_date
    frame = output_frame(connection, day)
    previous = row_count_baseline(connection, day, row_drop_baseline)
    expected = run_sql(
        connection,
        "quality/select_expected_output_rows",
        activity_date=day,
        crm_snapshot_date=result.crm_snapshot_date,
    ).one()
    record = loaded_day(connection, day) or {}
    outcome = run_suite(
        OUTPUT,
        day,
        frame,
        parameters={"expected_row_count": int(expected.crm_companies) + int(expected.orphans)},
        previous=previous,
        max_row_drop=max_row_drop,
        accept_row_drop=accept_row_drop,
        data_dir=data_dir,
        landing_id=f"crm {record.get('crm_landing_id')}, usage {record.get('usage_landing_id')}",
        context={
            "crm_snapshot_date": result.crm_snapshot_date.isoformat(),
            "crm_companies": int(expected.crm_companies),
            "orphans": int(expected.orphans),
            "recomputed_days": [recomputed.isoformat() for recomputed in result.recomputed_days],
        },
    )
    raise_for_failures(outcome)
    record_validation(connection, outcome)
    return outcome


def output_validator(
    data_dir: Path,
    *,
    accept_row_drop: bool = False,
    max_row_drop: float = DEFAULT_MAX_ROW_DROP,
    row_drop_baseline: str = PREVIOUS_DAY,
) -> Callable[[Connection, MergeResult], None]:
    """The ``before_commit`` of ``transform.merge_day`` that guards the mart."""

    def before_commit(connection: Connection, result: MergeResult) -> None:
        validate_output(
            connection,
            result,
            data_dir,
            accept_row_drop=accept_row_drop,
            max_row_drop=max_row_drop,
            row_drop_baseline=row_drop_baseline,
        )

    return before_commit
