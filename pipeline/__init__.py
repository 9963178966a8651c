"""The company-activity pipeline: ``luigi --module pipeline RunDaily --date YYYY-MM-DD``.

Importing the package registers the tasks (and Luigi's RangeDaily, for backfills) with Luigi.
"""

from pathlib import Path

import luigi.configuration
import luigi.tools.range  # registers RangeDaily for `luigi --module pipeline RangeDaily ...`

from pipeline.config import ensure_failure_exit_codes
from pipeline.run_log import start_run_log, started_from_the_luigi_command
from pipeline.scheduler import fall_back_to_local_scheduler_when_luigid_is_down
from pipeline.tasks import (
    CatchUp,
    FetchCrmSnapshot,
    FetchProductUsage,
    MergeDay,
    RenderReport,
    RunDaily,
    SendReport,
    StageCrm,
    StageProductUsage,
    ValidateCrm,
    ValidateProductUsage,
)

__all__ = [
    "CatchUp",
    "FetchCrmSnapshot",
    "FetchProductUsage",
    "MergeDay",
    "RenderReport",
    "RunDaily",
    "SendReport",
    "StageCrm",
    "StageProductUsage",
    "ValidateCrm",
    "ValidateProductUsage",
]

ensure_failure_exit_codes()
if started_from_the_luigi_command():
    # Read the raw option: instantiating a Config here would cache it before the command line is parsed.
    start_run_log(Path(luigi.configuration.get_config().get("pipeline", "log_dir", "var/log")))
fall_back_to_local_scheduler_when_luigid_is_down()
