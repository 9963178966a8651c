"""Great Expectations at run time: load a suite file of ``expectations/``, run it on a day's
DataFrame, turn its result into a :class:`~pipeline.quality.results.ValidationOutcome`, save it.

Great Expectations is imported inside the functions that validate (it costs seconds to import), with an
ephemeral context created once per process and its progress bars off.

Row drop: each dataset's row count is compared with a baseline of *loaded* days, ``previous``: the
previous loaded day, the same weekday a week before, or the median of the last 7 loaded days
(``[validation] row_drop_baseline``, :func:`pipeline.warehouse.ledger.row_count_baseline`). A drop of more
than ``[validation] max_row_drop`` fails (:func:`min_row_count` is the rule, exact in fractions). Without
a baseline (the first day, no loaded same weekday) the floor is 0. ``RunDaily --accept-row-drop`` turns a
failing row-drop check (and an empty usage day) into an accepted, logged warning, recorded with the
results.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline import clock, project
from pipeline.datasets import DATASETS, LOADED_DAY_COUNT, TITLES
from pipeline.quality.results import CheckResult, ValidationOutcome, short
from pipeline.quality.store import save_results
from pipeline.quality.suites import OVERRIDE_ROW_DROP, SUITE_FILES
from pipeline.warehouse.ledger import PREVIOUS_DAY, RowCountBaseline

log = logging.getLogger("pipeline.validation")


EXAMPLES = 5


class SuiteError(RuntimeError):
    """A suite file is missing, invalid, or asks for a parameter the pipeline does not provide."""


@functools.lru_cache(maxsize=1)
def _gx() -> Any:
    """Great Expectations with an ephemeral context (created once per process), progress bars off."""
    started = time.monotonic()
    import great_expectations as gx
    import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
    import tqdm
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GE fingerprints every pandas batch (an MD5 over all values) for its batch markers, which we
    # never use: ~0.7 s per million CRM rows, more than the checks themselves. Frames above this size
    # (bytes) are not fingerprinted; 0 turns it off (see docs/benchmarks.md).
    pandas_engine.HASH_THRESHOLD = 0
    # GE creates a tqdm bar for every validation, even with progress bars off, and tqdm's default lock
    # is a multiprocessing semaphore shared with every process forked from this one (Luigi's --workers
    # N task processes). A task process killed while holding it (kill -9 during a validation) left it
    # taken for good, and the next validation of any process of the run waited forever. The bars are
    # off, so a lock of this process's threads is all tqdm needs.
    tqdm.tqdm.set_lock(threading.RLock())
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource = context.data_sources.add_pandas("pipeline")
    batch_definitions = {
        dataset: datasource.add_dataframe_asset(name=dataset).add_batch_definition_whole_dataframe(dataset)
        for dataset in DATASETS
    }
    log.debug("Great Expectations %s ready in %.2fs", gx.__version__, time.monotonic() - started)
    return gx, context, batch_definitions


def prepare_great_expectations() -> None:
    """Import Great Expectations and create its context now, not at the first validation.

    A process that forks validating processes (Luigi's ``--workers N``) calls this once, so each child
    inherits a ready context instead of paying ~3.5 s of import and ~0.3 s of context set-up itself.
    """
    _gx()


@functools.lru_cache(maxsize=8)
def _suite_document(dataset: str, directory: str) -> dict[str, Any]:
    path = Path(directory) / SUITE_FILES[dataset]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise SuiteError(f"missing expectation suite {path}: python -m pipeline suites --write") from error
    except json.JSONDecodeError as error:
        raise SuiteError(f"{path} is not valid JSON: {error}") from error


def load_suite(dataset: str, directory: Path | None = None) -> Any:
    """The suite of ``dataset`` from its JSON file, as a GE ExpectationSuite (checked to be complete)."""
    gx, _, _ = _gx()
    directory = directory or project.expectations_dir()
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
            "regenerate with python -m pipeline suites --write"
        )
    return suite


def suite_parameters(dataset: str, directory: Path | None = None) -> list[str]:
    directory = directory or project.expectations_dir()
    return list(_suite_document(dataset, str(directory)).get("meta", {}).get("parameters", []))


def min_row_count(previous_row_count: int | None, max_row_drop: float) -> int:
    """The fewest rows that pass: a drop of up to ``max_row_drop`` (exactly, not in floating point)."""
    if previous_row_count is None:
        return 0
    if not 0 <= max_row_drop <= 1:
        raise ValueError(f"[validation] max_row_drop must be between 0 and 1, got {max_row_drop}")
    allowed = Fraction(str(max_row_drop)) * previous_row_count
    return previous_row_count - int(allowed)  # int() floors a non-negative Fraction


def run_suite(
    dataset: str,
    day: dt.date,
    frame: Any,
    *,
    parameters: dict[str, Any],
    previous: RowCountBaseline | None,
    max_row_drop: float,
    accept_row_drop: bool,
    data_dir: Path,
    landing_id: str | None = None,
    extra_warnings: Sequence[str] = (),
    context: dict[str, Any] | None = None,
    suites_dir: Path | None = None,
) -> ValidationOutcome:
    """Validate ``frame`` (one day of ``dataset``) with its suite, save JSON + HTML, return the verdict.

    Does not raise on failing checks (see :func:`raise_for_failures`); raises :class:`SuiteError` when
    the suite cannot run.
    """
    started = time.monotonic()
    gx, _, batch_definitions = _gx()
    suite = load_suite(dataset, suites_dir)
    previous_count = previous.count(LOADED_DAY_COUNT[dataset]) if previous else None
    previous_date = previous.newest_day if previous and previous_count is not None else None
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
        validated_at=clock.utc_timestamp(),
        great_expectations_version=gx.__version__,
        baseline=previous.method if previous else PREVIOUS_DAY,
        baseline_days=[day.isoformat() for day in previous.compared_days] if previous else [],
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
        others = ", ".join(f"{key}={short(value, 40)}" for key, value in row.items() if key != "company_id")
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
    """GE's suite result as JSON, with ``ge_results`` (its results, already serialised in suite order).

    The suite result is serialised without its results: GE's ``to_json_dict`` deep-copies and serialises
    every result again, only for them to be replaced (a third of the time spent outside the checks on a
    small day)."""
    results = result.results
    result.results = []
    try:
        document = result.to_json_dict()
    finally:
        result.results = results
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
