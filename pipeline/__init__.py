"""The company-activity pipeline: ``luigi --module pipeline RunDaily --date YYYY-MM-DD``.

Importing the package registers the tasks (and Luigi's RangeDaily, for backfills) with Luigi.
"""

import luigi.tools.range  # noqa: F401 - registers RangeDaily for `luigi --module pipeline RangeDaily`

from pipeline.config import ensure_failure_exit_codes
from pipeline.scheduler import fall_back_to_local_scheduler_when_luigid_is_down
from pipeline.tasks import (
    FetchCrmSnapshot,
    FetchProductUsage,
    MergeDay,
    RunDaily,
    StageCrm,
    StageProductUsage,
)

__all__ = [
    "FetchCrmSnapshot",
    "FetchProductUsage",
    "MergeDay",
    "RunDaily",
    "StageCrm",
    "StageProductUsage",
]

ensure_failure_exit_codes()
fall_back_to_local_scheduler_when_luigid_is_down()
