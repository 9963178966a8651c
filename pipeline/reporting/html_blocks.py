"""The daily churn report's building blocks: HTML fragments with inline styles, and static charts.

Every value from the data goes through :func:`esc` (a company called ``<script>`` shows as text), and
every fragment carries its CSS inline, because the same notebook outputs become the e-mail body, where
``<style>`` blocks and scripts are not reliable (:func:`pipeline.reporting.notebook.email_html`). Charts are
matplotlib PNG files written beside the report and displayed with their file name in the output's
metadata, so that the e-mail attaches the same file and refers to it by ``cid:``.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

FONT = "font-family:Segoe UI,Helvetica,Arial,sans-serif"
MUTED = "#6b7280"
GOOD, BAD = "#047857", "#b91c1c"
_TABLE = "border-collapse:collapse;width:100%;font-size:13px;margin:4px 0 8px"
_TH = "text-align:left;padding:5px 8px;border-bottom:2px solid #d1d5db;color:#374151"
_TD = "padding:4px 8px;border-bottom:1px solid #e5e7eb"
_NUM = ";text-align:right;white-space:nowrap"
NONE = f'<span style="color:{MUTED}">&#8212;</span>'  # an em dash for "no value"
CHART_METADATA_KEY = "report_chart"  # the PNG's file name, in the display output's metadata
CHART_TITLE_KEY = "report_chart_title"
CHART_WIDTH_PX = 720


def esc(value: Any) -> str:
    """A value from the data as HTML text: escaped, quotes included; None as an em dash."""
    if value is None:
        return NONE
    if isinstance(value, dt.datetime):
        value = value.isoformat(sep=" ")
    elif isinstance(value, dt.date):
        value = value.isoformat()
    return html.escape(str(value), quote=True)


def fmt_int(value: int | None) -> str:
    return NONE if value is None else f"{int(value):,}"


def fmt_change(value: int | None, before: int | None, higher_is_better: bool) -> str:
    """'+12 (+3.4%)' in green or red (by whether up is good), or an em dash when it is not known."""
    if value is None or before is None:
        return NONE
    change = value - before
    if change == 0:
        return f'<span style="color:{MUTED}">0</span>'
    percent = f" ({change / before:+.1%})" if before else ""
    colour = GOOD if (change > 0) == higher_is_better else BAD
    return f'<span style="color:{colour}">{change:+,}{percent}</span>'


def title(text: str, subtitle_lines: Iterable[str] = ()) -> str:
    lines = "".join(
        f'<div style="color:{MUTED};font-size:13px;margin:2px 0">{esc(line)}</div>' for line in subtitle_lines
    )
    return (
        f'<div style="{FONT};margin:0 0 12px">'
        f'<h1 style="font-size:22px;margin:0 0 4px;color:#111827">{esc(text)}</h1>{lines}</div>'
    )


def callout(lines: Sequence[str], kind: str = "info") -> str:
    """A box of sentences: 'info' (grey-blue) or 'warning' (amber)."""
    if not lines:
        return ""
    colours = {"info": ("#eff6ff", "#1e40af"), "warning": ("#fffbeb", "#92400e")}
    background, colour = colours.get(kind, colours["info"])
    items = "".join(f'<li style="margin:2px 0">{esc(line)}</li>' for line in lines)
    return (
        f'<div style="{FONT};background:{background};color:{colour};border-radius:4px;'
        f'padding:8px 12px;margin:6px 0 10px;font-size:13px">'
        f'<ul style="margin:0;padding-left:18px">{items}</ul></div>'
    )


def paragraph(text: str, muted: bool = False) -> str:
    colour = f"color:{MUTED};" if muted else ""
    return f'<p style="{FONT};{colour}font-size:13px;margin:4px 0 8px">{esc(text)}</p>'


def quality_history_link(index_page: Path | str, report_dir: Path | str) -> str:
    """A paragraph linking the data-quality history (``{data_dir}/validation/index.html``) by a path
    relative to the report's folder, so that the link works wherever the data folder is opened, and
    naming the file (a mail client does not follow relative links)."""
    import os

    href = Path(os.path.relpath(Path(index_page).resolve(), Path(report_dir).resolve())).as_posix()
    return (
        f'<p style="{FONT};font-size:13px;margin:4px 0 8px">Every day\'s verdicts per dataset: '
        f'<a href="{esc(href)}" style="color:#1d4ed8">the data-quality history</a> '
        f'<span style="color:{MUTED}">({esc(Path(index_page))})</span></p>'
    )


def headline_table(metrics: Sequence[Any], day: dt.date) -> str:
    """Metric | D | change vs D-1 | change vs D-7, with the earlier values in small print."""
    previous_day, previous_week = day - dt.timedelta(days=1), day - dt.timedelta(days=7)
    head = "".join(
        f'<th style="{_TH}{_NUM if index else ""}">{esc(label)}</th>'
        for index, label in enumerate(
            (
                "",
                day.isoformat(),
                f"vs {previous_day.isoformat()} (D-1)",
                f"vs {previous_week.isoformat()} (D-7)",
            )
        )
    )
    body = []
    for metric in metrics:
        cells = [
            f'<td style="{_TD}">{esc(metric.label)}</td>',
            f'<td style="{_TD}{_NUM};font-size:15px;font-weight:600">{fmt_int(metric.value)}</td>',
        ]
        for before in (metric.previous_day, metric.previous_week):
            was = f'<br><span style="color:{MUTED};font-size:11px">was {fmt_int(before)}</span>'
            cells.append(
                f'<td style="{_TD}{_NUM}">'
                f"{fmt_change(metric.value, before, metric.higher_is_better)}"
                f"{was if before is not None else ''}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table style="{FONT};{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


Column = tuple[str, str, str]  # (row key, header, kind: "text", "int" or "date")


def data_table(
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    max_rows: int,
    empty: str = "None.",
    more: str = "",
) -> str:
    """The first ``max_rows`` rows as a table; a note says how many more there are and where they are."""
    if not rows:
        return paragraph(empty, muted=True)
    head = "".join(
        f'<th style="{_TH}{_NUM if kind == "int" else ""}">{esc(label)}</th>' for _key, label, kind in columns
    )
    body = []
    for row in rows[:max_rows]:
        cells = []
        for key, _label, kind in columns:
            value = row.get(key)
            if kind == "int":
                cells.append(f'<td style="{_TD}{_NUM}">{fmt_int(value)}</td>')
            elif kind == "date":
                cells.append(f'<td style="{_TD};white-space:nowrap">{esc(value)}</td>')
            else:
                cells.append(f'<td style="{_TD}">{esc(value)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    table = (
        f'<table style="{FONT};{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )
    if len(rows) > max_rows:
        table += paragraph(f"{len(rows) - max_rows:,} more not shown. {more}".strip(), muted=True)
    return table


def segment_rows(
    rows: Sequence[dict[str, Any]], *, top: int, none_label: str = "(not set)"
) -> list[dict[str, Any]]:
    """Breakdown rows for display: the ``top`` largest, the rest summed as 'other', a churn-risk share."""
    numeric = ("companies", "active_companies", "active_users", "events", "churn_risk_companies")
    shown = [dict(row) for row in rows[:top]]
    rest = rows[top:]
    if rest:
        other: dict[str, Any] = {"segment": f"other ({len(rest)})"}
        for key in numeric:
            other[key] = sum(int(row[key]) for row in rest)
        shown.append(other)
    for row in shown:
        if row["segment"] is None:
            row["segment"] = none_label
        companies = int(row["companies"])
        row["churn_risk_share"] = f"{row['churn_risk_companies'] / companies:.1%}" if companies else None
    return shown


def show(fragment: str) -> None:
    """Display an HTML fragment as a notebook output."""
    from IPython.display import HTML, display

    if fragment:
        display(HTML(fragment))


# -- charts ----------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Labels come from the data: never read '$' in a country or industry as mathtext.
    plt.rcParams.update(
        {
            "text.parse_math": False,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 100,
        }
    )
    return plt


def chart(
    draw: Callable[[Any], None], name: str, chart_title: str, output_dir: Path | str, height: float = 2.6
) -> Path:
    """Draw a chart, save it as ``{output_dir}/{name}.png`` and display it (with its file name).

    ``draw`` gets the matplotlib Axes. The PNG is 720 px wide, the width the e-mail shows it at.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(CHART_WIDTH_PX / 100, height))
    try:
        axes.set_title(chart_title, loc="left", fontsize=11)
        draw(axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(figure)
    png = buffer.getvalue()
    path = Path(output_dir) / f"{name}.png"
    path.write_bytes(png)
    _display_png(png, path.name, chart_title)
    return path


def _display_png(png: bytes, file_name: str, chart_title: str) -> None:
    try:
        from IPython.display import display
    except ImportError:  # outside a kernel (tests of the helpers): the file is what matters
        return
    display(
        {"image/png": png, "text/plain": f"[chart: {chart_title}]"},
        raw=True,
        metadata={CHART_METADATA_KEY: file_name, CHART_TITLE_KEY: chart_title},
    )


def daily_series(
    first: dt.date, last: dt.date, values: dict[dt.date, int | None]
) -> tuple[list[dt.date], list[float]]:
    """Every day of first .. last, with NaN where there is no value (a gap in the line, not a zero)."""
    days = [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
    return days, [float("nan") if values.get(day) is None else float(values[day]) for day in days]


def date_axis(axes: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def thousands_axis(axes: Any, axis: str = "y") -> None:
    import matplotlib.ticker as mticker

    target = axes.xaxis if axis == "x" else axes.yaxis
    target.set_major_locator(mticker.MaxNLocator(integer=True, min_n_ticks=3))
    target.set_major_formatter(mticker.FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
