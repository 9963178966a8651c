"""Logs of a command-line run: one file per run under ``[pipeline] log_dir``, task lines on stderr too.

Every handler this module installs redacts secrets: the values of the secret environment variables and
any bearer token are replaced by ``***`` before a record is written, whatever code logged it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from pathlib import Path

from pipeline import clock
from pipeline.redaction import SecretRedactingFilter

_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"
# The loggers a run's file gets: ours and Luigi's task lifecycle.
RUN_LOGGERS = ("pipeline", "luigi-interface", "luigi")


def run_log_path(log_dir: Path, now: dt.datetime | None = None) -> Path:
    stamp = (now or clock.now_utc()).strftime("%Y%m%dT%H%M%SZ")
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
    return "luigi.cmdline" in sys.modules


def run_log_wanted() -> bool:
    """False when ``PIPELINE_RUN_LOG`` is 0, false or no (a wrapper that keeps its own log)."""
    return os.environ.get("PIPELINE_RUN_LOG", "").lower() not in ("0", "false", "no")
