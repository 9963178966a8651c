"""The per-task durations that `python -m pipeline status` shows: one file per task and day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipeline.orchestration import task_times

DAY = dt.date(2026, 11, 20)


def test_each_task_keeps_its_latest_duration(tmp_path: Path) -> None:
    task_times.record(tmp_path, DAY, "MergeDay", 1.23456, rows=12)
    task_times.record(tmp_path, DAY, "StageCrm", 0.5)
    task_times.record(tmp_path, DAY, "MergeDay", 2.0, rows=13)  # run again: the latest counts
    recorded = task_times.read(tmp_path, DAY)
    assert {family: document["seconds"] for family, document in recorded.items()} == {
        "MergeDay": 2.0,
        "StageCrm": 0.5,
    }
    assert recorded["MergeDay"]["counts"] == {"rows": "13"} and recorded["MergeDay"]["date"] == "2026-11-20"
    assert task_times.read(tmp_path, DAY - dt.timedelta(days=1)) == {}


def test_an_unreadable_record_is_skipped(tmp_path: Path) -> None:
    task_times.record(tmp_path, DAY, "MergeDay", 1.0)
    (task_times.day_dir(tmp_path, DAY) / "StageCrm.json").write_text("{ half written")
    assert list(task_times.read(tmp_path, DAY)) == ["MergeDay"]


def test_a_record_that_cannot_be_written_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    (tmp_path / task_times.RUNS_DIR).write_text("a file where the folder should be")
    task_times.record(tmp_path, DAY, "MergeDay", 1.0)
    assert "could not record the duration of MergeDay" in caplog.text
