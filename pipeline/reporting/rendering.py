"""An executed report notebook turned into HTML: the page for a browser and the body of the e-mail.

Both leave out code and the cells tagged ``notebook-only``. The browser page is nbconvert's rendering
with the project's template, self-contained; the e-mail body is built for mail clients: inline CSS
only, no scripts, no remote resources, no ``data:`` URIs, charts referred to by Content-ID
(:func:`chart_cid`), and small enough not to be clipped.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import project
from pipeline.reporting import html_blocks

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
NOTEBOOK_ONLY_TAG = "notebook-only"  # cells left out of the rendered report and the e-mail
CORRECTION_SLOT = "<!--correction-->"  # where SendReport puts the correction notice in the e-mail
MAX_EMAIL_HTML_BYTES = 100_000  # Gmail clips a message whose HTML is larger than ~102 KB


class ReportError(RuntimeError):
    """The report could not be rendered."""


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
        template_file=str(project.reports_dir() / "templates" / "churn_report.html.j2"),
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


# Attributes whose value is a URL the browser fetches or follows (srcset: a list of them).
_URL_ATTRIBUTES = (
    "src", "href", "xlink:href", "srcset", "imagesrcset", "poster", "data", "action", "formaction",
    "background", "codebase", "archive", "cite", "longdesc", "manifest", "ping",
)  # fmt: skip
_REMOTE_URL = re.compile(r"^\s*(?:(?:https?|ftp|wss?):|//|\\\\)", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)\s]*))""", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"@import\b", re.IGNORECASE)


def offline_problems(page: str) -> list[str]:
    """Why ``page`` would need a script or the network (empty: it needs neither).

    The page is parsed (beautifulsoup4's ``html.parser``), so entities, quoting and letter case do not
    hide anything: a ``<script>``; any URL attribute (``src``, ``href``, ``srcset`` candidates,
    ``poster``, ...) that is remote; a ``<meta http-equiv="refresh">``; CSS in ``<style>`` or ``style=``
    that imports or loads a remote ``url(...)``.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    problems: list[str] = []

    def add(problem: str) -> None:
        if problem not in problems:
            problems.append(problem)

    if soup.find("script"):
        add("it contains a <script> element")
    for element in soup.find_all(True):
        for attribute in _URL_ATTRIBUTES:
            value = element.get(attribute)
            if value is None:
                continue
            text = " ".join(value) if isinstance(value, list) else str(value)
            urls = [candidate.split()[0] for candidate in text.split(",") if candidate.split()]
            if attribute not in ("srcset", "imagesrcset"):
                urls = [text]
            for url in urls:
                if _REMOTE_URL.match(url):
                    add(f"it loads or links a remote resource (<{element.name} {attribute}={url.strip()!r}>)")
        if element.name == "meta" and str(element.get("http-equiv", "")).strip().lower() == "refresh":
            content = element.get("content")
            add(f"it redirects or reloads itself (<meta http-equiv=refresh content={content!r}>)")
        if element.get("style"):
            _css_problems(str(element.get("style")), add)
    for style in soup.find_all("style"):
        _css_problems(style.get_text(), add)
    return problems


def _css_problems(css: str, add: Callable[[str], None]) -> None:
    if _CSS_IMPORT.search(css):
        add("its CSS imports another stylesheet (@import)")
    for match in _CSS_URL.finditer(css):
        url = next(group for group in match.groups() if group is not None)
        if _REMOTE_URL.match(url):
            add(f"its CSS loads a remote resource (url({url.strip()!r}))")


_MARKDOWN_STYLES = {
    "h1": f"{html_blocks.FONT};font-size:22px;margin:0 0 6px;color:#111827",
    "h2": f"{html_blocks.FONT};font-size:17px;margin:22px 0 4px;padding-top:10px;"
    "border-top:1px solid #e5e7eb;color:#111827",
    "h3": f"{html_blocks.FONT};font-size:15px;margin:16px 0 4px;color:#111827",
    "p": f"{html_blocks.FONT};font-size:13px;margin:4px 0 8px;color:#374151",
    "ul": f"{html_blocks.FONT};font-size:13px;margin:4px 0 8px;padding-left:20px;color:#374151",
    "ol": f"{html_blocks.FONT};font-size:13px;margin:4px 0 8px;padding-left:20px;color:#374151",
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
            file_name = metadata.get(html_blocks.CHART_METADATA_KEY)
            if "image/png" in data and file_name:
                charts.append(file_name)
                alt = html_blocks.esc(metadata.get(html_blocks.CHART_TITLE_KEY, "chart"))
                parts.append(
                    f'<img src="cid:{chart_cid(file_name, day)}" alt="{alt}" '
                    f'width="{html_blocks.CHART_WIDTH_PX}" style="display:block;width:100%;'
                    f'max-width:{html_blocks.CHART_WIDTH_PX}px;height:auto;margin:6px 0 10px;border:0">'
                )
            elif "text/html" in data:
                parts.append("".join(data["text/html"]))
    title = f"Daily churn report {day.isoformat()}"
    body = "\n".join(parts)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html_blocks.esc(title)}</title></head>\n"
        '<body style="margin:0;padding:0;background:#f3f4f6">\n'
        f'<div style="{html_blocks.FONT};max-width:780px;margin:0 auto;background:#ffffff;'
        f'padding:16px 20px;color:#111827">\n{CORRECTION_SLOT}\n{body}\n</div>\n</body></html>\n'
    )
    problems = offline_problems(page)
    if re.search(r"""(?:src|href)\s*=\s*["']?\s*data:""", page, re.IGNORECASE):
        problems.append("it has a data: URI")
    if problems:
        raise ReportError(f"the e-mail body is not e-mail safe: {'; '.join(problems)}")
    return page, charts
