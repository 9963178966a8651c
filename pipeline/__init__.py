"""The company-activity pipeline: ``luigi --module pipeline RunDaily --date YYYY-MM-DD``.

Importing the package registers the tasks (and Luigi's RangeDaily, for backfills) with Luigi, and does
nothing else: no sockets, no files, no configuration changes. What a run needs when it starts (the
failure exit codes, the run log, the luigid probe, the failure alerts) is set up by
:func:`pipeline.orchestration.run_start.prepare_command_line_run`, only in the ``luigi`` command's own
process, before Luigi builds its scheduler.

The layers, each importing only those below it (``make lint`` checks it)::

    orchestration   Luigi tasks, targets, locks, scheduler, run log, alerts
    reporting       the churn report: data, notebook, e-mail, webhooks
    quality         Great Expectations suites and gates, validation results
    warehouse       engine, SQL runner, load ledger, staging, the merge
    sources         the CRM snapshot, the usage API, raw landings
    config, datasets, clock, files, redaction, project, faultpoints: shared facts
"""

import luigi.tools.range  # noqa: F401  registers RangeDaily for `luigi --module pipeline RangeDaily ...`

from pipeline.orchestration.run_start import prepare_command_line_run
from pipeline.orchestration.tasks import (
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

prepare_command_line_run()  # a no-op unless this process is the `luigi` command line
