"""The Luigi task graph for one date D. Tasks are thin: they wire targets and parameters and call
plain functions from the other modules, which are tested on their own.

    FetchCrmSnapshot(D) ──> StageCrm(D) ──────────> ValidateCrm(D) ──────────┐
                                                                              ├──> MergeDay(D) ──┐
    FetchProductUsage(D) ─> StageProductUsage(D) ──> ValidateProductUsage(D) ──┘                  │
                                                                                                  │
    RunDaily(D) <── SendReport(D) <── RenderReport(D) <───────────────────────────────────────────┘

MergeDay validates its own result before it commits (the output suite), so a bad day never shows.
RenderReport executes the churn-report notebook for D; SendReport mails it (``pipeline.reporting``).
Any failure alerts (``pipeline.orchestration.alerts``): Luigi's error e-mail and the JSON webhook.

Every day task's ``run`` is decorated with :func:`~pipeline.orchestration.locks.exclusive_run`: it holds
the task's file locks and skips the work when another run of the same day did it meanwhile, so two runs
at once are safe without luigid. The whole graph stays in this one module (about 450 lines) so that it
reads top to bottom, the way Luigi's own examples do; each task is a dozen lines of wiring.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sys
import time

import luigi
from luigi.task import MixinNaiveBulkComplete, flatten

from pipeline.clock import today_utc, utc_timestamp, yesterday_utc
from pipeline.config import (
    CrmConfig,
    PipelineConfig,
    ProductApiConfig,
    ReportConfig,
    ValidationConfig,
    product_api_credentials,
    smtp_settings,
)
from pipeline.datasets import CRM, USAGE
from pipeline.faultpoints import fault_point
from pipeline.orchestration import alerts, task_times
from pipeline.orchestration.locks import exclusive_run
from pipeline.orchestration.run_log import started_from_the_luigi_command
from pipeline.orchestration.targets import (
    LandingTarget,
    MergedDayTarget,
    ReportTarget,
    SentReportTarget,
    StagedTarget,
    ValidatedTarget,
)
from pipeline.quality import gates, runner
from pipeline.reporting import mailer, notebook
from pipeline.sources import crm_location, crm_snapshot, landing, usage_landing
from pipeline.sources.product_api import ApiSettings, ProductApiClient
from pipeline.warehouse import corrections, merge, staging
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

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

    def on_failure(self, exception: BaseException) -> str:
        # What Luigi mails to [email] receiver and shows in luigid: task, date, error, luigid link first.
        return alerts.failure_explanation(self, exception, super().on_failure(exception))

    @property
    def data_dir(self):
        return PipelineConfig().data_path

    @property
    def warehouse(self) -> WarehouseSettings:
        """The warehouse of ``[pipeline]``: its URL, schema names and lock timeout."""
        return WarehouseSettings(**PipelineConfig().warehouse_settings())

    def progress(self, message: str, percentage: float | None = None) -> None:
        """Progress for the luigid visualiser, and the log."""
        fault_point(f"progress:{self.get_task_family()}")
        self.set_status_message(message)
        if percentage is not None:
            self.set_progress_percentage(percentage)

    def log_done(self, started: float, **counts: object) -> None:
        """The run log's line for a finished task, and its duration for `python -m pipeline status`."""
        seconds = time.monotonic() - started
        details = " ".join(f"{key}={value}" for key, value in counts.items())
        log.info("%s done for %s in %.2fs %s", self.get_task_family(), self.date, seconds, details)
        task_times.record(self.data_dir, self.date, self.get_task_family(), seconds, **counts)

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


@DayTask.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
def _prepare_libraries_before_forking(task: DayTask, _dependency: luigi.Task) -> None:
    # With --workers N > 1 Luigi runs each task in a process forked from this one. Import the libraries
    # the task processes need here, once, rather than in every task's fresh process: Great Expectations
    # and its context (~3.5 s of import made a 30-day backfill with 2 workers 6x slower than with 1, and
    # the context ~0.3 s a validation), and pyarrow with pandas, which every staging and check reads
    # columns with (~0.3-0.4 s a process). Fires in the parent while Luigi schedules.
    if luigi.interface.core().workers <= 1:
        return
    prepared = []
    if "columnar" not in _prepared_for_forking:
        _import_columnar_libraries()
        prepared.append("columnar")
    if "great_expectations" not in _prepared_for_forking and isinstance(task, GatedDayTask):
        runner.prepare_great_expectations()
        prepared.append("great_expectations")
    if prepared:
        # Move everything alive now out of the collector's reach: a child's garbage collection would
        # otherwise write to every inherited object's header and copy its page (copy-on-write), for each
        # of a backfill's task processes.
        gc.freeze()
        _prepared_for_forking.update(prepared)


_prepared_for_forking: set[str] = set()


def _import_columnar_libraries() -> None:
    import pandas  # noqa: F401 - pyarrow imports it the first time it converts a Python value
    import pyarrow.compute
    import pyarrow.csv  # noqa: F401


class FetchCrmSnapshot(DayTask):
    """Download the CRM snapshot of D into the raw landing area."""

    def output(self) -> LandingTarget:
        return LandingTarget(landing.day_dir(self.data_dir, CRM, self.date), self.refresh_stamp)

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        self.archive_stale_landing(self.output())
        self.progress("downloading the CRM snapshot", 0)
        manifest = crm_location.land_snapshot(CrmConfig().source, self.data_dir, self.date)
        self.progress(f"landed the CRM snapshot: {manifest['bytes']} bytes from {manifest['source']}", 100)
        self.log_done(started, bytes=manifest["bytes"], source=manifest["source"])


class FetchProductUsage(DayTask):
    """Fetch every usage page of D from the API into the raw landing area (resumes, never refetches)."""

    def output(self) -> LandingTarget:
        return LandingTarget(landing.day_dir(self.data_dir, USAGE, self.date), self.refresh_stamp)

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        self.archive_stale_landing(self.output())
        settings = ApiSettings(**ProductApiConfig().settings())
        client = ProductApiClient(settings, *product_api_credentials())
        try:
            manifest = usage_landing.fetch_day(
                client,
                self.date,
                self.data_dir,
                progress=lambda pages, rows: self.progress(f"fetched {pages} pages, {rows} rows"),
            )
        finally:
            client.close()
        stats = client.stats
        self.progress(f"landed {manifest['page_count']} pages, {manifest['row_count']} rows", 100)
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
        return self.clone(FetchCrmSnapshot)

    def output(self) -> StagedTarget:
        return StagedTarget(self.warehouse, CRM, self.date, self.input())

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        self.progress("staging the CRM snapshot")
        staged = staging.stage_landed_crm(open_warehouse(self.warehouse), self.date, self.data_dir)
        self.progress(f"staged {staged.rows} CRM rows (read by the {staged.reader} reader)", 100)
        self.log_done(started, rows=staged.rows, warnings=len(staged.warnings), reader=staged.reader)


class StageProductUsage(DayTask):
    """Replay the landed usage pages of D (no API call) into stg.product_usage_daily."""

    def requires(self) -> FetchProductUsage:
        return self.clone(FetchProductUsage)

    def output(self) -> StagedTarget:
        return StagedTarget(self.warehouse, USAGE, self.date, self.input())

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        manifest, rows = usage_landing.read_landed_usage_table(self.data_dir, self.date)
        self.progress(f"staging {rows.num_rows} usage rows")
        source = str(landing.day_dir(self.data_dir, USAGE, self.date))
        count = staging.stage_usage(
            open_warehouse(self.warehouse), self.date, rows, source, manifest["landing_id"]
        )
        self.progress(f"staged {count} usage rows", 100)
        self.log_done(started, rows=count, pages=manifest["page_count"])


class GatedDayTask(DayTask):
    """A task behind a data-quality gate: carries the operator's ``--accept-row-drop`` override."""

    accept_row_drop = luigi.BoolParameter(
        default=False,
        description="Accept a row-count drop beyond [validation] max_row_drop (or an empty usage day) "
        "for D: logged and recorded with the day's validation results",
    )

    def validation_settings(self) -> dict:
        if self.accept_row_drop:
            log.warning(
                "%s for %s runs with --accept-row-drop: a row drop beyond max_row_drop is accepted, "
                "logged and recorded",
                self.get_task_family(),
                self.date,
            )
        return {"accept_row_drop": self.accept_row_drop, **ValidationConfig().settings()}


class ValidateCrm(GatedDayTask):
    """Validate the staged CRM snapshot of D with expectations/crm_snapshot.json (before the merge)."""

    def requires(self) -> StageCrm:
        return self.clone(StageCrm)

    def output(self) -> ValidatedTarget:
        return ValidatedTarget(self.data_dir, CRM, self.date, self.input())

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        self.progress("validating the staged CRM snapshot")
        outcome = gates.validate_crm(
            open_warehouse(self.warehouse),
            self.date,
            self.data_dir,
            landing_id=self.input().staged_landing_id(),
            extra_warnings=crm_snapshot.crm_header_warnings(self.data_dir, self.date),
            **self.validation_settings(),
        )
        self.progress(f"CRM snapshot passed, {len(outcome.warnings)} warnings: {outcome.html_path}", 100)
        self.log_done(
            started, rows=outcome.row_count, warnings=len(outcome.warnings), results=outcome.html_path
        )


class ValidateProductUsage(GatedDayTask):
    """Validate the staged product usage of D with expectations/product_usage.json (before the merge)."""

    def requires(self) -> StageProductUsage:
        return self.clone(StageProductUsage)

    def output(self) -> ValidatedTarget:
        return ValidatedTarget(self.data_dir, USAGE, self.date, self.input())

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        self.progress("validating the staged product usage")
        outcome = gates.validate_product_usage(
            open_warehouse(self.warehouse),
            self.date,
            self.data_dir,
            landing_id=self.input().staged_landing_id(),
            **self.validation_settings(),
        )
        self.progress(f"product usage passed, {len(outcome.warnings)} warnings: {outcome.html_path}", 100)
        self.log_done(
            started, rows=outcome.row_count, warnings=len(outcome.warnings), results=outcome.html_path
        )


class MergeDay(GatedDayTask):
    """Merge D into analytics.company_daily_activity and recompute D+1 .. D+6 (one transaction).

    The output suite runs inside that transaction before it commits: a failing check rolls it back.
    """

    def requires(self) -> dict[str, luigi.Task]:
        return {"crm": self.clone(ValidateCrm), "usage": self.clone(ValidateProductUsage)}

    def output(self) -> MergedDayTarget:
        return MergedDayTarget(self.warehouse, self.date)

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        self.progress("merging")
        result = merge.merge_day(
            open_warehouse(self.warehouse),
            self.date,
            before_commit=gates.output_validator(self.data_dir, **self.validation_settings()),
        )
        self.progress(f"merged {result.output_rows} rows", 100)
        self.log_done(
            started,
            rows=result.output_rows,
            orphans=result.orphan_rows,
            recomputed=",".join(day.isoformat() for day in result.recomputed_days),
        )


class RenderReport(GatedDayTask):
    """Execute the churn-report notebook for D and render it: HTML, e-mail body, charts, under
    ``data_dir/reports/date=D/``. Done while it was built from D's current data (a refresh re-renders)."""

    def requires(self) -> MergeDay:
        return self.clone(MergeDay)

    def output(self) -> ReportTarget:
        return ReportTarget(self.warehouse, self.data_dir, self.date)

    @exclusive_run
    def run(self) -> None:
        started = time.monotonic()
        config = ReportConfig()
        self.progress("executing the report notebook", 10)
        manifest = notebook.render_report(
            self.warehouse,
            self.data_dir,
            self.date,
            notebook_path=config.notebook or None,
            timeout=config.cell_timeout_seconds,
            max_rows=config.max_rows,
        )
        self.progress(f"rendered {self.output().path}", 100)
        self.log_done(started, html=self.output().path, email_bytes=manifest["email_html_bytes"])


@RenderReport.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
def _start_the_report_kernel_before_forking(task: RenderReport, _dependency: luigi.Task) -> None:
    # With --workers N > 1 each RenderReport runs in a process forked for it, and a kernel started there
    # would be one kernel start per day (1-2.5 s each). Fires in the parent, and only for a report that is
    # to be rendered, while Luigi schedules: one kernel started here serves every report of the run.
    if luigi.interface.core().workers <= 1:
        return
    try:
        notebook.start_kernel_for_task_processes(task.warehouse, task.data_dir)
    except Exception as error:  # any failure to start: each report starts its own, as without this
        log.warning(
            "could not start the report kernel for the task processes (%s): each report starts its own", error
        )


class SendReport(GatedDayTask):
    """Mail the rendered report of D to [report] recipients, once per version of D's data: a re-run
    does not mail again, a refresh mails a correction. No recipients: recorded as rendered, not sent."""

    def requires(self) -> RenderReport:
        return self.clone(RenderReport)

    def output(self) -> SentReportTarget:
        return SentReportTarget(self.warehouse, self.data_dir, self.date)

    @exclusive_run
    def run(self) -> None:
        from luigi.notifications import email

        started = time.monotonic()
        config = ReportConfig()
        recipients = mailer.parse_recipients(config.recipients)
        self.progress(
            f"mailing the report to {len(recipients)} recipient(s)" if recipients else "not mailing"
        )
        with open_warehouse(self.warehouse).connect() as connection:
            changes = corrections.latest_correction(connection, self.date)
        entry = mailer.deliver(
            self.data_dir,
            self.date,
            recipients=recipients,
            sender=email().sender,
            settings=mailer.SmtpSettings(**smtp_settings()) if recipients else None,
            max_age_days=config.max_age_days,
            today=today_utc(),
            changes=changes,
        )
        self.progress(entry.get("subject") or f"not sent: {entry.get('reason')}", 100)
        self.log_done(started, status=entry["status"], correction=entry.get("correction", False))


# The exit status of a `luigi` command line whose --date is not over in UTC: 2, as for any other command line
# that is refused (argparse exits 2 for an unknown option). Luigi's [retcode] has no code for it.
COMMAND_LINE_REFUSED = 2


class UnfinishedDayError(luigi.parameter.ParameterException):
    """The day asked for is not over in UTC: its data is not complete anywhere yet."""


class UnfinishedDayExit(SystemExit):
    """The same refusal on the `luigi` command line: one line on stderr and exit status 2, where Luigi would
    log a traceback for any exception and exit with [retcode] unhandled_exception (40)."""


class FinishedDayParameter(luigi.DateParameter):
    """A date that is over in UTC; without a value, yesterday in UTC (the nightly run's day)."""

    def _value_iterator(self, task_name: str, param_name: str):
        yield from super()._value_iterator(task_name, param_name)
        yield (yesterday_utc(), None)

    def parse(self, s: str) -> dt.date:
        # Luigi parses the values of its command line (and of config files) here, then normalises them.
        value = super().parse(s)
        if value >= today_utc() and started_from_the_luigi_command():
            print(f"error: --date {unfinished_day_message(value)}", file=sys.stderr)
            raise UnfinishedDayExit(COMMAND_LINE_REFUSED)
        return value

    def normalize(self, value: dt.date | None) -> dt.date | None:
        value = super().normalize(value)
        if value is not None and value >= today_utc():
            raise UnfinishedDayError(unfinished_day_message(value))
        return value


def unfinished_day_message(value: dt.date) -> str:
    return (
        f"{value.isoformat()} is not over in UTC yet (today is {today_utc().isoformat()} UTC): "
        f"the sources publish a day once it is over; run it from "
        f"{(value + dt.timedelta(days=1)).isoformat()} 00:00 UTC on"
    )


class RunDaily(MixinNaiveBulkComplete, luigi.WrapperTask):
    """The whole day: what users run, and what RangeDaily backfills."""

    date = FinishedDayParameter(description="The activity date D (YYYY-MM-DD); default: yesterday in UTC")
    refresh = luigi.BoolParameter(
        default=False, description="Fetch D again from both sources and rebuild D and the loaded D+1 .. D+6"
    )
    accept_row_drop = luigi.BoolParameter(
        default=False,
        description="Operator override: accept a row drop beyond [validation] max_row_drop (or an empty "
        "usage day) for D; logged and recorded with the day's validation results",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One stamp per refresh request: every task of this run compares its landing against it.
        self.refresh_stamp = utc_timestamp() if self.refresh else ""

    @property
    def priority(self) -> int:
        # Older days first when several are due (CatchUp, backfills): luigid hands the highest priority
        # out first and passes it down to the day's dependencies.
        return max(0, (yesterday_utc() - self.date).days)

    def requires(self) -> list[luigi.Task]:
        # clone: the day's tasks take date, refresh_stamp (set in __init__) and accept_row_drop from here.
        if not ReportConfig().enabled:
            return [self.clone(MergeDay)]
        # SendReport needs RenderReport, which needs MergeDay: all three listed for the reader (and luigid).
        return [self.clone(MergeDay), self.clone(RenderReport), self.clone(SendReport)]


class CatchUp(luigi.WrapperTask):
    """The nightly run: yesterday, plus any day of the last ``[pipeline] catch_up_days`` not loaded yet.

    Days that are done are complete and cost nothing; missed ones run oldest first.
    """

    days = luigi.OptionalIntParameter(default=None, description="Override [pipeline] catch_up_days")

    def requires(self) -> list[RunDaily]:
        days = self.days if self.days is not None else PipelineConfig().catch_up_days
        yesterday = yesterday_utc()
        return [RunDaily(date=yesterday - dt.timedelta(days=back)) for back in range(days - 1, -1, -1)]
