"""What "done" means for each task: Luigi targets over raw landings, the load ledger, validation
results, rendered reports and the send record.

Completeness is a chain of landing ids: a landing's manifest names it, staging records which landing
it loaded, validation records which staged landing passed, and the merge records which staged landings
it merged. Fetch a day again and everything downstream of it becomes due again, without any clock
comparison or marker cleanup. The report and its mail are tied to the day's data version instead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import luigi

from pipeline.datasets import CRM, USAGE
from pipeline.quality.store import passed_landing_id, results_path
from pipeline.reporting.data import data_version
from pipeline.reporting.mailer import send_history, send_log_path
from pipeline.reporting.notebook import REPORT_HTML, read_manifest, report_dir
from pipeline.sources import landing
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse
from pipeline.warehouse.ledger import loaded_day, staged_load


class LandingTarget(luigi.Target):
    """A complete raw landing: its manifest exists (and is newer than ``not_before``, for a refresh)."""

    def __init__(self, directory: Path, not_before: str = "") -> None:
        self.directory = Path(directory)
        self.not_before = not_before

    def manifest(self) -> dict[str, Any] | None:
        return landing.read_manifest(self.directory)

    def landing_id(self) -> str | None:
        manifest = self.manifest()
        return None if manifest is None else manifest["landing_id"]

    def exists(self) -> bool:
        manifest = self.manifest()
        return manifest is not None and manifest["fetched_at"] >= self.not_before


class StagedTarget(luigi.Target):
    """A dataset/date pair staged from exactly the current raw landing."""

    def __init__(
        self, warehouse: WarehouseSettings, dataset: str, load_date: dt.date, landing_target: LandingTarget
    ) -> None:
        self.warehouse, self.dataset, self.load_date = warehouse, dataset, load_date
        self.landing_target = landing_target

    def staged_landing_id(self) -> str | None:
        with open_warehouse(self.warehouse).connect() as connection:
            record = staged_load(connection, self.dataset, self.load_date)
        return None if record is None else record["landing_id"]

    def exists(self) -> bool:
        current = self.landing_target.landing_id()
        return current is not None and self.staged_landing_id() == current


class MergedDayTarget(luigi.Target):
    """A day merged into the mart from exactly the currently staged landings of both sources."""

    def __init__(self, warehouse: WarehouseSettings, activity_date: dt.date) -> None:
        self.warehouse, self.activity_date = warehouse, activity_date

    def exists(self) -> bool:
        with open_warehouse(self.warehouse).connect() as connection:
            record = loaded_day(connection, self.activity_date)
            if record is None:
                return False
            crm = staged_load(connection, CRM, self.activity_date)
            usage = staged_load(connection, USAGE, self.activity_date)
        return (
            crm is not None
            and usage is not None
            and record["crm_landing_id"] == crm["landing_id"]
            and record["usage_landing_id"] == usage["landing_id"]
        )


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


class ReportTarget(luigi.Target):
    """The report of a day, rendered from the data of that day as it is now."""

    def __init__(self, warehouse: WarehouseSettings, data_dir: Path | str, day: dt.date) -> None:
        self.warehouse, self.data_dir, self.day = warehouse, Path(data_dir), day

    @property
    def path(self) -> Path:
        return report_dir(self.data_dir, self.day) / REPORT_HTML

    def exists(self) -> bool:
        manifest = read_manifest(self.data_dir, self.day)
        if manifest is None:
            return False
        with open_warehouse(self.warehouse).connect() as connection:
            return manifest.get("data_version") == data_version(connection, self.day)


class SentReportTarget(luigi.Target):
    """The report of a day, for its current data, was mailed (or deliberately not: see sent.json)."""

    def __init__(self, warehouse: WarehouseSettings, data_dir: Path | str, day: dt.date) -> None:
        self.warehouse, self.data_dir, self.day = warehouse, Path(data_dir), day

    @property
    def path(self) -> Path:
        return send_log_path(self.data_dir, self.day)

    def exists(self) -> bool:
        history = send_history(self.data_dir, self.day)
        if not history:
            return False
        with open_warehouse(self.warehouse).connect() as connection:
            return history[-1].get("data_version") == data_version(connection, self.day)
