"""The results of one validation, and the index across days, as self-contained HTML pages: inline style,
no script, every value escaped, readable offline.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

from pipeline.datasets import DATASETS, TITLES
from pipeline.quality.results import ValidationOutcome, short
from pipeline.quality.suites import SUITE_FILES

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f3f3f3}.passed{color:#1a7f37}.failed{color:#c62828;font-weight:bold}
.warning,.accepted{color:#a15c00;font-weight:bold}.verdict{font-size:1.2em;padding:.5em;border-radius:4px}
.ok{background:#e8f5e9}.bad{background:#ffebee}code{font-size:.9em}ul{padding-left:1.3em}
"""


def render_html(outcome: ValidationOutcome) -> str:
    """A self-contained page of the results: inline style, no script, every value escaped."""
    e = html.escape
    verdict = "PASSED" if outcome.success else "FAILED"
    summary = [
        ("dataset", f"{TITLES[outcome.dataset]} ({outcome.dataset})"),
        ("date", outcome.date.isoformat()),
        ("rows", str(outcome.row_count)),
        ("row drop", outcome.row_drop_text()),
        ("--accept-row-drop", "yes" if outcome.accept_row_drop else "no"),
        ("landing", outcome.landing_id or ""),
        ("parameters", json.dumps(outcome.parameters, default=str)),
        ("validated at", f"{outcome.validated_at} in {outcome.seconds:.2f}s"),
        (
            "suite",
            f"expectations/{SUITE_FILES[outcome.dataset]} (great-expectations "
            f"{outcome.great_expectations_version})",
        ),
    ]
    if outcome.context:
        summary.append(("context", json.dumps(outcome.context, default=str)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(outcome.dataset)} {e(outcome.date.isoformat())}: validation {verdict}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Validation of {e(TITLES[outcome.dataset])} for {e(outcome.date.isoformat())}</h1>",
        f'<p class="verdict {"ok" if outcome.success else "bad"}">{verdict}: {len(outcome.failures)} of '
        f"{len(outcome.checks)} checks failed, {len(outcome.warnings)} warnings</p>",
        "<table>",
        *(f"<tr><th>{e(key)}</th><td>{e(value)}</td></tr>" for key, value in summary),
        "</table>",
    ]
    if outcome.failures:
        parts.append("<h2>Failures</h2><ul>")
        parts.extend(f"<li>{e(outcome.describe(check))}</li>" for check in outcome.failures)
        parts.append("</ul>")
    if outcome.warnings:
        parts.append("<h2>Warnings</h2><ul>")
        parts.extend(f"<li>{e(warning)}</li>" for warning in outcome.warnings)
        parts.append("</ul>")
    parts.append(
        "<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>column</th><th>rule</th>"
        "<th>finding</th><th>examples (company_id)</th></tr>"
    )
    for check in outcome.checks:
        finding = "" if check.passed else outcome.describe(check).split(": ", 1)[-1]
        if check.passed and check.observed_value is not None:
            finding = f"observed {short(check.observed_value)}"
        parts.append(
            f'<tr><td class="{e(check.status)}">{e(check.status)}</td><td><code>{e(check.check)}</code></td>'
            f"<td>{e(check.column)}</td><td>{e(check.description)}</td><td>{e(finding)}</td>"
            f"<td>{e(', '.join(check.examples))}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def render_index(days: dict[str, dict[str, Any]]) -> str:
    """The data-quality history: one row per day from the first to the last validated (newest first), one
    column per dataset with its latest verdict linking to that day's results page (``date=D/<dataset>.html``
    beside this page). A day in between without results shows as not validated."""
    e = html.escape
    dates = sorted(dt.date.fromisoformat(day) for day in days)
    all_days = (
        [dates[-1] - dt.timedelta(days=offset) for offset in range((dates[-1] - dates[0]).days + 1)]
        if dates
        else []
    )
    failing = sum(1 for day in days.values() if any(not entry.get("success") for entry in day.values()))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Data-quality history</title>",
        f"<style>{_STYLE}.none{{color:#888}}</style></head><body>",
        "<h1>Data-quality history</h1>",
        f"<p>{len(days)} validated day{'s' if len(days) != 1 else ''}"
        + (f" from {e(dates[0].isoformat())} to {e(dates[-1].isoformat())}" if dates else "")
        + f"; {failing} with a failed check. Each verdict is the latest validation of that day and dataset; "
        "it links to its results.</p>",
        "<table><tr><th>date</th>",
        *(f"<th>{e(TITLES[dataset])}</th>" for dataset in DATASETS),
        "</tr>",
    ]
    for day in all_days:
        entries = days.get(day.isoformat(), {})
        cells = [f"<td>{e(day.isoformat())} {e(day.strftime('%a'))}</td>"]
        for dataset in DATASETS:
            entry = entries.get(dataset)
            if entry is None:
                text = "not validated" if not entries else "&#8212;"
                cells.append(f'<td class="none">{text}</td>')
                continue
            cells.append(f"<td>{_index_cell(day, dataset, entry)}</td>")
        parts.append(f'<tr id="{e(day.isoformat())}">{"".join(cells)}</tr>')
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def _index_cell(day: dt.date, dataset: str, entry: dict[str, Any]) -> str:
    e = html.escape
    href = f"date={day.isoformat()}/{dataset}.html"
    if entry.get("unreadable"):
        return f'<a class="failed" href="{e(href)}">unreadable results</a>'
    status = "passed" if entry.get("success") else "failed"
    details = []
    if entry.get("row_count") is not None:
        details.append(f"{entry['row_count']:,} rows")
    if entry.get("failed_checks"):
        details.append(f"{entry['failed_checks']} failed")
    if entry.get("warnings"):
        details.append(f"{entry['warnings']} warning{'s' if entry['warnings'] != 1 else ''}")
    if entry.get("row_drop_accepted"):
        details.append("row drop accepted")
    label = status.upper() if status == "failed" else status
    return f'<a class="{status}" href="{e(href)}">{e(label)}</a> {e(", ".join(details))}'
