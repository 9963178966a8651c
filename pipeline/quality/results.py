"""The verdict of a data-quality gate, and where verdicts are kept.

A failing critical check raises :class:`DataValidationError`, whose message names the dataset, the
date, each failed check with its column, the observed value or the number of bad rows and a few example
``company_id``s, and the path of the saved results.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.datasets import OUTPUT, TITLES
from pipeline.warehouse.ledger import SAME_WEEKDAY, TRAILING_MEDIAN, same_weekday_candidates


class DataValidationError(RuntimeError):
    """A dataset of a day failed a critical check; nothing of the day was merged."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.failure_message())


@dataclass
class CheckResult:
    """One expectation's verdict, in the terms an operator needs."""

    check: str  # meta.check of the expectation, e.g. "crm.company_id.unique"
    expectation: str
    description: str
    column: str  # the column(s), or "table" for table-level checks
    severity: str  # "critical" or "warning"
    status: str  # "passed", "failed", "warning" (a failed warning-level check) or "accepted" (override)
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[str] = field(default_factory=list)  # "C000123" or "C000123 (column=value)"
    bounds: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # an exception raised while evaluating the check

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def finding(self) -> str:
        """What was wrong, e.g. '3 bad rows of 50 (6.0%), e.g. company_id C000002, C000007'."""
        if self.error:
            return f"the check could not be evaluated: {self.error}"
        if self.unexpected_count is not None:
            text = f"{self.unexpected_count} bad row{'s' if self.unexpected_count != 1 else ''}"
            if self.element_count:
                text += f" of {self.element_count} ({100 * self.unexpected_count / self.element_count:.1f}%)"
            if self.bounds:
                text += f" (allowed: {', '.join(f'{key} {value}' for key, value in self.bounds.items())})"
            if self.examples:
                text += f", e.g. company_id {', '.join(self.examples)}"
            return text
        bounds = ", ".join(f"{key} {value}" for key, value in self.bounds.items())
        return f"observed {short(self.observed_value)}" + (f" (expected {bounds})" if bounds else "")


@dataclass
class ValidationOutcome:
    """The verdict on one dataset of one day, as saved beside the HTML and raised in errors."""

    dataset: str
    date: dt.date
    success: bool
    row_count: int
    previous_date: dt.date | None
    previous_row_count: int | None
    max_row_drop: float
    min_row_count: int
    accept_row_drop: bool
    checks: list[CheckResult]
    warnings: list[str]
    landing_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)  # e.g. crm_companies and orphans for the output
    validated_at: str = ""
    seconds: float = 0.0
    json_path: str = ""
    html_path: str = ""
    great_expectations_version: str = ""
    # [validation] row_drop_baseline and the loaded days behind previous_row_count (ISO dates, oldest first)
    baseline: str = "previous_day"
    baseline_days: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == "failed"]

    @property
    def row_drop_accepted(self) -> bool:
        return any(check.status == "accepted" for check in self.checks)

    def describe(self, check: CheckResult) -> str:
        """One line per check for messages: column, check name, what was expected and what was found."""
        head = f"{check.column} [{check.check}] {check.description}"
        if check.check.endswith(".row_drop") and not check.error:
            return f"{check.column} [{check.check}] {self.row_drop_text()}"
        if check.check.endswith(".not_empty") and not check.error:
            return f"{check.column} [{check.check}] {check.description}: observed {self.row_count} rows"
        if check.check == f"{OUTPUT}.row_count.crm_plus_orphans" and not check.error:
            expected = self.parameters.get("expected_row_count")
            crm_companies, orphans = self.context.get("crm_companies"), self.context.get("orphans")
            return (
                f"{head}: observed {self.row_count} rows, expected {expected} "
                f"({crm_companies} CRM companies + {orphans} orphans)"
            )
        return f"{head}: {check.finding()}"

    def row_drop_text(self) -> str:
        if self.previous_row_count is None:
            return f"row count {self.row_count}; {self.no_baseline_text()}"
        drop = (
            (self.previous_row_count - self.row_count) / self.previous_row_count
            if self.previous_row_count
            else 0.0
        )
        change = f"{drop:.1%} below" if drop >= 0 else f"{-drop:.1%} above"
        return (
            f"row count {self.row_count} is {change} {self.previous_row_count} {self.baseline_text()}; "
            f"the allowed drop is {self.max_row_drop:.0%} (at least {self.min_row_count} rows)"
        )

    def baseline_text(self) -> str:
        """Which loaded days the row count was compared with, e.g. 'on 2026-11-19 (the previous loaded
        day)'."""
        compared = self.previous_date.isoformat() if self.previous_date else "?"
        if self.baseline == SAME_WEEKDAY and self.previous_date:
            weeks = (self.date - self.previous_date).days // 7
            return (
                f"on {compared} (the same weekday, a {self.previous_date.strftime('%A')}, "
                f"{'a week' if weeks == 1 else f'{weeks} weeks'} before; row_drop_baseline = same_weekday)"
            )
        if self.baseline == TRAILING_MEDIAN:
            count = len(self.baseline_days)
            return (
                f"(the median of the {count} loaded day{'s' if count != 1 else ''} before "
                f"{self.date.isoformat()}: {', '.join(self.baseline_days) or compared}; "
                "row_drop_baseline = trailing_median)"
            )
        return f"on {compared} (the previous loaded day)"

    def no_baseline_text(self) -> str:
        if self.baseline == SAME_WEEKDAY:
            candidates = same_weekday_candidates(self.date)
            return (
                f"no loaded {self.date.strftime('%A')} in the {len(candidates)} weeks before "
                f"{self.date.isoformat()} ({', '.join(day.isoformat() for day in candidates)}) to compare "
                "with (row_drop_baseline = same_weekday): the check passes without a baseline"
            )
        return f"no loaded day before {self.date.isoformat()} to compare with"

    def failure_message(self) -> str:
        failures = self.failures
        lines = [
            f"{TITLES[self.dataset]} ({self.dataset}) for {self.date.isoformat()} failed validation: "
            f"{len(failures)} check{'s' if len(failures) != 1 else ''} failed "
            f"(results: {self.html_path or 'not saved'})"
        ]
        lines.extend(f"  - {self.describe(check)}" for check in failures)
        if any(check.check.endswith((".row_drop", ".not_empty")) for check in failures):
            lines.append(
                "  If the drop is real, run the day again with --accept-row-drop (logged and recorded)."
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["date"] = self.date.isoformat()
        document["previous_date"] = self.previous_date.isoformat() if self.previous_date else None
        document["row_drop_accepted"] = self.row_drop_accepted
        document["failed_checks"] = len(self.failures)
        document["failures"] = [self.describe(check) for check in self.failures]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ValidationOutcome:
        values = {key: document[key] for key in cls.__dataclass_fields__ if key in document}
        values["date"] = dt.date.fromisoformat(document["date"])
        values["previous_date"] = (
            dt.date.fromisoformat(document["previous_date"]) if document.get("previous_date") else None
        )
        values["checks"] = [CheckResult(**check) for check in document.get("checks", [])]
        return cls(**values)


def short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def raise_for_failures(outcome: ValidationOutcome) -> ValidationOutcome:
    if not outcome.success:
        raise DataValidationError(outcome)
    return outcome
