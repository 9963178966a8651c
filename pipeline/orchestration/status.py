"""``python -m pipeline status``: is the table fresh and healthy? (docs/contract.md section 7)

For each day of a window (``--days N``, default 7, ending ``--date D``, default yesterday in UTC): loaded
or not and from which landings, the row counts, each dataset's latest validation verdict with its warnings,
the companies at churn risk, whether the report was rendered, mailed or corrected, and how long the day's
tasks took. Then the freshness of the table: the age of the newest loaded day's end (D+1 00:00 UTC)
against ``[monitoring] max_age_hours``.

It only reads: the warehouse through :func:`pipeline.warehouse.engine.read_only_engine` (SQLite files
opened read-only, PostgreSQL transactions read-only; a missing file, schema or table is "nothing
loaded"), and the files under ``data_dir``. It never calls the API, creates nothing and writes nothing.

Exit status (the first that applies, in this order):

====  ==========================================================================================
0     fresh, and every day of the window loaded and passed its gates
3     stale: the newest loaded day ended more than ``max_age_hours`` ago (or nothing is loaded)
5     a day of the window failed a gate: its latest validation failed (the latest day, typically)
4     a day of the window is not loaded (a gap, or the nightly run did not load it)
1     the warehouse could not be read (the message says why)
2     the command line was wrong
====  ==========================================================================================

Stale comes first: the table is old for everyone who reads it, whatever the cause. A failed gate comes
before a plain gap because it needs a decision (fix the source, or ``--accept-row-drop``), where a gap
is usually filled by the next nightly ``CatchUp``.

Why one module of about 530 lines: reading every fact of a day, the exit-code rules, and the table
and JSON renderings of the same facts change together; the command line is a few lines at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline import clock
from pipeline.datasets import DATASETS
from pipeline.orchestration import task_times
from pipeline.quality import store
from pipeline.reporting import mailer, notebook
from pipeline.reporting.data import data_version
from pipeline.warehouse import corrections
from pipeline.warehouse.engine import WarehouseSettings, read_only_engine, table_exists
from pipeline.warehouse.sql import WarehouseError, run_sql

FRESH_AND_HEALTHY, CANNOT_READ, BAD_COMMAND_LINE, STALE, MISSING_DAY, FAILED_GATE = 0, 1, 2, 3, 4, 5
EXIT_CODES = {
    FRESH_AND_HEALTHY: "fresh, every day of the window loaded and passed its gates",
    STALE: "stale: the newest loaded day is older than [monitoring] max_age_hours",
    FAILED_GATE: "a day of the window failed a gate",
    MISSING_DAY: "a day of the window is not loaded",
    CANNOT_READ: "the warehouse could not be read",
    BAD_COMMAND_LINE: "the command line was wrong",
}
DEFAULT_DAYS = 7


class StatusError(RuntimeError):
    """The warehouse could not be read."""


@dataclass
class DayStatus:
    date: dt.date
    loaded: bool
    loaded_at: str | None = None
    crm_snapshot_date: str | None = None
    landing_ids: dict[str, str] | None = None
    rows: dict[str, int] | None = None
    validations: dict[str, dict[str, Any]] = field(default_factory=dict)
    churn_risk: int | None = None
    churn_risk_known: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    task_seconds: float | None = None
    tasks: dict[str, float] = field(default_factory=dict)
    # The latest recorded correction of the day (what a re-merge changed), as DayCorrection.as_json().
    correction: dict[str, Any] | None = None

    @property
    def failed_gate(self) -> bool:
        return any(verdict["verdict"] == "failed" for verdict in self.validations.values())


@dataclass
class Status:
    first: dt.date
    last: dt.date
    generated_at: dt.datetime
    days: list[DayStatus]
    newest_loaded_day: dt.date | None
    max_age_hours: float

    @property
    def age_hours(self) -> float | None:
        """Hours since the newest loaded day ended (D+1 00:00 UTC); None when nothing is loaded."""
        if self.newest_loaded_day is None:
            return None
        end = dt.datetime.combine(self.newest_loaded_day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return (self.generated_at - end).total_seconds() / 3600

    @property
    def fresh(self) -> bool:
        age = self.age_hours
        return age is not None and age <= self.max_age_hours

    @property
    def missing_days(self) -> list[dt.date]:
        return [day.date for day in self.days if not day.loaded]

    @property
    def failed_gate_days(self) -> list[dt.date]:
        return [day.date for day in self.days if day.failed_gate]

    @property
    def exit_code(self) -> int:
        if not self.fresh:
            return STALE
        if self.failed_gate_days:
            return FAILED_GATE
        if self.missing_days:
            return MISSING_DAY
        return FRESH_AND_HEALTHY

    def problems(self) -> list[str]:
        found = []
        if self.newest_loaded_day is None:
            found.append("stale: no day is loaded")
        elif not self.fresh:
            found.append(
                f"stale: the newest loaded day, {self.newest_loaded_day.isoformat()}, ended "
                f"{self.age_hours:.1f} h ago (limit {self.max_age_hours:g} h)"
            )
        for day in self.days:
            for dataset, verdict in day.validations.items():
                if verdict["verdict"] == "failed":
                    found.append(
                        f"{day.date.isoformat()}: {dataset} failed validation "
                        f"({verdict['failed_checks']} check(s); {verdict['results'] or 'no results page'})"
                    )
        found.extend(f"{day.isoformat()}: not loaded" for day in self.missing_days)
        return found


# -- reading --------------------------------------------------------------------------------------------


def collect_status(
    warehouse: WarehouseSettings,
    data_dir: Path | str,
    *,
    last: dt.date,
    days: int = DEFAULT_DAYS,
    max_age_hours: float = 30.0,
    now: dt.datetime | None = None,
) -> Status:
    """Everything the status shows, read without writing anything. Raises :class:`StatusError` when the
    warehouse cannot be read."""
    if days < 1:
        raise ValueError("the window needs at least one day (--days 1 or more)")
    first = last - dt.timedelta(days=days - 1)
    facts = _read_warehouse(warehouse, first, last)
    window = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        window.append(_day_status(day, facts, Path(data_dir)))
    return Status(
        first=first,
        last=last,
        generated_at=now or clock.now_utc(),
        days=window,
        newest_loaded_day=facts["newest"],
        max_age_hours=max_age_hours,
    )


def _read_warehouse(warehouse: WarehouseSettings, first: dt.date, last: dt.date) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "loaded": {},
        "validations": {},
        "churn": {},
        "versions": {},
        "corrections": {},
        "newest": None,
    }
    try:
        engine = read_only_engine(warehouse)
    except (WarehouseError, sa.exc.ArgumentError) as error:
        raise StatusError(str(error)) from None
    if engine is None:
        return facts  # a SQLite warehouse that does not exist yet: nothing loaded
    try:
        with engine.connect() as connection:
            if table_exists(connection, "analytics", "loaded_days"):
                newest = run_sql(connection, "marts/select_newest_loaded_day").scalar()
                facts["newest"] = clock.as_date(newest) if newest is not None else None
                rows = run_sql(
                    connection, "marts/select_loaded_days_for_status", first_date=first, last_date=last
                )
                facts["loaded"] = {clock.as_date(row.activity_date): dict(row._mapping) for row in rows}
                if table_exists(connection, "analytics", "company_daily_activity"):
                    for row in run_sql(
                        connection,
                        "marts/select_churn_risk_counts_in_range",
                        first_date=first,
                        last_date=last,
                    ):
                        facts["churn"][clock.as_date(row.activity_date)] = (
                            int(row.at_risk),
                            int(row.unknown),
                        )
                    for day in facts["loaded"]:
                        facts["versions"][day] = data_version(connection, day)
            if table_exists(connection, "analytics", "day_corrections"):
                for day in facts["loaded"]:
                    correction = corrections.latest_correction(connection, day)
                    if correction is not None:
                        facts["corrections"][day] = correction.as_json()
            if table_exists(connection, "analytics", "day_validations"):
                for row in run_sql(
                    connection, "quality/select_day_validations_in_range", first_date=first, last_date=last
                ):
                    facts["validations"][(clock.as_date(row.activity_date), row.dataset)] = dict(row._mapping)
    except sa.exc.SQLAlchemyError as error:
        shown = sa.make_url(warehouse.database_url).render_as_string(hide_password=True)
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StatusError(f"cannot read the warehouse {shown}: {detail}") from None
    finally:
        engine.dispose()
    return facts


def _day_status(day: dt.date, facts: dict[str, Any], data_dir: Path) -> DayStatus:
    record = facts["loaded"].get(day)
    status = DayStatus(date=day, loaded=record is not None)
    if record is not None:
        status.loaded_at = clock_text(record["loaded_at"])
        status.crm_snapshot_date = clock.as_date(record["crm_snapshot_date"]).isoformat()
        status.landing_ids = {"crm": record["crm_landing_id"], "usage": record["usage_landing_id"]}
        status.rows = {
            "crm": int(record["crm_rows"]),
            "usage": int(record["usage_rows"]),
            "output": int(record["output_rows"]),
            "orphans": int(record["orphan_rows"]),
        }
    for dataset in DATASETS:
        verdict = _latest_verdict(
            facts["validations"].get((day, dataset)), store_results(data_dir, day, dataset)
        )
        if verdict:
            status.validations[dataset] = verdict
    if day in facts["churn"]:
        at_risk, unknown = facts["churn"][day]
        status.churn_risk_known = unknown == 0
        status.churn_risk = at_risk if unknown == 0 else None
    status.report = _report_state(data_dir, day, facts["versions"].get(day))
    status.correction = facts["corrections"].get(day)
    recorded = task_times.read(data_dir, day)
    status.tasks = {family: float(document["seconds"]) for family, document in recorded.items()}
    status.task_seconds = round(sum(status.tasks.values()), 3) if status.tasks else None
    return status


def clock_text(value: object) -> str | None:
    if value is None:
        return None
    return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)


def store_results(data_dir: Path, day: dt.date, dataset: str) -> dict[str, Any] | None:
    """The saved results of a dataset/day, or None (missing or unreadable: status never fails on a file)."""
    try:
        return store.read_results(data_dir, day, dataset)
    except (OSError, ValueError):
        return None


def _latest_verdict(recorded: dict[str, Any] | None, saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newer of the warehouse's record (committed verdicts) and the results on disk (every validation,
    also one whose merge was rolled back)."""
    candidates = []
    if recorded:
        candidates.append(
            (
                _as_naive_utc(recorded.get("validated_at")),
                {
                    "verdict": "passed" if recorded["success"] else "failed",
                    "warnings": int(recorded["warning_count"]),
                    "failed_checks": int(recorded["failed_checks"]),
                    "row_drop_accepted": bool(recorded["row_drop_accepted"]),
                    "row_count": int(recorded["row_count"]),
                    "validated_at": clock_text(recorded.get("validated_at")),
                    "results": recorded.get("results_path"),
                },
            )
        )
    if saved:
        candidates.append(
            (
                _as_naive_utc(saved.get("validated_at")),
                {
                    "verdict": "passed" if saved.get("success") else "failed",
                    "warnings": len(saved.get("warnings") or []),
                    "failed_checks": int(saved.get("failed_checks") or len(saved.get("failures") or [])),
                    "row_drop_accepted": bool(saved.get("row_drop_accepted")),
                    "row_count": saved.get("row_count"),
                    "validated_at": saved.get("validated_at"),
                    "results": saved.get("html_path"),
                },
            )
        )
    if not candidates:
        return None
    return max(candidates, key=lambda candidate: candidate[0])[1]


def _as_naive_utc(value: object) -> dt.datetime:
    """A validation time from either source as naive UTC; unknown: the earliest time."""
    if isinstance(value, dt.datetime):
        return (
            value.replace(tzinfo=None)
            if value.tzinfo is None
            else value.astimezone(dt.UTC).replace(tzinfo=None)
        )
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _report_state(data_dir: Path, day: dt.date, current_version: str | None) -> dict[str, Any]:
    try:
        manifest = notebook.read_manifest(data_dir, day)
        history = mailer.send_history(data_dir, day)
    except (OSError, ValueError):
        manifest, history = None, []
    sent = [entry for entry in history if entry.get("status") == mailer.SENT]
    state: dict[str, Any] = {
        "rendered": manifest is not None,
        "current": bool(manifest)
        and current_version is not None
        and manifest.get("data_version") == current_version,
        "rendered_at": manifest.get("rendered_at") if manifest else None,
        "mailed": bool(sent),
        "corrected": any(entry.get("correction") for entry in sent),
        "last_sent_at": sent[-1].get("sent_at") if sent else None,
        "not_sent_reason": history[-1].get("reason")
        if history and history[-1].get("status") != mailer.SENT
        else None,
    }
    return state


# -- showing --------------------------------------------------------------------------------------------


def to_json(status: Status) -> dict[str, Any]:
    days = []
    for day in status.days:
        document = asdict(day)
        document["date"] = day.date.isoformat()
        days.append(document)
    return {
        "generated_at": status.generated_at.isoformat(timespec="seconds"),
        "window": {
            "first": status.first.isoformat(),
            "last": status.last.isoformat(),
            "days": len(status.days),
        },
        "fresh": status.fresh,
        "newest_loaded_day": status.newest_loaded_day.isoformat() if status.newest_loaded_day else None,
        "age_hours": round(status.age_hours, 2) if status.age_hours is not None else None,
        "max_age_hours": status.max_age_hours,
        "missing_days": [day.isoformat() for day in status.missing_days],
        "failed_gate_days": [day.isoformat() for day in status.failed_gate_days],
        "problems": status.problems(),
        "exit_code": status.exit_code,
        "exit_reason": EXIT_CODES[status.exit_code],
        "days": days,
    }


_HEADER = (
    "date", "loaded", "crm", "usage", "output", "orphans", "crm check", "usage check", "output check",
    "at risk", "report", "last correction", "tasks", "landings (crm / usage)",
)  # fmt: skip
_RIGHT_ALIGNED = {"crm", "usage", "output", "orphans", "at risk", "tasks"}


def render_table(status: Status) -> str:
    """The human view: one line per day, gaps and failures marked, then freshness and the problems."""
    rows = [list(_HEADER)]
    markers = [""]
    for day in reversed(status.days):  # newest first, as people read a log
        rows.append(
            [
                f"{day.date.isoformat()} {day.date.strftime('%a')}",
                "yes" if day.loaded else "MISSING",
                *(_number(day.rows, key) for key in ("crm", "usage", "output", "orphans")),
                *(_verdict(day.validations.get(dataset)) for dataset in DATASETS),
                str(day.churn_risk) if day.churn_risk is not None else ("?" if day.loaded else "-"),
                _report(day.report),
                _correction(day.correction),
                f"{day.task_seconds:.1f}s" if day.task_seconds is not None else "-",
                f"{day.landing_ids['crm']} / {day.landing_ids['usage']}" if day.landing_ids else "-",
            ]
        )
        markers.append("  <- gap" if not day.loaded else ("  <- failed" if day.failed_gate else ""))
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER))]
    lines = [
        f"Status of {status.first.isoformat()} .. {status.last.isoformat()} ({len(status.days)} days), "
        f"at {status.generated_at.isoformat(timespec='seconds')}",
        "",
    ]
    for row, marker in zip(rows, markers, strict=True):
        cells = [
            cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
            for cell, width, name in zip(row, widths, _HEADER, strict=True)
        ]
        lines.append("  ".join(cells).rstrip() + marker)
    lines.append("")
    if status.newest_loaded_day is None:
        lines.append(f"Freshness: STALE, no day is loaded (limit {status.max_age_hours:g} h)")
    else:
        end = status.newest_loaded_day + dt.timedelta(days=1)
        lines.append(
            f"Freshness: {'fresh' if status.fresh else 'STALE'}: the newest loaded day is "
            f"{status.newest_loaded_day.isoformat()}, which ended {end.isoformat()} 00:00 UTC, "
            f"{status.age_hours:.1f} h ago (limit {status.max_age_hours:g} h)"
        )
    problems = status.problems()
    if problems:
        lines.append("Problems:")
        lines.extend(f"  - {problem}" for problem in problems)
    lines.append(f"Exit status {status.exit_code}: {EXIT_CODES[status.exit_code]}")
    return "\n".join(lines) + "\n"


def _number(rows: dict[str, int] | None, key: str) -> str:
    return f"{rows[key]:,}" if rows else "-"


def _verdict(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "-"
    text = "passed" if verdict["verdict"] == "passed" else "FAILED"
    if verdict["row_drop_accepted"]:
        text += " acc"
    if verdict["warnings"]:
        text += f" {verdict['warnings']}w"
    return text


def _correction(correction: dict[str, Any] | None) -> str:
    """E.g. '2026-11-20: +1 -0 ~340 rows' (the merge that changed the day, rows added, removed, changed)."""
    if not correction:
        return "-"
    return (
        f"{correction['merged_date']}: +{correction['rows_added']} -{correction['rows_removed']} "
        f"~{correction['rows_changed']} rows"
    )


def _report(report: dict[str, Any]) -> str:
    if not report.get("rendered"):
        return "-"
    text = "corrected" if report["corrected"] else ("mailed" if report["mailed"] else "rendered")
    if not report["current"]:
        text += " (old)"
    return text


# -- the command ----------------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline status",
        description="Is the table fresh and healthy? Reads the warehouse and data_dir, changes nothing.",
        epilog="Exit status: "
        + "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items())),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days in the window (default 7)")
    parser.add_argument(
        "--date",
        type=dt.date.fromisoformat,
        default=None,
        help="the window's last day (default: yesterday UTC)",
    )
    parser.add_argument(
        "--max-age-hours", type=float, default=None, help="override [monitoring] max_age_hours"
    )
    arguments = parser.parse_args(list(argv))
    if arguments.days < 1:
        parser.error("--days must be 1 or more")
    if arguments.date is not None and arguments.date >= clock.today_utc():
        parser.error(
            f"--date {arguments.date.isoformat()} is not over in UTC yet: nothing can be loaded for it"
        )
    return arguments


def main(argv: Sequence[str]) -> int:
    """``python -m pipeline status``: prints the status, returns the exit status of the module doc."""
    from pipeline.config import MonitoringConfig, PipelineConfig

    arguments = parse_arguments(argv)
    config = PipelineConfig()
    max_age = (
        arguments.max_age_hours if arguments.max_age_hours is not None else MonitoringConfig().max_age_hours
    )
    try:
        status = collect_status(
            WarehouseSettings(**config.warehouse_settings()),
            config.data_dir,
            last=arguments.date or clock.yesterday_utc(),
            days=arguments.days,
            max_age_hours=max_age,
        )
    except StatusError as error:
        print(f"error: {error}", file=sys.stderr)
        return CANNOT_READ
    if arguments.json:
        print(json.dumps(to_json(status), indent=2, default=str))
    else:
        sys.stdout.write(render_table(status))
    return status.exit_code
