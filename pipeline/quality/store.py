"""Where validation results are kept: ``{data_dir}/validation/date=D/<dataset>.json`` (the verdict,
each check, and Great Expectations' own result) and ``<dataset>.html`` beside it.

The JSON is written last: it is the verdict that ``ValidatedTarget`` and the report read.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pipeline import files
from pipeline.datasets import DATASETS
from pipeline.quality.results import ValidationOutcome
from pipeline.quality.results_html import render_html

RESULTS_DIR = "validation"


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


def save_results(outcome: ValidationOutcome, data_dir: Path, ge_result: dict[str, Any] | None = None) -> None:
    """Write the day's ``<dataset>.json`` and ``<dataset>.html`` (HTML first: the JSON is the verdict)."""
    json_path = results_path(data_dir, outcome.date, outcome.dataset, ".json")
    html_path = results_path(data_dir, outcome.date, outcome.dataset, ".html")
    outcome.json_path, outcome.html_path = str(json_path), str(html_path)
    files.write_atomic(html_path, render_html(outcome).encode("utf-8"))
    document = outcome.to_json()
    if ge_result is not None:
        document["great_expectations_result"] = ge_result
    text = json.dumps(_json_safe(document), indent=2, default=str, allow_nan=False)
    files.write_atomic(json_path, (text + "\n").encode("utf-8"))


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities (pandas' missing values in examples) become null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
