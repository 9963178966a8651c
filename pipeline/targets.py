"""Luigi targets of the pipeline: raw landings on disk and load records in the warehouse.

Completeness is a chain of landing ids: a landing's manifest names it, staging records which landing
it loaded, and the merge records which staged landings it merged. Fetch a day again and everything
downstream of it becomes due again, without any clock comparison or marker cleanup.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import luigi

from pipeline import landing
from pipeline.transform import loaded_day, staged_load
from pipeline.warehouse import create_engine, ensure_schema


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


def warehouse(database_url: str):
    """The engine, with the schema created on first use."""
    engine = create_engine(database_url)
    if engine not in _schema_ready:
        ensure_schema(engine)
        _schema_ready.add(engine)
    return engine


_schema_ready: set = set()


class StagedTarget(luigi.Target):
    """A dataset/date pair staged from exactly the current raw landing."""

    def __init__(
        self, database_url: str, dataset: str, load_date: dt.date, landing_target: LandingTarget
    ) -> None:
        self.database_url, self.dataset, self.load_date = database_url, dataset, load_date
        self.landing_target = landing_target

    def staged_landing_id(self) -> str | None:
        with warehouse(self.database_url).connect() as connection:
            record = staged_load(connection, self.dataset, self.load_date)
        return None if record is None else record["landing_id"]

    def exists(self) -> bool:
        current = self.landing_target.landing_id()
        return current is not None and self.staged_landing_id() == current


class MergedDayTarget(luigi.Target):
    """A day merged into the mart from exactly the currently staged landings of both sources."""

    def __init__(self, database_url: str, activity_date: dt.date) -> None:
        self.database_url, self.activity_date = database_url, activity_date

    def exists(self) -> bool:
        with warehouse(self.database_url).connect() as connection:
            record = loaded_day(connection, self.activity_date)
            if record is None:
                return False
            crm = staged_load(connection, "crm", self.activity_date)
            usage = staged_load(connection, "product_usage", self.activity_date)
        return (
            crm is not None
            and usage is not None
            and record["crm_landing_id"] == crm["landing_id"]
            and record["usage_landing_id"] == usage["landing_id"]
        )
