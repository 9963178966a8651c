"""Where validation results are kept: ``{data_dir}/validation/date=D/<dataset>.json`` (the verdict,
each check, and Great Expectations' own result) and ``<dataset>.html`` beside it.

The JSON is written last: it is the verdict that ``ValidatedTarget`` and the report read.

Across days, ``{data_dir}/validation/index.html`` lists every day from the first validated to the last,
with each dataset's latest verdict and a link to its results page (a day without results shows as
such). It is regenerated after every validation from ``index.json`` beside it (one small entry per day
and dataset, updated under a file lock so that validations running at once do not drop each other's
entries); without ``index.json`` (results written by an older version, or a deleted file), it is rebuilt
from the results on disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import files
from pipeline.datasets import DATASETS
from pipeline.quality.results import ValidationOutcome
from pipeline.quality.results_html import render_html, render_index

RESULTS_DIR = "validation"
INDEX_HTML = "index.html"
INDEX_JSON = "index.json"
_INDEX_LOCK = ".index.lock"
_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


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
    update_index(data_dir, document)


# -- the index across days ------------------------------------------------------------------------------


def index_path(data_dir: Path) -> Path:
    return Path(data_dir) / RESULTS_DIR / INDEX_HTML


def index_entry(document: dict[str, Any]) -> dict[str, Any]:
    """What the index keeps of one validation: the verdict and its counts."""
    return {
        "success": bool(document.get("success")),
        "row_count": document.get("row_count"),
        "failed_checks": document.get("failed_checks", len(document.get("failures") or [])),
        "warnings": len(document.get("warnings") or []),
        "row_drop_accepted": bool(document.get("row_drop_accepted")),
        "validated_at": document.get("validated_at"),
    }


def update_index(data_dir: Path, document: dict[str, Any]) -> None:
    """Put one validation's verdict into ``index.json`` and write ``index.html`` again."""
    directory = Path(data_dir) / RESULTS_DIR
    with _locked(directory):
        index = files.read_json(directory / INDEX_JSON)
        if not isinstance(index, dict) or not isinstance(index.get("days"), dict):
            index = scan_index(data_dir)  # includes the results just written
        else:
            day = index["days"].setdefault(str(document["date"]), {})
            day[str(document["dataset"])] = index_entry(document)
        _write_index(directory, index)


def rebuild_index(data_dir: Path) -> Path:
    """Write ``index.json`` and ``index.html`` again from every result on disk; returns the page."""
    directory = Path(data_dir) / RESULTS_DIR
    with _locked(directory):
        _write_index(directory, scan_index(data_dir))
    return directory / INDEX_HTML


def scan_index(data_dir: Path) -> dict[str, Any]:
    """The index of every ``date=D/<dataset>.json`` under the results folder."""
    days: dict[str, dict[str, Any]] = {}
    directory = Path(data_dir) / RESULTS_DIR
    for day_dir in sorted(directory.glob("date=*")) if directory.is_dir() else []:
        match = _DAY_DIR.match(day_dir.name)
        if not match or not day_dir.is_dir():
            continue
        for dataset in DATASETS:
            try:
                document = json.loads((day_dir / f"{dataset}.json").read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError):  # a damaged file: show it as such rather than fail a validation
                days.setdefault(match.group(1), {})[dataset] = {"success": False, "unreadable": True}
                continue
            days.setdefault(match.group(1), {})[dataset] = index_entry(document)
    return {"days": days}


def _write_index(directory: Path, index: dict[str, Any]) -> None:
    files.write_json_atomic(directory / INDEX_JSON, index)
    files.write_atomic(directory / INDEX_HTML, render_index(index["days"]).encode("utf-8"))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / _INDEX_LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities (pandas' missing values in examples) become null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
