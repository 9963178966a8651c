"""How long each task of a day took when it last ran: ``{data_dir}/runs/date=D/<Family>.json``.

Written by every day task when it finishes (``DayTask.log_done``), read by ``python -m pipeline status``.
One file per task, not one per day: the tasks of a day may finish at the same moment in two worker
processes (``--workers 2``), and each file has one writer, the task holding that task's lock. A task that
another run completed meanwhile, or that failed, leaves the earlier record in place.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from pipeline import files
from pipeline.clock import utc_iso_seconds

log = logging.getLogger("pipeline")

RUNS_DIR = "runs"


def day_dir(data_dir: Path | str, day: dt.date) -> Path:
    return Path(data_dir) / RUNS_DIR / f"date={day.isoformat()}"


def record(data_dir: Path | str, day: dt.date, family: str, seconds: float, **counts: object) -> None:
    """Keep the duration of ``family``'s run for ``day``. A record that cannot be written is logged, never
    raised: the task itself succeeded."""
    document = {
        "task": family,
        "date": day.isoformat(),
        "finished_at": utc_iso_seconds(),
        "seconds": round(seconds, 3),
        "counts": {key: str(value) for key, value in counts.items()},
    }
    try:
        files.write_json_atomic(day_dir(data_dir, day) / f"{family}.json", document)
    except OSError as error:
        log.warning("could not record the duration of %s for %s: %s", family, day, error)


def read(data_dir: Path | str, day: dt.date) -> dict[str, dict[str, Any]]:
    """The recorded runs of ``day``'s tasks by family (empty: none recorded). Unreadable files are skipped."""
    directory = day_dir(data_dir, day)
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and isinstance(document.get("seconds"), int | float):
            found[path.stem] = document
    return found
