"""Data-quality gates (SPEC section 5): the suites under ``expectations/`` run on each day's data.

Where they run in the graph:

* ``ValidateCrm(D)`` and ``ValidateProductUsage(D)`` validate the staged rows of D between staging and
  the merge (:func:`validate_crm`, :func:`validate_product_usage`);
* ``MergeDay(D)`` validates its own result inside the merge's transaction, before it commits
  (:func:`output_validator` is its ``before_commit``): a failing output check rolls the day back and
  leaves ``analytics.company_daily_activity`` exactly as it was.

A failing critical check raises :class:`DataValidationError`, whose message names the dataset, the
date, each failed check with its column, the observed value or the number of bad rows and a few
example ``company_id``s, and the path of the saved results. Warning-level checks (a country that is
not ISO 3166-1 alpha-2, extra CRM columns) are logged and kept with the results
(:func:`warnings_for_day` gives them to the report).

Row drop: each dataset's row count is compared with the previous *loaded* day's (the latest day
before D in ``analytics.loaded_days``, i.e. a day that passed its checks); a drop of more than
``[validation] max_row_drop`` fails. The first day has no previous count: ``min_row_count`` is 0.
``RunDaily --accept-row-drop`` turns a failing row-drop check (and an empty usage day) into an
accepted, logged warning; the override is recorded in the results and in ``analytics.day_validations``.

Every validation writes ``{data_dir}/validation/date=D/<dataset>.json`` (the verdict, each check, and
Great Expectations' own result) and ``<dataset>.html`` beside it (self-contained: no script, no CDN).

Great Expectations is imported inside the functions that validate (it costs seconds to import), with
an ephemeral context created once per process and its progress bars off.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import html
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import luigi
from sqlalchemy.engine import Connection, Engine

from pipeline import landing
from pipeline.transform import MergeResult, as_date, loaded_day, utc_now
from pipeline.warehouse import run_sql

log = logging.getLogger("pipeline.validation")

CRM = "crm"
USAGE = "product_usage"
OUTPUT = "company_daily_activity"
DATASETS = (CRM, USAGE, OUTPUT)
TITLES = {CRM: "CRM snapshot", USAGE: "product usage", OUTPUT: "analytics.company_daily_activity"}
# The loaded_days column holding each dataset's row count of a loaded day.
LOADED_DAY_COUNT = {CRM: "crm_rows", USAGE: "usage_rows", OUTPUT: "output_rows"}
EXAMPLES = 5
RESULTS_DIR = "validation"
DEFAULT_MAX_ROW_DROP = 0.10
CRM_REQUIRED_COLUMNS = ("company_id", "company_name", "country", "industry_tag", "last_contact_at")
# The suites: written by pipeline/expectation_suites.py, loaded from here.
EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"
SUITE_FILES = {CRM: "crm_snapshot.json", USAGE: "product_usage.json", OUTPUT: "company_daily_activity.json"}
# meta.override of the checks that RunDaily --accept-row-drop may accept.
OVERRIDE_ROW_DROP = "accept_row_drop"


class DataValidationError(RuntimeError):
    """A dataset of a day failed a critical check; nothing of the day was merged."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.failure_message())


class SuiteError(RuntimeError):
    """A suite file is missing, invalid, or asks for a parameter the pipeline does not provide."""


# -- results -----------------------------------------------------------------------------------------


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
        return f"observed {_short(self.observed_value)}" + (f" (expected {bounds})" if bounds else "")


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
            return f"row count {self.row_count}; no loaded day before {self.date.isoformat()} to compare with"
        drop = (
            (self.previous_row_count - self.row_count) / self.previous_row_count
            if self.previous_row_count
            else 0.0
        )
        change = f"{drop:.1%} below" if drop >= 0 else f"{-drop:.1%} above"
        return (
            f"row count {self.row_count} is {change} {self.previous_row_count} on "
            f"{self.previous_date.isoformat() if self.previous_date else '?'} (the previous loaded day); "
            f"the allowed drop is {self.max_row_drop:.0%} (at least {self.min_row_count} rows)"
        )

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


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- where results live --------------------------------------------------------------------------------


def results_dir(data_dir: Path, day: dt.date) -> Path:
    return Path(data_dir) / RESULTS_DIR / f"date={day.isoformat()}"


def results_path(data_dir: Path, day: dt.date, dataset: str, suffix: str = ".json") -> Path:
    return results_dir(data_dir, day) / f"{dataset}{suffix}"


def read_results(data_dir: Path, day: dt.date, dataset: str) -> dict[str, Any] | None:
    """The saved results of a dataset/day (the JSON document), or None when it was never validated."""
    path = results_path(data_dir, day, dataset)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def warnings_for_day(data_dir: Path, day: dt.date) -> list[str]:
    """Every warning of the day's latest validations (CRM, usage, output, in that order): for the report."""
    found: list[str] = []
    for dataset in DATASETS:
        document = read_results(data_dir, day, dataset)
        if document:
            found.extend(document.get("warnings", []))
    return found


def passed_landing_id(data_dir: Path, day: dt.date, dataset: str) -> str | None:
    """The landing id whose staged rows passed validation (None: not validated, or it failed)."""
    document = read_results(data_dir, day, dataset)
    if not document or not document.get("success"):
        return None
    return document.get("landing_id")


class ValidatedTarget(luigi.Target):
    """A dataset/date pair whose currently staged rows passed validation.

    Tied to the staged landing id: when a refresh stages a new landing, the old verdict no longer
    counts and the day is validated again.
    """

    def __init__(self, data_dir: Path, dataset: str, day: dt.date, staged_target: Any) -> None:
        self.data_dir, self.dataset, self.day = Path(data_dir), dataset, day
        self.staged_target = staged_target  # anything with staged_landing_id()

    @property
    def path(self) -> Path:
        return results_path(self.data_dir, self.day, self.dataset)

    def exists(self) -> bool:
        validated = passed_landing_id(self.data_dir, self.day, self.dataset)
        return validated is not None and validated == self.staged_target.staged_landing_id()


# -- Great Expectations, loaded lazily -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _gx() -> Any:
    """Great Expectations with an ephemeral context (created once per process), progress bars off."""
    started = time.monotonic()
    import great_expectations as gx
    import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GE fingerprints every pandas batch (an MD5 over all values) for its batch markers, which we
    # never use: ~0.7 s per million CRM rows, more than the checks themselves. Frames above this size
    # (bytes) are not fingerprinted; 0 turns it off (see docs/benchmarks.md).
    pandas_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource = context.data_sources.add_pandas("pipeline")
    batch_definitions = {
        dataset: datasource.add_dataframe_asset(name=dataset).add_batch_definition_whole_dataframe(dataset)
        for dataset in DATASETS
    }
    log.debug("Great Expectations %s ready in %.2fs", gx.__version__, time.monotonic() - started)
    return gx, context, batch_definitions


@functools.lru_cache(maxsize=8)
def _suite_document(dataset: str, directory: str) -> dict[str, Any]:
    path = Path(directory) / SUITE_FILES[dataset]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise SuiteError(
            f"missing expectation suite {path}: python -m pipeline.expectation_suites --write"
        ) from error
    except json.JSONDecodeError as error:
        raise SuiteError(f"{path} is not valid JSON: {error}") from error


def load_suite(dataset: str, directory: Path = EXPECTATIONS_DIR) -> Any:
    """The suite of ``dataset`` from its JSON file, as a GE ExpectationSuite (checked to be complete)."""
    gx, _, _ = _gx()
    document = _suite_document(dataset, str(directory))
    try:
        suite = gx.ExpectationSuite(**json.loads(json.dumps(document)))  # a copy: GE keeps what it is given
    except Exception as error:
        raise SuiteError(
            f"{Path(directory) / SUITE_FILES[dataset]} is not a valid suite for great-expectations "
            f"{gx.__version__}: {type(error).__name__}: {error}"
        ) from error
    # GE drops an invalid expectation with only a log line; a suite file must never lose a rule silently.
    lost = len(document.get("expectations", [])) - len(suite.expectations)
    if lost:
        raise SuiteError(
            f"{Path(directory) / SUITE_FILES[dataset]}: {lost} expectation(s) are invalid for "
            f"great-expectations {gx.__version__} (see the log); "
            "regenerate with python -m pipeline.expectation_suites --write"
        )
    return suite


def suite_parameters(dataset: str, directory: Path = EXPECTATIONS_DIR) -> list[str]:
    return list(_suite_document(dataset, str(directory)).get("meta", {}).get("parameters", []))


# -- the baseline of the row-drop check ------------------------------------------------------------------


def previous_loaded_day(connection: Connection, day: dt.date) -> dict[str, Any] | None:
    """The latest loaded day before ``day`` with its row counts, or None (the first day)."""
    row = run_sql(connection, "select_previous_loaded_day", activity_date=day).first()
    if row is None:
        return None
    record = dict(row._mapping)
    record["activity_date"] = as_date(record["activity_date"])
    return record


def min_row_count(previous_row_count: int | None, max_row_drop: float) -> int:
    """The fewest rows that pass: a drop of up to ``max_row_drop`` (exactly, not in floating point)."""
    if previous_row_count is None:
        return 0
    if not 0 <= max_row_drop <= 1:
        raise ValueError(f"[validation] max_row_drop must be between 0 and 1, got {max_row_drop}")
    allowed = Fraction(str(max_row_drop)) * previous_row_count
    return previous_row_count - int(allowed)  # int() floors a non-negative Fraction


# -- running a suite -----------------------------------------------------------------------------------


def run_suite(
    dataset: str,
    day: dt.date,
    frame: Any,
    *,
    parameters: dict[str, Any],
    previous: dict[str, Any] | None,
    max_row_drop: float,
    accept_row_drop: bool,
    data_dir: Path,
    landing_id: str | None = None,
    extra_warnings: Sequence[str] = (),
    context: dict[str, Any] | None = None,
    suites_dir: Path = EXPECTATIONS_DIR,
) -> ValidationOutcome:
    """Validate ``frame`` (one day of ``dataset``) with its suite, save JSON + HTML, return the verdict.

    Does not raise on failing checks (see :func:`raise_for_failures`); raises :class:`SuiteError` when
    the suite cannot run.
    """
    started = time.monotonic()
    gx, _, batch_definitions = _gx()
    suite = load_suite(dataset, suites_dir)
    previous_date = previous["activity_date"] if previous else None
    previous_count = int(previous[LOADED_DAY_COUNT[dataset]]) if previous else None
    floor = min_row_count(previous_count, max_row_drop)
    parameters = {"min_row_count": floor, **parameters}
    missing = [name for name in suite_parameters(dataset, suites_dir) if name not in parameters]
    if missing:  # GE would raise from deep inside; say which and why
        raise SuiteError(
            f"the {dataset} suite needs parameter(s) {', '.join(missing)} that were not provided"
        )

    batch = batch_definitions[dataset].get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        suite,
        expectation_parameters=parameters,
        result_format={
            "result_format": "SUMMARY",
            "unexpected_index_column_names": ["company_id"],
            "partial_unexpected_count": 4 * EXAMPLES,
        },
    )
    order = {expectation.meta.get("check"): index for index, expectation in enumerate(suite.expectations)}
    ge_results = sorted(
        (item.to_json_dict() for item in result.results),
        key=lambda item: order.get(item["expectation_config"]["meta"].get("check"), len(order)),
    )
    checks = [_check_result(item, accept_row_drop) for item in ge_results]
    outcome = ValidationOutcome(
        dataset=dataset,
        date=day,
        success=not any(check.status == "failed" for check in checks),
        row_count=len(frame),
        previous_date=previous_date,
        previous_row_count=previous_count,
        max_row_drop=max_row_drop,
        min_row_count=floor,
        accept_row_drop=accept_row_drop,
        checks=checks,
        warnings=[],
        landing_id=landing_id,
        parameters=parameters,
        context=dict(context or {}),
        validated_at=landing.utc_timestamp(),
        great_expectations_version=gx.__version__,
    )
    outcome.warnings = [*extra_warnings, *_warnings(outcome)]
    outcome.seconds = round(time.monotonic() - started, 3)
    save_results(outcome, data_dir, ge_result=_ge_summary(result, ge_results))
    _log_outcome(outcome)
    return outcome


def _check_result(item: dict[str, Any], accept_row_drop: bool) -> CheckResult:
    config = item["expectation_config"]
    kwargs, meta, result = config.get("kwargs", {}), config.get("meta", {}), item.get("result") or {}
    severity = str(config.get("severity", "critical"))
    exception = item.get("exception_info") or {}
    error = exception.get("exception_message") if exception.get("raised_exception") else None
    if item["success"] and not error:
        status = "passed"
    elif severity != "critical" and not error:
        status = "warning"
    elif meta.get("override") == OVERRIDE_ROW_DROP and accept_row_drop and not error:
        status = "accepted"
    else:
        status = "failed"
    if "column" in kwargs:
        column = kwargs["column"]
    elif "column_A" in kwargs:
        column = f"{kwargs['column_A']}, {kwargs['column_B']}"
    elif "column_list" in kwargs:
        column = ", ".join(kwargs["column_list"])
    else:
        column = "table"
    bounds = {key: kwargs[key] for key in ("min_value", "max_value", "value") if kwargs.get(key) is not None}
    return CheckResult(
        check=str(meta.get("check", config["type"])),
        expectation=config["type"],
        description=str(config.get("description") or config["type"]),
        column=column,
        severity=severity,
        status=status,
        observed_value=result.get("observed_value"),
        element_count=result.get("element_count"),
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=result.get("unexpected_percent"),
        examples=_examples(result, column),
        bounds=bounds,
        error=error,
    )


def _examples(result: dict[str, Any], column: str) -> list[str]:
    """A few distinct company_ids of bad rows, with the offending values when they are not the id."""
    examples: list[str] = []
    for row in result.get("partial_unexpected_index_list") or []:
        company_id = row.get("company_id")
        others = ", ".join(f"{key}={_short(value, 40)}" for key, value in row.items() if key != "company_id")
        label = "NULL" if company_id is None else str(company_id)
        text = f"{label} ({others})" if others else label
        if text not in examples:
            examples.append(text)
        if len(examples) == EXAMPLES:
            break
    return examples


def _warnings(outcome: ValidationOutcome) -> list[str]:
    prefix = f"{TITLES[outcome.dataset]} {outcome.date.isoformat()}"
    found = [f"{prefix}: {outcome.describe(check)}" for check in outcome.checks if check.status == "warning"]
    found.extend(
        f"{prefix}: accepted by the operator (--accept-row-drop): {outcome.describe(check)}"
        for check in outcome.checks
        if check.status == "accepted"
    )
    return found


def _ge_summary(result: Any, ge_results: list[dict[str, Any]]) -> dict[str, Any]:
    document = result.to_json_dict()
    document["results"] = ge_results
    return document


def _log_outcome(outcome: ValidationOutcome) -> None:
    for warning in outcome.warnings:
        log.warning("%s", warning)
    log.log(
        logging.INFO if outcome.success else logging.ERROR,
        "validation of %s for %s: %s, %d rows, %d of %d checks failed, %d warnings, in %.2fs; results %s",
        outcome.dataset,
        outcome.date,
        "passed" if outcome.success else "FAILED",
        outcome.row_count,
        len(outcome.failures),
        len(outcome.checks),
        len(outcome.warnings),
        outcome.seconds,
        outcome.html_path,
    )


def raise_for_failures(outcome: ValidationOutcome) -> ValidationOutcome:
    if not outcome.success:
        raise DataValidationError(outcome)
    return outcome


# -- saving -------------------------------------------------------------------------------------------


def save_results(outcome: ValidationOutcome, data_dir: Path, ge_result: dict[str, Any] | None = None) -> None:
    """Write the day's ``<dataset>.json`` and ``<dataset>.html`` (HTML first: the JSON is the verdict)."""
    json_path = results_path(data_dir, outcome.date, outcome.dataset, ".json")
    html_path = results_path(data_dir, outcome.date, outcome.dataset, ".html")
    outcome.json_path, outcome.html_path = str(json_path), str(html_path)
    landing.write_atomic(html_path, render_html(outcome).encode("utf-8"))
    document = outcome.to_json()
    if ge_result is not None:
        document["great_expectations_result"] = ge_result
    text = json.dumps(_json_safe(document), indent=2, default=str, allow_nan=False)
    landing.write_atomic(json_path, (text + "\n").encode("utf-8"))


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities (pandas' missing values in examples) become null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f3f3f3}.passed{color:#1a7f37}.failed{color:#c62828;font-weight:bold}
.warning,.accepted{color:#a15c00;font-weight:bold}.verdict{font-size:1.2em;padding:.5em;border-radius:4px}
.ok{background:#e8f5e9}.bad{background:#ffebee}code{font-size:.9em}ul{padding-left:1.3em}
"""


def render_html(outcome: ValidationOutcome) -> str:
    """A self-contained page of the results: inline style, no script, every value escaped."""
    e = html.escape
    verdict = "PASSED" if outcome.success else "FAILED"
    summary = [
        ("dataset", f"{TITLES[outcome.dataset]} ({outcome.dataset})"),
        ("date", outcome.date.isoformat()),
        ("rows", str(outcome.row_count)),
        ("row drop", outcome.row_drop_text()),
        ("--accept-row-drop", "yes" if outcome.accept_row_drop else "no"),
        ("landing", outcome.landing_id or ""),
        ("parameters", json.dumps(outcome.parameters, default=str)),
        ("validated at", f"{outcome.validated_at} in {outcome.seconds:.2f}s"),
        (
            "suite",
            f"expectations/{SUITE_FILES[outcome.dataset]} (great-expectations "
            f"{outcome.great_expectations_version})",
        ),
    ]
    if outcome.context:
        summary.append(("context", json.dumps(outcome.context, default=str)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(outcome.dataset)} {e(outcome.date.isoformat())}: validation {verdict}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Validation of {e(TITLES[outcome.dataset])} for {e(outcome.date.isoformat())}</h1>",
        f'<p class="verdict {"ok" if outcome.success else "bad"}">{verdict}: {len(outcome.failures)} of '
        f"{len(outcome.checks)} checks failed, {len(outcome.warnings)} warnings</p>",
        "<table>",
        *(f"<tr><th>{e(key)}</th><td>{e(value)}</td></tr>" for key, value in summary),
        "</table>",
    ]
    if outcome.failures:
        parts.append("<h2>Failures</h2><ul>")
        parts.extend(f"<li>{e(outcome.describe(check))}</li>" for check in outcome.failures)
        parts.append("</ul>")
    if outcome.warnings:
        parts.append("<h2>Warnings</h2><ul>")
        parts.extend(f"<li>{e(warning)}</li>" for warning in outcome.warnings)
        parts.append("</ul>")
    parts.append(
        "<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>column</th><th>rule</th>"
        "<th>finding</th><th>examples (company_id)</th></tr>"
    )
    for check in outcome.checks:
        finding = "" if check.passed else outcome.describe(check).split(": ", 1)[-1]
        if check.passed and check.observed_value is not None:
            finding = f"observed {_short(check.observed_value)}"
        parts.append(
            f'<tr><td class="{e(check.status)}">{e(check.status)}</td><td><code>{e(check.check)}</code></td>'
            f"<td>{e(check.column)}</td><td>{e(check.description)}</td><td>{e(finding)}</td>"
            f"<td>{e(', '.join(check.examples))}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def record_validation(connection: Connection, outcome: ValidationOutcome) -> None:
    """Record the verdict in ``analytics.day_validations`` (in the caller's transaction)."""
    run_sql(connection, "delete_day_validation", activity_date=outcome.date, dataset=outcome.dataset)
    run_sql(
        connection,
        "record_day_validation",
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
    return [dict(row._mapping) for row in run_sql(connection, "select_day_validations", activity_date=day)]


# -- reading a day's rows ---------------------------------------------------------------------------------


def _frame(result: Any) -> Any:
    """A DataFrame of a result's rows, read from the DBAPI cursor: building it from SQLAlchemy Row objects
    costs 5x more (0.6 s against 0.1 s per 100,000 rows), more than the checks themselves."""
    import pandas as pd

    columns = list(result.keys())
    cursor = getattr(result, "cursor", None)
    rows = cursor.fetchall() if cursor is not None else [tuple(row) for row in result.fetchall()]
    result.close()
    return pd.DataFrame(rows, columns=columns)


def crm_frame(connection: Connection, snapshot_date: dt.date) -> Any:
    """The staged snapshot, ``last_contact_at`` as datetime64[ns] (NaT where it does not parse).

    ``last_contact_at_unparseable`` holds the value as loaded where it does not parse (None elsewhere),
    so that 'parseable' is a check of the suite like the others, with examples; a row condition on the
    loaded values would cost GE a copy of the whole frame (1.1 s per million rows)."""
    import pandas as pd

    frame = _frame(run_sql(connection, "select_staged_crm_day", snapshot_date=snapshot_date))
    loaded = frame["last_contact_at"]
    # datetime64[ns]: GE compares it with the bound vectorised; other units fall back to a slow Python
    # loop. The bound is a full timestamp: date-only strings misbehave against datetimes on pandas 3.
    parsed = pd.to_datetime(loaded, errors="coerce", format="ISO8601").astype("datetime64[ns]")
    unparseable = parsed.isna() & loaded.notna()
    frame["last_contact_at"] = parsed
    frame["last_contact_at_unparseable"] = loaded.astype(object).where(unparseable, None)
    return frame


def usage_frame(connection: Connection, activity_date: dt.date) -> Any:
    frame = _frame(run_sql(connection, "select_staged_usage_day", activity_date=activity_date))
    if frame.empty:  # keep the integer columns integer: an empty day must fail as empty, nothing else
        frame = frame.astype({"company_id": object, "active_users": "int64", "events": "int64"})
    return frame


def output_frame(connection: Connection, activity_date: dt.date) -> Any:
    import pandas as pd

    frame = _frame(
        run_sql(connection, "select_company_daily_activity_day_for_validation", activity_date=activity_date)
    )
    # TRUE/FALSE/NULL on both backends (SQLite returns 1/0, as floats once a NULL is among them): an
    # object column of booleans, so that NULL never equals TRUE in the suite's row condition.
    raw = frame["is_churn_risk"]
    known = raw.notna()
    flags = pd.Series(None, index=frame.index, dtype=object)
    flags[known] = raw[known].astype(bool)
    frame["is_churn_risk"] = flags
    return frame


def crm_header_warnings(data_dir: Path, day: dt.date) -> list[str]:
    """The CRM parser's warning about extra columns, read again from the landed file's header row."""
    directory = landing.day_dir(data_dir, CRM, day)
    manifest = landing.read_manifest(directory)
    if manifest is None:
        return []
    path = directory / manifest["file"]
    with path.open("rb") as handle:
        first = handle.readline(1024 * 1024)
    try:
        header = next(csv.reader(io.StringIO(first.decode("utf-8-sig"))), [])
    except (UnicodeDecodeError, csv.Error):
        return []
    extra = [name.strip() for name in header if name.strip() not in CRM_REQUIRED_COLUMNS]
    if not extra:
        return []
    return [
        f"{TITLES[CRM]} {day.isoformat()}: extra columns ignored: {', '.join(extra)} "
        f"({manifest.get('source', path)})"
    ]


# -- the three gates --------------------------------------------------------------------------------------


def validate_crm(
    engine: Engine,
    day: dt.date,
    data_dir: Path,
    *,
    landing_id: str | None,
    accept_row_drop: bool = False,
    max_row_drop: float = DEFAULT_MAX_ROW_DROP,
    extra_warnings: Iterable[str] = (),
) -> ValidationOutcome:
    """Validate the staged CRM snapshot of ``day``; raises :class:`DataValidationError` on failure."""
    with engine.connect() as connection:
        frame = crm_frame(connection, day)
        previous = previous_loaded_day(connection, day)
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
) -> ValidationOutcome:
    """Validate the staged product usage of ``day``; raises :class:`DataValidationError` on failure."""
    with engine.connect() as connection:
        frame = usage_frame(connection, day)
        previous = previous_loaded_day(connection, day)
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
) -> ValidationOutcome:
    """Validate the merged day inside the merge's transaction; raises :class:`DataValidationError`.

    Raising from the merge's ``before_commit`` rolls the whole day back. A passing verdict is recorded
    in the same transaction, so it commits with the day.
    """
    day = result.activity_date
    frame = output_frame(connection, day)
    previous = previous_loaded_day(connection, day)
    expected = run_sql(
        connection,
        "select_expected_output_rows",
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
    data_dir: Path, *, accept_row_drop: bool = False, max_row_drop: float = DEFAULT_MAX_ROW_DROP
) -> Callable[[Connection, MergeResult], None]:
    """The ``before_commit`` of ``transform.merge_day`` that guards the mart."""

    def before_commit(connection: Connection, result: MergeResult) -> None:
        validate_output(
            connection, result, data_dir, accept_row_drop=accept_row_drop, max_row_drop=max_row_drop
        )

    return before_commit
