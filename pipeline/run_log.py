"""Logs of a command-line run: one file per run under ``[pipeline] log_dir``, task lines on stderr too.

Every handler this module installs redacts secrets: the values of the secret environment variables and
any bearer token are replaced by ``***`` before a record is written, whatever code logged it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from pathlib import Path

from pipeline.crm import CREDENTIAL_ENV_VARS

SECRET_ENV_VARS = (
    "PRODUCT_API_CLIENT_ID",
    "PRODUCT_API_CLIENT_SECRET",
    "SMTP_PASSWORD",
    "PIPELINE_ALERT_WEBHOOK_URL",
    *CREDENTIAL_ENV_VARS,
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")
_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"
# The loggers a run's file gets: ours and Luigi's task lifecycle.
RUN_LOGGERS = ("pipeline", "luigi-interface", "luigi")


class SecretRedactingFilter(logging.Filter):
    """Replaces secret values in the formatted message; a record is never dropped."""

    def __init__(self, env_vars: tuple[str, ...] = SECRET_ENV_VARS) -> None:
        super().__init__()
        self.env_vars = env_vars

    def secrets(self) -> list[str]:
        # Read at each record: a test or a wrapper may set the environment after start-up.
        values = (os.environ.get(name, "") for name in self.env_vars)
        return sorted((value for value in values if len(value) >= 4), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _BEARER.sub(r"\1***", message)
        for secret in self.secrets():
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned = _BEARER.sub(r"\1***", text)
            for secret in self.secrets():
                cleaned = cleaned.replace(secret, "***")
            record.exc_text, record.exc_info = cleaned, None
        return True


def run_log_path(log_dir: Path, now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(log_dir) / f"run-{stamp}-{os.getpid()}.log"


def start_run_log(log_dir: Path) -> Path:
    """Send this process's pipeline and Luigi logs to a new file (and ours to stderr); returns its path."""
    path = run_log_path(log_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    redact = SecretRedactingFilter()
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    file_handler.addFilter(redact)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    console.addFilter(redact)
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(file_handler)
        logger.setLevel(min(logger.level or logging.INFO, logging.INFO))
        if name != "pipeline":
            logger.addFilter(redact)  # also covers the console handlers Luigi adds later
    pipeline_logger = logging.getLogger("pipeline")
    pipeline_logger.addHandler(console)
    pipeline_logger.propagate = False  # Luigi's own console handler sits on other loggers
    pipeline_logger.info("run log: %s", path)
    return path


def started_from_the_luigi_command() -> bool:
    """True in `luigi --module pipeline ...` (and luigid-driven workers), False when imported by code."""
    if os.environ.get("PIPELINE_RUN_LOG", "").lower() in ("0", "false", "no"):
        return False
    return "luigi.cmdline" in sys.modules
