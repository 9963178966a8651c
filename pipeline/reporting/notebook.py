"""The daily churn report: execute ``reports/daily_churn_report.ipynb`` for a date D and render it.

Execution is nbclient (see ``docs/report.md`` for why not papermill): the notebook's ``parameters``
cell is followed by an injected cell with the day's values, and the kernel gets the warehouse through
the environment (``PIPELINE_DATABASE_URL``, ``PIPELINE_STG_SCHEMA``, ``PIPELINE_ANALYTICS_SCHEMA``),
never as parameters, because parameters are written into the executed notebook (and a URL may hold a
password). A cell that raises fails the render with that cell's error.

Everything for D goes to ``{data_dir}/reports/date=D/``:

* ``daily_churn_report.ipynb``: the executed notebook (``.failed.ipynb`` when a cell raised);
* ``daily_churn_report.html``: nbconvert's rendering without code cells, self-contained (charts as
  embedded PNG, CSS inline in the page, no script, nothing fetched from the network);
* ``email/body.html``: the same outputs as an e-mail body: inline CSS only, charts by ``cid:``;
* the charts (``*.png``), full lists (``*.csv``), ``summary.json`` (the numbers of the plain-text mail);
* ``manifest.json``, written last: which version of D's data the report was built from
  (:func:`pipeline.reporting.data.data_version`). It is the completion marker of ``RenderReport``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline import clock, files, project
from pipeline.redaction import SECRET_ENV_VARS
from pipeline.reporting import kernel
from pipeline.reporting.data import data_version
from pipeline.reporting.rendering import (
    INJECTED_TAG,
    MAX_EMAIL_HTML_BYTES,
    PARAMETERS_TAG,
    ReportError,
    browser_html,
    email_html,
)
from pipeline.warehouse.engine import WarehouseSettings, absolute_database_url, open_warehouse

log = logging.getLogger("pipeline.report")

DATABASE_URL_ENV = "PIPELINE_DATABASE_URL"
STG_SCHEMA_ENV = "PIPELINE_STG_SCHEMA"
ANALYTICS_SCHEMA_ENV = "PIPELINE_ANALYTICS_SCHEMA"
REPORTS_DIR = "reports"
EXECUTED_NOTEBOOK = "daily_churn_report.ipynb"
FAILED_NOTEBOOK = "daily_churn_report.failed.ipynb"
REPORT_HTML = "daily_churn_report.html"
EMAIL_HTML = "email/body.html"
SUMMARY = "summary.json"
MANIFEST = "manifest.json"


class ReportCellError(ReportError):
    """A cell of the report notebook raised: the message names the cell and its error."""

    def __init__(self, cell_index: int, source: str, ename: str, evalue: str, notebook: Path) -> None:
        self.cell_index, self.ename, self.evalue, self.notebook = cell_index, ename, evalue, notebook
        first_line = next((line for line in source.splitlines() if line.strip()), "").strip()
        super().__init__(
            f"the report notebook failed in cell {cell_index} ({first_line[:80]!r}): {ename}: {evalue} "
            f"(the executed notebook with the traceback: {notebook})"
        )


def default_notebook() -> Path:
    """The project's report notebook (``[report] notebook`` empty)."""
    return project.reports_dir() / "daily_churn_report.ipynb"


def report_dir(data_dir: Path | str, day: dt.date) -> Path:
    return Path(data_dir) / REPORTS_DIR / f"date={day.isoformat()}"


def read_manifest(data_dir: Path | str, day: dt.date) -> dict[str, Any] | None:
    return files.read_json(report_dir(data_dir, day) / MANIFEST)


def inject_parameters(notebook: Any, parameters: dict[str, Any]) -> Any:
    """Put a cell assigning ``parameters`` right after the ``parameters``-tagged cell (papermill's way).

    An earlier injected cell is replaced; without a parameters cell the values go first.
    """
    import nbformat

    notebook.cells = [
        cell for cell in notebook.cells if INJECTED_TAG not in cell.get("metadata", {}).get("tags", [])
    ]
    assignments = [f"{name} = {value!r}" for name, value in parameters.items()]
    source = "# Injected parameters\n" + "\n".join(assignments)
    injected = nbformat.v4.new_code_cell(source)
    injected.metadata["tags"] = [INJECTED_TAG]
    position = next(
        (
            index + 1
            for index, cell in enumerate(notebook.cells)
            if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
        ),
        0,
    )
    notebook.cells.insert(position, injected)
    return notebook


def kernel_environment(warehouse: WarehouseSettings) -> dict[str, str]:
    """The kernel's environment: ours without the secrets it has no use for (API credentials, the SMTP
    password, the webhook URL), plus the warehouse and the project on the import path."""

    environment = {key: value for key, value in os.environ.items() if key not in SECRET_ENV_VARS}
    environment[DATABASE_URL_ENV] = absolute_database_url(warehouse.database_url)
    environment[STG_SCHEMA_ENV] = warehouse.stg_schema
    environment[ANALYTICS_SCHEMA_ENV] = warehouse.analytics_schema
    paths = [str(project.project_root()), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["MPLBACKEND"] = "Agg"
    return environment


def start_kernel_for_task_processes(warehouse: WarehouseSettings, working_dir: Path) -> None:
    """Start the report kernel for ``warehouse`` in this process, for the task processes it will fork
    (``luigi --workers N``): their reports take turns on it (:mod:`pipeline.reporting.kernel`)."""
    kernel.start_for_task_processes(kernel_environment(warehouse), working_dir)


def warehouse_from_environment() -> WarehouseSettings | None:
    """The warehouse :func:`kernel_environment` passed to the kernel; None in a notebook opened by hand."""
    database_url = os.environ.get(DATABASE_URL_ENV)
    if not database_url:
        return None
    return WarehouseSettings(
        database_url,
        stg_schema=os.environ.get(STG_SCHEMA_ENV) or "stg",
        analytics_schema=os.environ.get(ANALYTICS_SCHEMA_ENV) or "analytics",
    )


def execute_notebook(
    notebook: Any, *, working_dir: Path, warehouse: WarehouseSettings, timeout: int, failed_path: Path
) -> Any:
    """Run every cell in this process's report kernel (:mod:`pipeline.reporting.kernel`: started once,
    its namespace cleared before each report); a raising cell raises :class:`ReportCellError`."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    try:
        return kernel.execute(
            notebook, working_dir=working_dir, environment=kernel_environment(warehouse), timeout=timeout
        )
    except CellExecutionError as error:
        failure = error
    nbformat.write(notebook, failed_path)
    index, cell = next(
        (
            (index, cell)
            for index, cell in enumerate(notebook.cells)
            if any(output.get("output_type") == "error" for output in cell.get("outputs", []))
        ),
        (-1, {"source": ""}),
    )
    raise ReportCellError(
        index, cell["source"], getattr(failure, "ename", "Error"), getattr(failure, "evalue", ""), failed_path
    )


def render_report(
    warehouse: WarehouseSettings,
    data_dir: Path | str,
    day: dt.date,
    *,
    notebook_path: Path | str | None = None,
    timeout: int = 600,
    max_rows: int = 25,
) -> dict[str, Any]:
    """Execute the notebook for ``day`` and write every output; returns the manifest (written last)."""
    import nbformat

    started = time.monotonic()
    directory = report_dir(data_dir, day).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)  # from here on the day's report is not done
    for stale in [*directory.glob("*.png"), *directory.glob("*.csv"), directory / SUMMARY]:
        stale.unlink(missing_ok=True)
    with open_warehouse(warehouse).connect() as connection:
        version = data_version(connection, day)
    if version is None:
        raise ReportError(f"{day.isoformat()} is not loaded: there is nothing to report")

    notebook_path = Path(notebook_path or default_notebook())
    notebook = nbformat.read(str(notebook_path), as_version=4)
    inject_parameters(
        notebook,
        {
            "report_date": day.isoformat(),
            "data_dir": str(Path(data_dir).resolve()),
            "output_dir": str(directory),
            "max_rows": max_rows,
        },
    )
    notebook.metadata["title"] = f"Daily churn report {day.isoformat()}"
    execute_notebook(
        notebook,
        working_dir=directory,
        warehouse=warehouse,
        timeout=timeout,
        failed_path=directory / FAILED_NOTEBOOK,
    )
    executed = time.monotonic()
    (directory / FAILED_NOTEBOOK).unlink(missing_ok=True)
    nbformat.write(notebook, str(directory / EXECUTED_NOTEBOOK))

    page = browser_html(notebook)
    (directory / REPORT_HTML).write_text(page, encoding="utf-8")
    body, charts = email_html(notebook, day)
    email_path = directory / EMAIL_HTML
    email_path.parent.mkdir(parents=True, exist_ok=True)
    email_path.write_text(body, encoding="utf-8")
    missing = [name for name in charts if not (directory / name).exists()]
    if missing:
        raise ReportError(f"charts referenced by the report were not written: {', '.join(missing)}")
    if not (directory / SUMMARY).exists():
        raise ReportError(f"the notebook did not write {SUMMARY}: is {notebook_path} the report notebook?")
    email_bytes = len(body.encode("utf-8"))
    if email_bytes > MAX_EMAIL_HTML_BYTES:
        log.warning(
            "the e-mail body of %s is %d bytes: mail clients such as Gmail clip it (limit ~%d)",
            day,
            email_bytes,
            MAX_EMAIL_HTML_BYTES,
        )
    finished = time.monotonic()
    manifest = {
        "date": day.isoformat(),
        "data_version": version,
        "rendered_at": clock.utc_iso_seconds(),
        "notebook_source": str(Path(notebook_path).resolve()),
        "files": {
            "notebook": EXECUTED_NOTEBOOK,
            "html": REPORT_HTML,
            "email_html": EMAIL_HTML,
            "summary": SUMMARY,
            "charts": charts,
        },
        "email_html_bytes": email_bytes,
        "html_bytes": len(page.encode("utf-8")),
        "seconds": {
            "execute": round(executed - started, 3),
            "render": round(finished - executed, 3),
        },
    }
    files.write_json_atomic(directory / MANIFEST, manifest)
    log.info("rendered the churn report of %s in %.1fs: %s", day, finished - started, directory / REPORT_HTML)
    return manifest
