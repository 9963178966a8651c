"""What a pipeline run sets up when it starts, and only then.

``luigi --module pipeline RunDaily ...`` imports the package, then parses the rest of its command line
and builds its scheduler; Luigi has no hook in between. So ``pipeline/__init__.py`` calls
:func:`prepare_command_line_run`, which does nothing unless this process is the ``luigi`` command line.
Importing any module of the package (a test, the report's notebook kernel, ``python -m`` of a tool)
therefore opens no socket, writes no file and changes no configuration.

A run that starts Luigi from Python instead (``luigi.build(...)``) calls :func:`start_run` itself.
"""

from __future__ import annotations

from pathlib import Path

import luigi.configuration

from pipeline.config import ensure_failure_exit_codes
from pipeline.orchestration import alerts
from pipeline.orchestration.run_log import run_log_wanted, start_run_log, started_from_the_luigi_command
from pipeline.orchestration.scheduler import fall_back_to_local_scheduler_when_luigid_is_down


def start_run(*, run_log: bool = True, probe_scheduler: bool = True) -> None:
    """Set up a run: failure exit codes, the run's log file, failure alerts, and luigid or the local
    scheduler (luigid when one is listening)."""
    ensure_failure_exit_codes()
    if run_log and run_log_wanted():
        # The raw option: instantiating a Config here would cache it before the command line is parsed.
        start_run_log(Path(luigi.configuration.get_config().get("pipeline", "log_dir", "var/log")))
    alerts.install()
    if probe_scheduler:
        fall_back_to_local_scheduler_when_luigid_is_down()


def prepare_command_line_run() -> bool:
    """:func:`start_run` when this process is the ``luigi`` command line; True when it was."""
    if not started_from_the_luigi_command():
        return False
    start_run()
    return True
