"""The Luigi task graph for one date D. Tasks are thin: they wire targets and parameters and call
plain functions from the other modules, which are tested on their own.

    FetchCrmSnapshot(D) ──> StageCrm(D) ──────────┐
                                                   ├──> MergeDay(D) ──> RunDaily(D)
    FetchProductUsage(D) ─> StageProductUsage(D) ──┘
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import luigi
from luigi.task import MixinNaiveBulkComplete, flatten

from pipeline import crm, landing, product_api, staging, transform
from pipeline.config import CrmConfig, PipelineConfig, ProductApiConfig, product_api_credentials
from pipeline.targets import LandingTarget, MergedDayTarget, StagedTarget, warehouse

log = logging.getLogger("pipeline")


class DayTask(luigi.Task):
    """A task for one date. ``refresh_stamp`` is set by ``RunDaily --refresh``: landings older than it
    are fetched again, and everything downstream follows through the landing-id chain."""

    date = luigi.DateParameter(description="The activity date D (YYYY-MM-DD)")
    refresh_stamp = luigi.Parameter(
        default="", description="Set by RunDaily --refresh: landings fetched before it are fetched again"
    )

    def complete(self) -> bool:
        # A task is only done while everything it was built from is done: this is what makes a refresh
        # of the sources ripple down the graph.
        return super().complete() and all(task.complete() for task in flatten(self.requires()))

    @property
    def data_dir(self):
        return PipelineConfig().data_path

    @property
    def database_url(self) -> str:
        return PipelineConfig().database_url

    def report(self, message: str, percentage: float | None = None) -> None:
        """Progress for the luigid visualiser, and the log."""
        self.set_status_message(message)
        if percentage is not None:
            self.set_progress_percentage(percentage)

    def log_done(self, started: float, **counts: object) -> None:
        details = " ".join(f"{key}={value}" for key, value in counts.items())
        log.info(
            "%s done for %s in %.2fs %s",
            self.get_task_family(),
            self.date,
            time.monotonic() - started,
            details,
        )

    def archive_stale_landing(self, target: LandingTarget) -> None:
        """On refresh, keep the earlier landing of the day as a prior version instead of overwriting it."""
        if self.refresh_stamp and target.directory.exists():
            manifest = target.manifest()
            if manifest is None or manifest["fetched_at"] < self.refresh_stamp:
                archived = landing.archive_current_landing(target.directory)
                if archived:
                    log.info("kept the earlier landing of %s as %s", self.date, archived)


@DayTask.event_handler(luigi.Event.START)
def _log_start(task: DayTask) -> None:
    log.info("%s started for %s", task.get_task_family(), task.date)


@DayTask.event_handler(luigi.Event.FAILURE)
def _log_failure(task: DayTask, error: BaseException) -> None:
    log.error("%s failed for %s: %s: %s", task.get_task_family(), task.date, type(error).__name__, error)


class FetchCrmSnapshot(DayTask):
    """Download the CRM snapshot of D into the raw landing area."""

    def output(self) -> LandingTarget:
        return LandingTarget(landing.day_dir(self.data_dir, crm.DATASET, self.date), self.refresh_stamp)

    def run(self) -> None:
        started = time.monotonic()
        self.archive_stale_landing(self.output())
        manifest = crm.land_snapshot(CrmConfig().source, self.data_dir, self.date)
        self.log_done(started, bytes=manifest["bytes"], source=manifest["source"])


class FetchProductUsage(DayTask):
    """Fetch every usage page of D from the API into the raw landing area (resumes, never refetches)."""

    def output(self) -> LandingTarget:
        return LandingTarget(
            landing.day_dir(self.data_dir, product_api.DATASET, self.date), self.refresh_stamp
        )

    def run(self) -> None:
        started = time.monotonic()
        self.archive_stale_landing(self.output())
        config = ProductApiConfig()
        settings = product_api.ApiSettings(
            base_url=config.base_url,
            page_size=config.page_size,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_attempts=config.max_attempts,
            retry_budget_seconds=config.retry_budget_seconds,
            backoff_base_seconds=config.backoff_base_seconds,
            backoff_max_seconds=config.backoff_max_seconds,
            requests_per_second=config.requests_per_second,
        )
        client = product_api.ProductApiClient(settings, *product_api_credentials())
        try:
            manifest = product_api.fetch_day(
                client,
                self.date,
                self.data_dir,
                progress=lambda pages, rows: self.report(f"fetched {pages} pages, {rows} rows"),
            )
        finally:
            client.close()
        stats = client.stats
        self.report(f"landed {manifest['page_count']} pages, {manifest['row_count']} rows", 100)
        self.log_done(
            started,
            pages=manifest["page_count"],
            rows=manifest["row_count"],
            resumed_pages=stats.pages_resumed,
            retries=sum(stats.retries.values()),
        )


class StageCrm(DayTask):
    """Parse the landed CRM snapshot of D and load it into stg.crm_daily."""

    def requires(self) -> FetchCrmSnapshot:
        return FetchCrmSnapshot(date=self.date, refresh_stamp=self.refresh_stamp)

    def output(self) -> StagedTarget:
        return StagedTarget(self.database_url, staging.CRM_DATASET, self.date, self.input())

    def run(self) -> None:
        started = time.monotonic()
        manifest, snapshot = crm.read_landed_snapshot(self.data_dir, self.date)
        self.report(f"staging {len(snapshot.companies)} CRM rows")
        count = staging.stage_crm(warehouse(self.database_url), self.date, snapshot, manifest["landing_id"])
        self.report(f"staged {count} CRM rows", 100)
        self.log_done(started, rows=count, warnings=len(snapshot.warnings))


class StageProductUsage(DayTask):
    """Replay the landed usage pages of D (no API call) into stg.product_usage_daily."""

    def requires(self) -> FetchProductUsage:
        return FetchProductUsage(date=self.date, refresh_stamp=self.refresh_stamp)

    def output(self) -> StagedTarget:
        return StagedTarget(self.database_url, staging.USAGE_DATASET, self.date, self.input())

    def run(self) -> None:
        started = time.monotonic()
        manifest, rows = product_api.read_landed_usage(self.data_dir, self.date)
        self.report(f"staging {len(rows)} usage rows")
        source = str(landing.day_dir(self.data_dir, product_api.DATASET, self.date))
        count = staging.stage_usage(
            warehouse(self.database_url), self.date, rows, source, manifest["landing_id"]
        )
        self.report(f"staged {count} usage rows", 100)
        self.log_done(started, rows=count, pages=manifest["page_count"])


class MergeDay(DayTask):
    """Merge D into analytics.company_daily_activity and recompute D+1 .. D+6 (one transaction)."""

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "crm": StageCrm(date=self.date, refresh_stamp=self.refresh_stamp),
            "usage": StageProductUsage(date=self.date, refresh_stamp=self.refresh_stamp),
        }

    def output(self) -> MergedDayTarget:
        return MergedDayTarget(self.database_url, self.date)

    def run(self) -> None:
        started = time.monotonic()
        self.report("merging")
        result = transform.merge_day(warehouse(self.database_url), self.date)
        self.report(f"merged {result.output_rows} rows", 100)
        self.log_done(
            started,
            rows=result.output_rows,
            orphans=result.orphan_rows,
            recomputed=",".join(day.isoformat() for day in result.recomputed_days),
        )


class UnfinishedDayError(luigi.parameter.ParameterException):
    """The day asked for is not over in UTC: its data is not complete anywhere yet."""


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def yesterday_utc() -> dt.date:
    return today_utc() - dt.timedelta(days=1)


class FinishedDayParameter(luigi.DateParameter):
    """A date that is over in UTC; without a value, yesterday in UTC (the nightly run's day)."""

    def _value_iterator(self, task_name: str, param_name: str):
        yield from super()._value_iterator(task_name, param_name)
        yield (yesterday_utc(), None)

    def normalize(self, value: dt.date | None) -> dt.date | None:
        value = super().normalize(value)
        if value is not None and value >= today_utc():
            raise UnfinishedDayError(
                f"{value.isoformat()} is not over in UTC yet (today is {today_utc().isoformat()} UTC): "
                f"the sources publish a day once it is over; run it from "
                f"{(value + dt.timedelta(days=1)).isoformat()} 00:00 UTC on"
            )
        return value


class RunDaily(MixinNaiveBulkComplete, luigi.WrapperTask):
    """The whole day: what users run, and what RangeDaily backfills."""

    date = FinishedDayParameter(description="The activity date D (YYYY-MM-DD); default: yesterday in UTC")
    refresh = luigi.BoolParameter(
        default=False, description="Fetch D again from both sources and rebuild D and the loaded D+1 .. D+6"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One stamp per refresh request: every task of this run compares its landing against it.
        self.refresh_stamp = landing.utc_timestamp() if self.refresh else ""

    @property
    def priority(self) -> int:
        # Older days first when several are due (CatchUp, backfills): luigid hands the highest priority
        # out first and passes it down to the day's dependencies.
        return max(0, (yesterday_utc() - self.date).days)

    def requires(self) -> MergeDay:
        return MergeDay(date=self.date, refresh_stamp=self.refresh_stamp)


class CatchUp(luigi.WrapperTask):
    """The nightly run: yesterday, plus any day of the last ``[pipeline] catch_up_days`` not loaded yet.

    Days that are done are complete and cost nothing; missed ones run oldest first.
    """

    days = luigi.OptionalIntParameter(default=None, description="Override [pipeline] catch_up_days")

    def requires(self) -> list[RunDaily]:
        days = self.days if self.days is not None else PipelineConfig().catch_up_days
        yesterday = yesterday_utc()
        return [RunDaily(date=yesterday - dt.timedelta(days=back)) for back in range(days - 1, -1, -1)]
