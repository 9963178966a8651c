"""What a re-merge changed: the record behind the "What changed" section of a correction mail.

When a day D that is already loaded is merged again (``RunDaily --refresh``, a re-staged source), the
merge keeps the rows of D .. D+6 as they were in a scratch table (``analytics.rows_before_merge``,
filled and emptied inside the merge's transaction), and after writing
compares them with the new rows: rows added and removed, how many rows changed in each column, and the
day's headline numbers (companies, active users, companies at churn risk) before and after. Every day
that changed gets a row in ``analytics.day_corrections``, written in the merge's own transaction, so a
correction is recorded exactly when its data commits.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from pipeline.clock import as_date
from pipeline.warehouse.sql import run_sql

# The columns compared, as the change query names them.
COMPARED_COLUMNS = {
    "company_name": "company_name",
    "country": "country",
    "industry_tag": "industry_tag",
    "last_contact_at": "last_contact_at",
    "active_users": "active_users",
    "events": "events",
    "active_users_7d": "7d_active_users",
    "is_churn_risk": "is_churn_risk",
}


@dataclass(frozen=True)
class DayCorrection:
    """What one merge changed on one day."""

    activity_date: dt.date
    merged_date: dt.date
    corrected_at: dt.datetime
    rows_added: int
    rows_removed: int
    rows_changed: int
    changed_columns: dict[str, int] = field(default_factory=dict)  # column -> rows whose value changed
    companies: tuple[int, int] = (0, 0)  # before, after
    active_users: tuple[int, int] = (0, 0)
    churn_risk: tuple[int, int] = (0, 0)

    @property
    def changed(self) -> bool:
        return bool(self.rows_added or self.rows_removed or self.rows_changed)

    def as_json(self) -> dict[str, Any]:
        return {
            "activity_date": self.activity_date.isoformat(),
            "merged_date": self.merged_date.isoformat(),
            "corrected_at": self.corrected_at.isoformat(sep=" "),
            "rows_added": self.rows_added,
            "rows_removed": self.rows_removed,
            "rows_changed": self.rows_changed,
            "changed_columns": dict(self.changed_columns),
            "companies": list(self.companies),
            "active_users": list(self.active_users),
            "churn_risk": list(self.churn_risk),
        }


def keep_rows_before_merge(connection: Connection, first_date: dt.date, last_date: dt.date) -> None:
    """Copy the rows of ``first_date`` .. ``last_date`` aside, in the caller's transaction."""
    run_sql(connection, "marts/clear_rows_before_merge")
    run_sql(connection, "marts/keep_rows_before_merge", first_date=first_date, last_date=last_date)


def record_changes(
    connection: Connection,
    merged_date: dt.date,
    first_date: dt.date,
    last_date: dt.date,
    corrected_at: dt.datetime,
) -> tuple[DayCorrection, ...]:
    """Compare the rows kept aside with the table now, record each day that changed; returns those."""
    corrections = []
    for row in run_sql(
        connection, "marts/select_changes_since_before_merge", first_date=first_date, last_date=last_date
    ):
        values = row._mapping
        correction = DayCorrection(
            activity_date=as_date(values["activity_date"]),
            merged_date=merged_date,
            corrected_at=corrected_at,
            rows_added=int(values["rows_added"]),
            rows_removed=int(values["rows_removed"]),
            rows_changed=int(values["rows_changed"]),
            changed_columns={
                column: int(values[key]) for key, column in COMPARED_COLUMNS.items() if int(values[key])
            },
            companies=(int(values["companies_before"]), int(values["companies_after"])),
            active_users=(int(values["active_users_before"]), int(values["active_users_after"])),
            churn_risk=(int(values["churn_risk_before"]), int(values["churn_risk_after"])),
        )
        if correction.changed:
            _record(connection, correction)
            corrections.append(correction)
    run_sql(connection, "marts/clear_rows_before_merge")
    return tuple(corrections)


def _record(connection: Connection, correction: DayCorrection) -> None:
    keys = {
        "activity_date": correction.activity_date,
        "merged_date": correction.merged_date,
        "corrected_at": correction.corrected_at,
    }
    run_sql(connection, "marts/delete_day_correction", **keys)
    run_sql(
        connection,
        "marts/record_day_correction",
        **keys,
        rows_added=correction.rows_added,
        rows_removed=correction.rows_removed,
        rows_changed=correction.rows_changed,
        changed_columns=json.dumps(correction.changed_columns, sort_keys=True),
        companies_before=correction.companies[0],
        companies_after=correction.companies[1],
        active_users_before=correction.active_users[0],
        active_users_after=correction.active_users[1],
        churn_risk_before=correction.churn_risk[0],
        churn_risk_after=correction.churn_risk[1],
    )


def latest_correction(connection: Connection, day: dt.date) -> DayCorrection | None:
    """The latest recorded change of ``day`` (by a re-merge of it or of one of the six days before)."""
    row = run_sql(connection, "marts/select_latest_day_correction", activity_date=day).first()
    if row is None:
        return None
    values = row._mapping
    corrected_at = values["corrected_at"]
    if not isinstance(corrected_at, dt.datetime):
        corrected_at = dt.datetime.fromisoformat(str(corrected_at))
    return DayCorrection(
        activity_date=as_date(values["activity_date"]),
        merged_date=as_date(values["merged_date"]),
        corrected_at=corrected_at,
        rows_added=int(values["rows_added"]),
        rows_removed=int(values["rows_removed"]),
        rows_changed=int(values["rows_changed"]),
        changed_columns=json.loads(values["changed_columns"]),
        companies=(int(values["companies_before"]), int(values["companies_after"])),
        active_users=(int(values["active_users_before"]), int(values["active_users_after"])),
        churn_risk=(int(values["churn_risk_before"]), int(values["churn_risk_after"])),
    )
