"""What the daily churn report shows for a date D, read from the warehouse (``sql/report/*.sql``).

The notebook ``reports/daily_churn_report.ipynb`` calls :func:`load_report_data` and presents the
result; everything here is plain Python over the same SQL files on SQLite and PostgreSQL, so it is
tested without a kernel. Values are returned raw: escaping is the presentation's job
(:mod:`pipeline.report_html`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from pipeline.clock import as_date
from pipeline.datasets import DATASETS
from pipeline.quality.store import results_dir
from pipeline.sources.crm_snapshot import read_landed_snapshot
from pipeline.warehouse.merge import WINDOW_DAYS
from pipeline.warehouse.sql import normalise_value, run_sql

log = logging.getLogger("pipeline.report")

TREND_DAYS = 30  # the trend charts cover D-29 .. D
MIN_TREND_DAYS = 7  # fewer loaded days than this in the trend window: the report says so, no chart
LAST_ACTIVE_LOOKBACK_DAYS = TREND_DAYS  # "last active day" is searched this far back

# (key, label, higher is better): the headline numbers, in the order the report shows them.
HEADLINE_METRICS = (
    ("companies", "Companies", True),
    ("active_companies", "Active companies (1+ active user)", True),
    ("active_users", "Active users", True),
    ("events", "Events", True),
    ("churn_risk_companies", "Companies at churn risk", False),
)


class ReportDataError(RuntimeError):
    """The report cannot be built for the day (for example the day is not loaded)."""


@dataclass(frozen=True)
class DayTotals:
    activity_date: dt.date
    companies: int
    active_companies: int
    active_users: int
    events: int
    churn_risk_companies: int
    churn_known_companies: int

    @property
    def churn_known(self) -> bool:
        """Churn risk is known for the day (its 7-day window was loaded)."""
        return self.churn_known_companies > 0


@dataclass(frozen=True)
class HeadlineMetric:
    key: str
    label: str
    higher_is_better: bool
    value: int | None  # None: not known on D (churn risk before 7 loaded days)
    previous_day: int | None  # D-1; None: not loaded (or not known)
    previous_week: int | None  # D-7; None: not loaded (or not known)

    @staticmethod
    def change(value: int | None, before: int | None) -> int | None:
        return None if value is None or before is None else value - before

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "previous_day": self.previous_day,
            "previous_week": self.previous_week,
            "change_previous_day": self.change(self.value, self.previous_day),
            "change_previous_week": self.change(self.value, self.previous_week),
        }


@dataclass
class DataQuality:
    """The data-quality notes of the day and where they came from."""

    source: str  # "validation results", "CRM parser" or "none recorded"
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReportData:
    day: dt.date
    window_start: dt.date
    totals: dict[dt.date, DayTotals]
    loaded_days: dict[dt.date, dict[str, Any]]
    newly_at_risk: list[dict[str, Any]]
    recovered: list[dict[str, Any]]
    by_country: list[dict[str, Any]]
    by_industry: list[dict[str, Any]]
    orphans: list[dict[str, Any]]
    data_quality: DataQuality

    @property
    def previous_day(self) -> dt.date:
        return self.day - dt.timedelta(days=1)

    @property
    def previous_week(self) -> dt.date:
        return self.day - dt.timedelta(days=7)

    @property
    def today(self) -> DayTotals:
        return self.totals[self.day]

    @property
    def loaded_in_window(self) -> int:
        return len(self.loaded_days)

    @property
    def churn_window_loaded(self) -> int:
        """How many of D-6 .. D are loaded (churn risk is known on D when all 7 are)."""
        first = self.day - dt.timedelta(days=WINDOW_DAYS - 1)
        return sum(1 for day in self.loaded_days if first <= day <= self.day)

    @property
    def too_little_history(self) -> bool:
        """Fewer than MIN_TREND_DAYS loaded days in the trend window: no trend charts."""
        return self.loaded_in_window < MIN_TREND_DAYS

    @property
    def churn_trend_days(self) -> list[DayTotals]:
        return [totals for day, totals in sorted(self.totals.items()) if totals.churn_known]

    @property
    def orphan_count(self) -> int:
        record = self.loaded_days.get(self.day)
        return int(record["orphan_rows"]) if record else len(self.orphans)

    @property
    def crm_snapshot_date(self) -> dt.date | None:
        record = self.loaded_days.get(self.day)
        return as_date(record["crm_snapshot_date"]) if record else None

    def headline(self) -> list[HeadlineMetric]:
        metrics = []
        for key, label, higher_is_better in HEADLINE_METRICS:
            values = []
            for day in (self.day, self.previous_day, self.previous_week):
                totals = self.totals.get(day)
                if totals is None or (key == "churn_risk_companies" and not totals.churn_known):
                    values.append(None)
                else:
                    values.append(int(getattr(totals, key)))
            metrics.append(HeadlineMetric(key, label, higher_is_better, *values))
        return metrics

    def history_notes(self) -> list[str]:
        """Plain sentences on what the history of D does not allow yet (empty: nothing missing)."""
        notes = []
        iso = self.day.isoformat()
        if self.churn_window_loaded < WINDOW_DAYS:
            notes.append(
                f"Churn risk needs all 7 days {(self.day - dt.timedelta(days=6)).isoformat()} .. {iso} "
                f"loaded; {self.churn_window_loaded} of them are, so churn risk is not known for {iso} yet."
            )
        if self.previous_day not in self.loaded_days:
            notes.append(f"{self.previous_day.isoformat()} (D-1) is not loaded: no day-over-day change.")
        before = self.totals.get(self.previous_day)
        if self.today.churn_known and (before is None or not before.churn_known):
            notes.append(
                f"Churn risk was not known on {self.previous_day.isoformat()} (D-1), so every company at "
                f"risk on {iso} is listed as newly at risk."
            )
        if self.previous_week not in self.loaded_days:
            notes.append(f"{self.previous_week.isoformat()} (D-7) is not loaded: no week-over-week change.")
        return notes

    def trend_note(self) -> str | None:
        """Why there are no trend charts (None: there are)."""
        if not self.too_little_history:
            return None
        count = self.loaded_in_window
        return (
            f"Too little history for trends: {count} loaded day{'s' if count != 1 else ''} in "
            f"{self.window_start.isoformat()} .. {self.day.isoformat()}; the trend charts start at "
            f"{MIN_TREND_DAYS} loaded days."
        )


def _rows(connection: Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in run_sql(connection, name, **params)]


def _normalised(row: dict[str, Any], date_columns: tuple[str, ...] = ()) -> dict[str, Any]:
    """One row in a backend-independent form: dates as date, timestamps as text, numbers as int."""
    result = {}
    for key, value in row.items():
        if key in date_columns and value is not None:
            result[key] = as_date(value)
        elif isinstance(value, dt.datetime):
            result[key] = normalise_value(value)
        elif isinstance(value, decimal.Decimal):
            result[key] = int(value)  # a SUM() of integers may come back as NUMERIC
        else:
            result[key] = value
    return result


def data_version(connection: Connection, day: dt.date) -> str | None:
    """An identifier of the data of ``day`` as it is now (None: not loaded).

    It changes when the day is merged again (``--refresh``) and when a reload of an earlier day
    rewrites this day's rolling columns: a report built from another version is out of date.
    """
    row = run_sql(connection, "report/data_version", activity_date=day).first()
    if row is None:
        return None
    return "|".join(
        str(normalise_value(value))
        for value in (row.crm_landing_id, row.usage_landing_id, row.loaded_at, row.rows_loaded_at)
    )


def load_report_data(engine: Engine, day: dt.date, data_dir: Path | str | None = None) -> ReportData:
    """Everything the report shows for ``day``; raises :class:`ReportDataError` when D is not loaded."""
    window_start = day - dt.timedelta(days=TREND_DAYS - 1)
    with engine.connect() as connection:
        loaded = {
            as_date(row["activity_date"]): _normalised(row, ("activity_date", "crm_snapshot_date"))
            for row in _rows(connection, "report/loaded_days", first_date=window_start, last_date=day)
        }
        if day not in loaded:
            raise ReportDataError(f"{day.isoformat()} is not loaded: run RunDaily --date {day.isoformat()}")
        totals = {}
        for row in _rows(connection, "report/daily_totals", first_date=window_start, last_date=day):
            values = _normalised(row, ("activity_date",))
            totals[values["activity_date"]] = DayTotals(**values)
        if day not in totals:  # a loaded day without rows (an empty CRM and no usage)
            totals[day] = DayTotals(day, 0, 0, 0, 0, 0, 0)
        previous_day = day - dt.timedelta(days=1)
        newly = [
            _normalised(row, ("last_active_date",))
            for row in _rows(
                connection,
                "report/newly_at_risk",
                activity_date=day,
                previous_date=previous_day,
                week_before=day - dt.timedelta(days=WINDOW_DAYS),
                lookback_start=day - dt.timedelta(days=LAST_ACTIVE_LOOKBACK_DAYS),
            )
        ]
        for row in newly:
            last = row["last_active_date"]
            row["days_idle"] = (day - last).days if last is not None else None
        recovered = [
            _normalised(row)
            for row in _rows(connection, "report/recovered", activity_date=day, previous_date=previous_day)
        ]
        by_country = _segments(_rows(connection, "report/by_country", activity_date=day))
        by_industry = _segments(_rows(connection, "report/by_industry", activity_date=day))
        orphans = [_normalised(row) for row in _rows(connection, "report/orphans", activity_date=day)]
    quality = data_quality(data_dir, day) if data_dir is not None else DataQuality("none recorded")
    record = loaded[day]
    snapshot_date = as_date(record["crm_snapshot_date"])
    if snapshot_date != day:
        quality.warnings.insert(
            0,
            f"No CRM snapshot dated {day.isoformat()}: the snapshot of {snapshot_date.isoformat()} "
            f"(the latest before it) was used for the company details.",
        )
    return ReportData(
        day=day,
        window_start=window_start,
        totals=totals,
        loaded_days=loaded,
        newly_at_risk=newly,
        recovered=recovered,
        by_country=by_country,
        by_industry=by_industry,
        orphans=orphans,
        data_quality=quality,
    )


def _segments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Breakdown rows, largest first (ties by name, NULL last: the same order on both backends)."""
    segments = [_normalised(row) for row in rows]
    return sorted(
        segments,
        key=lambda row: (-row["companies"], row["segment"] is None, row["segment"] or ""),
    )


# -- data-quality warnings -------------------------------------------------------------------------------


def data_quality(data_dir: Path | str, day: dt.date) -> DataQuality:
    """The day's data-quality warnings, read defensively: a missing or odd file never fails the report.

    First choice: the validation results the quality gates keep under
    ``{data_dir}/validation/date=D/*.json`` (their ``warnings``, and any row drop an operator accepted).
    Without them: the CRM parser's warnings for the landed snapshot. Otherwise: none recorded.
    """
    directory = results_dir(Path(data_dir), day)
    documents = sorted(directory.glob("*.json")) if directory.is_dir() else []
    if documents:
        order = {name: index for index, name in enumerate(DATASETS)}
        documents.sort(key=lambda path: (order.get(path.stem, len(order)), path.name))
        warnings: list[str] = []
        for path in documents:
            warnings.extend(_validation_warnings(path))
        return DataQuality("validation results", warnings)
    try:
        _manifest, snapshot = read_landed_snapshot(Path(data_dir), day)
    except Exception as error:  # no landing (a day loaded by other means), or unreadable
        log.debug("no CRM parser warnings for %s: %s", day, error)
        return DataQuality("none recorded")
    return DataQuality("CRM parser", list(snapshot.warnings))


def _validation_warnings(path: Path) -> list[str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"{path.name}: the validation results could not be read ({error})"]
    if not isinstance(document, dict):
        return [f"{path.name}: unexpected validation results format"]
    dataset = str(document.get("dataset") or path.stem)
    found = [str(item) for item in document.get("warnings") or [] if item]
    for check in document.get("checks") or []:
        if isinstance(check, dict) and check.get("status") == "accepted":
            found.append(
                f"{dataset}: check {check.get('check', '?')} failed and was accepted by an operator "
                "(--accept-row-drop)"
            )
    if document.get("success") is False:
        failures = document.get("failures") or []
        found.append(f"{dataset}: validation failed: {'; '.join(map(str, failures)) or 'see ' + path.name}")
    return found


def summary(data: ReportData, *, top: int = 10) -> dict[str, Any]:
    """The report's numbers as JSON: what the plain-text mail and the subject line are written from."""

    def company(row: dict[str, Any]) -> dict[str, Any]:
        return {key: normalise_value(value) for key, value in row.items()}

    return {
        "date": data.day.isoformat(),
        "previous_day": data.previous_day.isoformat(),
        "previous_week": data.previous_week.isoformat(),
        "window_start": data.window_start.isoformat(),
        "headline": [metric.as_json() for metric in data.headline()],
        "churn_known": data.today.churn_known,
        "history_notes": data.history_notes(),
        "trend_note": data.trend_note(),
        "loaded_days_in_window": data.loaded_in_window,
        "too_little_history": data.too_little_history,
        "crm_snapshot_date": normalise_value(data.crm_snapshot_date),
        "newly_at_risk": {
            "count": len(data.newly_at_risk),
            "top": [company(row) for row in data.newly_at_risk[:top]],
        },
        "recovered": {"count": len(data.recovered), "top": [company(row) for row in data.recovered[:top]]},
        "orphans": {"count": data.orphan_count},
        "data_quality": {"source": data.data_quality.source, "warnings": data.data_quality.warnings},
    }


def _as_text(value: Any) -> str:
    return "" if value is None else str(normalise_value(value))


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    """A full list (the report shows the first rows only) as CSV beside the report."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_as_text(row.get(column)) for column in columns])
    return path
