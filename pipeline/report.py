"""The daily churn report: execute ``reports/daily_churn_report.ipynb`` for a date D and render it.

Execution is nbclient (see ``docs/report.md`` for why not papermill): the notebook's ``parameters``
cell is followed by an injected cell with the day's values, and the kernel gets the database URL
through the environment (``PIPELINE_DATABASE_URL``), never as a parameter, because parameters are
written into the executed notebook. A cell that raises fails the render with that cell's error.

Everything for D goes to ``{data_dir}/reports/date=D/``:

* ``daily_churn_report.ipynb``: the executed notebook (``.failed.ipynb`` when a cell raised);
* ``daily_churn_report.html``: nbconvert's rendering without code cells, self-contained (charts as
  embedded PNG, CSS inline in the page, no script, nothing fetched from the network);
* ``email/body.html``: the same outputs as an e-mail body: inline CSS only, charts by ``cid:``;
* the charts (``*.png``), full lists (``*.csv``), ``summary.json`` (the numbers of the plain-text mail);
* ``manifest.json``, written last: which version of D's data the report was built from
  (:func:`pipeline.report_data.data_version`). It is the completion marker of ``RenderReport``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import luigi

from pipeline import report_html
from pipeline.report_data import data_version
from pipeline.targets import warehouse
from pipeline.warehouse import absolute_database_url

log = logging.getLogger("pipeline.report")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = PROJECT_ROOT / "reports" / "daily_churn_report.ipynb"
HTML_TEMPLATE = PROJECT_ROOT / "reports" / "templates" / "churn_report.html.j2"
DATABASE_URL_ENV = "PIPELINE_DATABASE_URL"
REPORTS_DIR = "reports"
EXECUTED_NOTEBOOK = "daily_churn_report.ipynb"
FAILED_NOTEBOOK = "daily_churn_report.failed.ipynb"
REPORT_HTML = "daily_churn_report.html"
EMAIL_HTML = "email/body.html"
SUMMARY = "summary.json"
MANIFEST = "manifest.json"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
NOTEBOOK_ONLY_TAG = "notebook-only"  # cells left out of the rendered report and the e-mail
CORRECTION_SLOT = "<!--correction-->"  # where SendReport puts the correction notice in the e-mail
MAX_EMAIL_HTML_BYTES = 100_000  # Gmail clips a message whose HTML is larger than ~102 KB


class ReportError(RuntimeError):
    """The report could not be rendered."""


class ReportCellError(ReportError):
    """A cell of the report notebook raised: the message names the cell and its error."""

    def __init__(self, cell_index: int, source: str, ename: str, evalue: str, notebook: Path) -> None:
        self.cell_index, self.ename, self.evalue, self.notebook = cell_index, ename, evalue, notebook
        first_line = next((line for line in source.splitlines() if line.strip()), "").strip()
        super().__init__(
            f"the report notebook failed in cell {cell_index} ({first_line[:80]!r}): {ename}: {evalue} "
            f"(the executed notebook with the traceback: {notebook})"
        )


def report_dir(data_dir: Path | str, day: dt.date) -> Path:
    return Path(data_dir) / REPORTS_DIR / f"date={day.isoformat()}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def write_json_atomic(path: Path, document: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_manifest(data_dir: Path | str, day: dt.date) -> dict[str, Any] | None:
    return read_json(report_dir(data_dir, day) / MANIFEST)


# -- executing the notebook ---------------------------------------------------------------------------


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


def kernel_environment(database_url: str) -> dict[str, str]:
    """The kernel's environment: ours without the secrets it has no use for (API credentials, the SMTP
    password, the webhook URL), plus the database URL and the project on the import path."""
    from pipeline.run_log import SECRET_ENV_VARS

    environment = {key: value for key, value in os.environ.items() if key not in SECRET_ENV_VARS}
    environment[DATABASE_URL_ENV] = absolute_database_url(database_url)
    paths = [str(PROJECT_ROOT), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["MPLBACKEND"] = "Agg"
    return environment


def execute_notebook(
    notebook: Any, *, working_dir: Path, database_url: str, timeout: int, failed_path: Path
) -> Any:
    """Run every cell in a fresh kernel; a raising cell raises :class:`ReportCellError`."""
    import asyncio
    import tempfile

    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # The kernel talks over Unix sockets in a private directory rather than loopback TCP ports, which
    # any local user could connect to.
    with tempfile.TemporaryDirectory(prefix="churn-report-kernel-") as sockets:
        client = NotebookClient(
            notebook,
            km=AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel")),
            timeout=timeout,
            resources={"metadata": {"path": str(working_dir)}},
        )
        try:
            # A fresh event loop per report, all of it awaited on this thread: the synchronous API parks
            # nested calls on a helper thread that a forked worker (luigi --workers N) inherits dead,
            # and the report then hangs. cleanup_kc: shut the kernel down afterwards, although the
            # client did not create its manager.
            asyncio.run(client.async_execute(env=kernel_environment(database_url), cleanup_kc=True))
            return notebook
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


# -- rendering ----------------------------------------------------------------------------------------


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _rendered_cells(notebook: Any) -> list[Any]:
    """The cells that make up the report: not the notebook-only ones or the parameter cells."""
    hidden = {NOTEBOOK_ONLY_TAG, PARAMETERS_TAG, INJECTED_TAG}
    return [cell for cell in notebook.cells if not hidden & set(_tags(cell))]


def browser_html(notebook: Any) -> str:
    """The report as one self-contained HTML page, without code cells (nbconvert)."""
    import copy

    from nbconvert import HTMLExporter

    visible = copy.deepcopy(notebook)
    visible.cells = _rendered_cells(visible)
    for cell in visible.cells:  # warnings printed to stderr are for the executed notebook, not readers
        if cell.get("cell_type") == "code":
            cell.outputs = [output for output in cell.outputs if output.get("name") != "stderr"]
    exporter = HTMLExporter(
        template_file=str(HTML_TEMPLATE),
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    page, _resources = exporter.from_notebook_node(visible)
    problems = offline_problems(page)
    if problems:
        raise ReportError(f"the rendered report is not self-contained: {'; '.join(problems)}")
    return page


_SCRIPT = re.compile(r"<script\b", re.IGNORECASE)
_REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
_CSS_REMOTE = re.compile(r"""@import|url\(\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def offline_problems(page: str) -> list[str]:
    """Why ``page`` would need a script or the network (empty: it needs neither)."""
    problems = []
    if _SCRIPT.search(page):
        problems.append("it contains a <script> element")
    if _REMOTE.search(page):
        problems.append("it loads or links a remote resource")
    if _CSS_REMOTE.search(page):
        problems.append("its CSS imports a remote resource")
    return problems


_MARKDOWN_STYLES = {
    "h1": f"{report_html.FONT};font-size:22px;margin:0 0 6px;color:#111827",
    "h2": f"{report_html.FONT};font-size:17px;margin:22px 0 4px;padding-top:10px;"
    "border-top:1px solid #e5e7eb;color:#111827",
    "h3": f"{report_html.FONT};font-size:15px;margin:16px 0 4px;color:#111827",
    "p": f"{report_html.FONT};font-size:13px;margin:4px 0 8px;color:#374151",
    "ul": f"{report_html.FONT};font-size:13px;margin:4px 0 8px;padding-left:20px;color:#374151",
    "ol": f"{report_html.FONT};font-size:13px;margin:4px 0 8px;padding-left:20px;color:#374151",
    "code": "font-family:Consolas,Menlo,monospace;background:#f3f4f6;padding:0 3px",
}
_ANCHOR = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.DOTALL)
_OPEN_TAG = re.compile(r"<(h1|h2|h3|p|ul|ol|code)(\s[^>]*)?>")


def _markdown_for_email(source: str) -> str:
    """A markdown cell as HTML with its CSS inline (mail clients drop or mangle <style>)."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    rendered = _ANCHOR.sub("", markdown2html_mistune(source))

    def styled(match: re.Match) -> str:
        tag, attributes = match.group(1), match.group(2) or ""
        attributes = re.sub(r'\s(?:id|class)="[^"]*"', "", attributes)
        if "style=" in attributes:
            return f"<{tag}{attributes}>"
        return f'<{tag}{attributes} style="{_MARKDOWN_STYLES[tag]}">'

    return _OPEN_TAG.sub(styled, rendered)


def chart_cid(file_name: str, day: dt.date) -> str:
    """The Content-ID of a chart in the e-mail (without angle brackets)."""
    return f"{Path(file_name).stem}.{day.isoformat()}@churn-report"


def email_html(notebook: Any, day: dt.date) -> tuple[str, list[str]]:
    """The e-mail body built from the executed notebook's outputs, and the chart files it refers to.

    Inline CSS only, no script, no ``data:`` URI: each chart is ``<img src="cid:...">``, attached to
    the message as an inline part by :mod:`pipeline.mailer`.
    """
    parts: list[str] = []
    charts: list[str] = []
    for cell in _rendered_cells(notebook):
        if cell.get("cell_type") == "markdown":
            parts.append(_markdown_for_email(cell["source"]))
            continue
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") not in ("display_data", "execute_result"):
                continue  # streams (warnings, prints) are not part of the report
            data, metadata = output.get("data", {}), output.get("metadata", {})
            file_name = metadata.get(report_html.CHART_METADATA_KEY)
            if "image/png" in data and file_name:
                charts.append(file_name)
                alt = report_html.esc(metadata.get(report_html.CHART_TITLE_KEY, "chart"))
                parts.append(
                    f'<img src="cid:{chart_cid(file_name, day)}" alt="{alt}" '
                    f'width="{report_html.CHART_WIDTH_PX}" style="display:block;width:100%;'
                    f'max-width:{report_html.CHART_WIDTH_PX}px;height:auto;margin:6px 0 10px;border:0">'
                )
            elif "text/html" in data:
                parts.append("".join(data["text/html"]))
    title = f"Daily churn report {day.isoformat()}"
    body = "\n".join(parts)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{report_html.esc(title)}</title></head>\n"
        '<body style="margin:0;padding:0;background:#f3f4f6">\n'
        f'<div style="{report_html.FONT};max-width:780px;margin:0 auto;background:#ffffff;'
        f'padding:16px 20px;color:#111827">\n{CORRECTION_SLOT}\n{body}\n</div>\n</body></html>\n'
    )
    problems = offline_problems(page)
    if re.search(r"""(?:src|href)\s*=\s*["']?\s*data:""", page, re.IGNORECASE):
        problems.append("it has a data: URI")
    if problems:
        raise ReportError(f"the e-mail body is not e-mail safe: {'; '.join(problems)}")
    return page, charts


# -- the whole render ---------------------------------------------------------------------------------


def render_report(
    database_url: str,
    data_dir: Path | str,
    day: dt.date,
    *,
    notebook_path: Path | str = NOTEBOOK,
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
    with warehouse(database_url).connect() as connection:
        version = data_version(connection, day)
    if version is None:
        raise ReportError(f"{day.isoformat()} is not loaded: there is nothing to report")

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
        database_url=database_url,
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
        "rendered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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
    write_json_atomic(directory / MANIFEST, manifest)
    log.info("rendered the churn report of %s in %.1fs: %s", day, finished - started, directory / REPORT_HTML)
    return manifest


class ReportTarget(luigi.Target):
    """The report of a day, rendered from the data of that day as it is now."""

    def __init__(self, database_url: str, data_dir: Path | str, day: dt.date) -> None:
        self.database_url, self.data_dir, self.day = database_url, Path(data_dir), day

    @property
    def path(self) -> Path:
        return report_dir(self.data_dir, self.day) / REPORT_HTML

    def exists(self) -> bool:
        manifest = read_manifest(self.data_dir, self.day)
        if manifest is None:
            return False
        with warehouse(self.database_url).connect() as connection:
            return manifest.get("data_version") == data_version(connection, self.day)
