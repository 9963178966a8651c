"""Configuration, declared once.

Each class is one section of ``luigi.cfg`` (defaults live there and in the parameter defaults below,
which agree). Values can be overridden by ``LUIGI_CONFIG_PATH`` or on the command line, e.g.
``--pipeline-database-url postgresql://...``. Secrets are never configuration: they come from the
environment (see :func:`product_api_credentials`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import luigi
import luigi.configuration
from luigi.notifications import smtp


class _Section(luigi.Config):
    """A Config class whose ``luigi.cfg`` section is ``section`` rather than the class name."""

    section = ""

    @classmethod
    def get_task_family(cls) -> str:
        return cls.section or cls.__name__

    def settings(self) -> dict[str, Any]:
        """Every key of the section with its value, for the plain settings objects of the lower layers
        (``ApiSettings(**ProductApiConfig().settings())``), which never import Luigi."""
        return {name: getattr(self, name) for name, _parameter in self.get_params()}


# The [pipeline] keys of pipeline.warehouse.engine.WarehouseSettings.
WAREHOUSE_KEYS = ("database_url", "stg_schema", "analytics_schema", "lock_timeout_seconds")


class PipelineConfig(_Section):
    section = "pipeline"

    database_url = luigi.Parameter(
        default="sqlite:///var/warehouse.db",
        description="SQLAlchemy URL of the warehouse: sqlite:///path, postgresql://user@host/db or "
        "mysql://user@host/ (MySQL or MariaDB)",
    )
    stg_schema = luigi.Parameter(
        default="stg",
        description="Name of the staging schema: a schema on PostgreSQL, a database on MySQL, the "
        "attached file warehouse.<name>.db on SQLite",
    )
    analytics_schema = luigi.Parameter(
        default="analytics", description="Name of the analytics schema (same rules as stg_schema)"
    )
    data_dir = luigi.Parameter(
        default="var/data", description="Raw landings, validation results and reports live here"
    )
    log_dir = luigi.Parameter(default="var/log", description="One log file per command-line run")
    catch_up_days = luigi.IntParameter(
        default=7, description="The nightly CatchUp run loads any day missed in this many days before today"
    )
    lock_timeout_seconds = luigi.FloatParameter(
        default=3600.0,
        description="How long a run waits for another run's lock on the same task (and, on MySQL, for the "
        "warehouse write lock), then fails",
    )

    def warehouse_settings(self) -> dict[str, Any]:
        """The keys that say which warehouse, for ``WarehouseSettings(**...)`` of the warehouse layer."""
        return {name: getattr(self, name) for name in WAREHOUSE_KEYS}

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


class CrmConfig(_Section):
    section = "crm"

    source = luigi.Parameter(
        default="var/sample/crm/crm_{date}.csv",
        description="Path or URL template of the daily CRM snapshot; {date} is YYYY-MM-DD",
    )


class ProductApiConfig(_Section):
    section = "product_api"

    base_url = luigi.Parameter(default="http://127.0.0.1:8765")
    page_size = luigi.IntParameter(default=1000)
    connect_timeout = luigi.FloatParameter(default=5.0, description="Seconds to open a connection")
    read_timeout = luigi.FloatParameter(default=30.0, description="Seconds to wait for a response")
    max_attempts = luigi.IntParameter(default=6, description="Attempts per request on 5xx/timeouts")
    retry_budget_seconds = luigi.FloatParameter(
        default=300.0, description="Total time one day's fetch may spend waiting to retry"
    )
    backoff_base_seconds = luigi.FloatParameter(default=0.5)
    backoff_max_seconds = luigi.FloatParameter(default=30.0)
    requests_per_second = luigi.FloatParameter(
        default=0.0, description="Client-side request rate limit; 0 means unlimited"
    )


class ValidationConfig(_Section):
    section = "validation"

    max_row_drop = luigi.FloatParameter(
        default=0.10,
        description="Fail a day whose row count (CRM, usage or output) drops by more than this fraction "
        "against its baseline (row_drop_baseline); RunDaily --accept-row-drop accepts a real drop",
    )
    row_drop_baseline = luigi.Parameter(
        default="previous_day",
        description="What a day's row counts are compared with: previous_day (the latest loaded day), "
        "same_weekday (D-7, else D-14, D-21, D-28 when loaded; data with a weekly rhythm), trailing_median "
        "(the median of the last 7 loaded days; robust to one odd day)",
    )


class ReportConfig(_Section):
    """The daily churn report. SMTP is Luigi's own [smtp] section, the sender [email] sender."""

    section = "report"

    enabled = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="RunDaily renders and mails the report; false: it stops at the merge (e.g. a backfill "
        "with --report-enabled false; a later run with the report on renders the missing reports)",
    )
    recipients = luigi.Parameter(
        default="", description="Comma-separated addresses; empty: render the report, don't mail it"
    )
    notebook = luigi.Parameter(
        default="", description="The report notebook; empty: reports/daily_churn_report.ipynb of the project"
    )
    max_age_days = luigi.IntParameter(
        default=7,
        description="Mail a day's first report only when the day is at most this many days old (a backfill "
        "of older days renders without mailing); corrections are always mailed; -1: no limit",
    )
    cell_timeout_seconds = luigi.IntParameter(
        default=600, description="The most one notebook cell may run before the render fails"
    )
    max_rows = luigi.IntParameter(
        default=25, description="Rows shown per list; the full lists are CSV files beside the report"
    )


# The payload formats of [alerts] webhook_format; pipeline.reporting.webhooks builds them (a test checks that
# both lists agree: this module sits below the reporting layer and cannot import it).
WEBHOOK_FORMATS = ("auto", "adaptive_card", "message_card", "json")


class AlertsConfig(_Section):
    """Failure alerts: the webhook URL comes from PIPELINE_ALERT_WEBHOOK_URL (it is a secret)."""

    section = "alerts"

    # A plain Parameter: pipeline.reporting.webhooks.resolve_format refuses an unknown value with a message
    # that lists the formats (Luigi's ChoiceParameter error names neither the value nor the choices).
    webhook_format = luigi.Parameter(
        default="auto",
        description="The webhook's payload: adaptive_card (Teams Workflows), message_card (legacy Office 365 "
        "connector), json (a plain object with text, task, date, error), auto (adaptive_card for Teams / "
        "Power Automate hosts, json otherwise)",
    )
    webhook_timeout_seconds = luigi.FloatParameter(
        default=5.0, description="The most one webhook attempt waits (connect + response)"
    )
    webhook_attempts = luigi.IntParameter(
        default=3,
        description="Tries per alert on 429 / 5xx / timeouts (with backoff and Retry-After); a dead webhook "
        "costs an alert at most attempts x timeout + 2 seconds",
    )
    luigid_url = luigi.Parameter(
        default="",
        description="Base URL of luigid for links in alerts; empty: the scheduler of [core] "
        "(e.g. http://127.0.0.1:8082), when the run uses one",
    )


class MonitoringConfig(_Section):
    """`python -m pipeline status` and the freshness check (`python -m pipeline check-freshness`)."""

    section = "monitoring"

    max_age_hours = luigi.FloatParameter(
        default=30.0,
        description="The table is stale when its newest loaded day ended (D+1 00:00 UTC) longer ago than "
        "this; 30: the nightly run at 00:00 UTC plus six hours of slack",
    )


SMTP_PASSWORD_ENV = "SMTP_PASSWORD"


def smtp_settings() -> dict[str, Any]:
    """Luigi's own ``[smtp]`` section (the one its error e-mails use), the password from SMTP_PASSWORD."""
    with warnings.catch_warnings():
        # Luigi warns for each of its own [smtp] options left at their None default.
        warnings.filterwarnings("ignore", message=r'Parameter ".*" with value "None" is not of type string')
        config = smtp()
    return {
        "host": config.host,
        "port": int(config.port or 0),
        "ssl": bool(config.ssl),
        "no_tls": bool(config.no_tls),
        "username": config.username or None,
        "password": os.environ.get(SMTP_PASSWORD_ENV) or config.password or None,
        "timeout": float(config.timeout),
        "local_hostname": config.local_hostname or None,
    }


CLIENT_ID_ENV = "PRODUCT_API_CLIENT_ID"
CLIENT_SECRET_ENV = "PRODUCT_API_CLIENT_SECRET"


class MissingCredentialsError(RuntimeError):
    """The product API's client credentials are not in the environment."""


def product_api_credentials() -> tuple[str, str]:
    """Client id and secret for the product API, from the environment only."""
    client_id = os.environ.get(CLIENT_ID_ENV, "")
    client_secret = os.environ.get(CLIENT_SECRET_ENV, "")
    missing = [
        name for name, value in ((CLIENT_ID_ENV, client_id), (CLIENT_SECRET_ENV, client_secret)) if not value
    ]
    if missing:
        raise MissingCredentialsError(
            f"set {' and '.join(missing)} in the environment: the product API's credentials are never read "
            "from configuration files"
        )
    return client_id, client_secret


# Luigi exits 0 even when tasks fail unless [retcode] says otherwise. These are the codes of our luigi.cfg,
# applied when a run's configuration has no [retcode] section (a LUIGI_CONFIG_PATH file elsewhere, or a
# working directory without luigi.cfg), so that cron, systemd and CI always see a failure.
FAILURE_EXIT_CODES = {
    "already_running": "10",
    "missing_data": "20",
    "not_run": "25",
    "task_failed": "30",
    "scheduling_error": "35",
    "unhandled_exception": "40",
}


def ensure_failure_exit_codes() -> None:
    """Fill in ``[retcode]`` where the configuration leaves it out; explicit settings win."""
    config = luigi.configuration.get_config()
    if not config.has_section("retcode"):
        config.add_section("retcode")
    for key, code in FAILURE_EXIT_CODES.items():
        if not config.has_option("retcode", key):
            config.set("retcode", key, code)
