"""The daily churn report: the notebook executed for a day, its HTML, its e-mail body, its numbers.

Ten hand-made days hold one of everything the report shows: a company (named like an HTML attack) that
becomes at risk on D, one that recovers on D, one at risk all along, orphans, a data-quality warning.
The expected numbers come from direct SQL on the table, never from the report's own queries. Kernels are
slow, so each backend renders once per module (``rendered``, see report_world.py) and the tests read
its files.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
from conftest import IN_CI
from report_world import (
    BOLD_NAME,
    DAY,
    FIRST,
    LABELS,
    SCRIPT_NAME,
    WARNING,
    Rendered,
    broken_notebook,
    build_days,
    change,
    direct_totals,
    mariadb_report,
    number,
    postgres_report,
    rendered,
    sqlite_report,
    tables,
)

from pipeline import project
from pipeline.orchestration import targets
from pipeline.reporting import data as report_data
from pipeline.reporting import notebook as report_notebook
from pipeline.reporting import rendering
from pipeline.sources import crm_location
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

# The module-scoped fixtures used here.
__all__ = ["mariadb_report", "postgres_report", "rendered", "sqlite_report"]


# -- the numbers -----------------------------------------------------------------------------------------


def test_headline_numbers_equal_a_direct_query_on_the_table(rendered: Rendered) -> None:
    today = direct_totals(rendered.engine, DAY)
    day_before = direct_totals(rendered.engine, DAY - dt.timedelta(days=1))
    week_before = direct_totals(rendered.engine, DAY - dt.timedelta(days=7))
    headline = tables(rendered.html)[0]
    assert headline[0][1:] == [
        DAY.isoformat(),
        f"vs {DAY - dt.timedelta(days=1)} (D-1)",
        f"vs {DAY - dt.timedelta(days=7)} (D-7)",
    ]
    shown = {row[0]: row[1:] for row in headline[1:]}
    assert set(shown) == set(LABELS.values())
    for key, label in LABELS.items():
        value, versus_day, versus_week = shown[label]
        assert number(value) == today[key], label
        assert number(versus_day) == change(today[key], day_before[key]), label
        assert number(versus_week) == change(today[key], week_before[key]), label
    # The same numbers in summary.json, which the plain-text mail and the subject are written from.
    by_key = {metric["key"]: metric for metric in rendered.summary["headline"]}
    assert by_key["churn_risk_companies"]["value"] == today["at_risk"] == 2
    assert by_key["active_users"]["value"] == today["active_users"]
    assert by_key["events"]["change_previous_week"] == today["events"] - week_before["events"]


def test_newly_at_risk_recovered_orphans_and_breakdowns(rendered: Rendered) -> None:
    summary = rendered.summary
    newly = summary["newly_at_risk"]["top"]
    assert [row["company_id"] for row in newly] == ["C000001"]
    assert newly[0]["company_name"] == SCRIPT_NAME
    assert newly[0]["last_active_date"] == (DAY - dt.timedelta(days=7)).isoformat()
    assert newly[0]["days_idle"] == 7
    assert newly[0]["previous_7d_active_users"] == 4  # D-7 .. D-1: the 4 users of D-7
    assert [row["company_id"] for row in summary["recovered"]["top"]] == ["C000003"]
    assert summary["orphans"]["count"] == 2
    orphans = (rendered.directory / "orphans.csv").read_text().splitlines()
    assert orphans == ["company_id,active_users,events", "C900002,2,7", "C900001,1,1"]

    page_tables = tables(rendered.html)
    newly_table = next(table for table in page_tables if table[0][:2] == ["Company", "ID"])
    assert newly_table[1][:5] == [SCRIPT_NAME, "C000001", (DAY - dt.timedelta(days=7)).isoformat(), "7", "4"]
    country = next(table for table in page_tables if table[0][0] == "Country")
    totals = direct_totals(rendered.engine, DAY)
    assert sum(number(row[1]) for row in country[1:]) == totals["companies"]
    assert sum(number(row[5]) for row in country[1:]) == totals["at_risk"]
    assert {row[0] for row in country[1:]} == {"DE", "GB", "FR", "US", "(not set)"}


def test_every_chart_is_a_png_beside_the_report(rendered: Rendered) -> None:
    charts = rendered.manifest["files"]["charts"]
    assert charts == ["active_users_trend.png", "churn_risk_trend.png", "churn_risk_by_industry.png"]
    for name in charts:
        assert (rendered.directory / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- escaping, offline HTML, no code ------------------------------------------------------------------


class _Elements(HTMLParser):
    """The start tags of a page and its text, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_values_from_the_data_are_escaped_in_the_html_and_the_email(rendered: Rendered) -> None:
    for page in (rendered.html, rendered.email_html):
        elements = _Elements()
        elements.feed(page)
        text = "".join(elements.text)
        # The names and the warning show as text ...
        assert SCRIPT_NAME in text and BOLD_NAME in text and WARNING in text
        # ... and none of their markup became an element.
        assert "script" not in elements.tags and "b" not in elements.tags
        assert elements.tags.count("img") == len(rendered.manifest["files"]["charts"])
        assert "&lt;script&gt;alert(" in page


def test_the_html_is_self_contained_without_code_or_parameters(rendered: Rendered) -> None:
    page = rendered.html
    assert rendering.offline_problems(page) == []
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert page.count('src="data:image/png;base64,') == len(rendered.manifest["files"]["charts"])
    for code in ("load_report_data", "import ", "report_date =", "rh.show", "PIPELINE_DATABASE_URL"):
        assert code not in page, code
    assert "<title>Daily churn report 2026-09-10</title>" in page
    assert "Data quality" in page and "Newly at risk" in page and "Recovered" in page


def test_the_report_links_the_data_quality_history(rendered: Rendered) -> None:
    [href] = re.findall(r'<a href="([^"]*)"[^>]*>the data-quality history</a>', rendered.html)
    index = (rendered.data_dir / "validation" / "index.html").resolve()
    assert href == "../../validation/index.html"
    assert (rendered.directory / href).resolve() == index
    # the e-mail names the file too: a mail client does not follow a relative link
    assert str(index) in rendered.email_html


def test_the_email_body_is_mail_safe(rendered: Rendered) -> None:
    body = rendered.email_html
    assert len(body.encode()) < 100_000
    assert "<style" not in body and "<script" not in body.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*data:""", body)
    cids = re.findall(r'src="cid:([^"]+)"', body)
    assert cids == [rendering.chart_cid(name, DAY) for name in rendered.manifest["files"]["charts"]]
    # CSS is inline: every table and heading carries its own style.
    assert re.findall(r"<table(?![^>]*style=)", body) == []
    assert re.findall(r"<h2(?![^>]*style=)", body) == []
    assert rendering.CORRECTION_SLOT in body


def test_parameters_are_injected_and_the_warehouse_is_not_one(rendered: Rendered) -> None:
    executed = nbformat.read(rendered.directory / report_notebook.EXECUTED_NOTEBOOK, as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in executed.cells]
    parameters = tags.index(["parameters"])
    assert tags[parameters + 1] == [rendering.INJECTED_TAG]
    injected = executed.cells[parameters + 1].source
    assert f"report_date = '{DAY.isoformat()}'" in injected
    text = (rendered.directory / report_notebook.EXECUTED_NOTEBOOK).read_text()
    assert rendered.warehouse.database_url not in text
    # Nothing that names the warehouse is a parameter: its database (when the URL has one), its schemas.
    database = sa.make_url(rendered.warehouse.database_url).database
    for name in filter(None, (database, rendered.warehouse.stg_schema, rendered.warehouse.analytics_schema)):
        assert name not in injected


def test_chromium_opens_the_report_offline(sqlite_report: Rendered, tmp_path: Path) -> None:
    """Headless Chromium with every network request failing renders the whole page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if IN_CI:
            pytest.fail("CI=true and no chromium: install the Debian package `chromium`", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    url = (sqlite_report.directory / report_notebook.REPORT_HTML).resolve().as_uri()
    offline = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--proxy-server=127.0.0.1:9",  # any network fetch would fail
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [browser, *offline, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=True
    ).stdout
    assert "Daily churn report 2026-09-10" in dom
    assert html.escape(SCRIPT_NAME).replace("&quot;", '"') in dom  # shown as text, not run
    assert "<script" not in dom.lower()
    assert dom.count("<img") == len(sqlite_report.manifest["files"]["charts"])
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            *offline,
            "--hide-scrollbars",
            "--window-size=1100,2400",
            f"--screenshot={screenshot}",
            url,
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- short history, failures, completion --------------------------------------------------------------


def test_a_day_with_less_than_seven_days_of_history_renders_and_says_so(tmp_path: Path) -> None:
    warehouse = WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}")
    build_days(open_warehouse(warehouse), 3)
    day = FIRST + dt.timedelta(days=2)
    manifest = report_notebook.render_report(warehouse, tmp_path / "data", day)
    directory = report_notebook.report_dir(tmp_path / "data", day)
    page = (directory / report_notebook.REPORT_HTML).read_text()
    summary = json.loads((directory / report_notebook.SUMMARY).read_text())
    assert manifest["files"]["charts"] == []  # no empty charts
    assert not list(directory.glob("*.png"))
    assert summary["too_little_history"] and not summary["churn_known"]
    assert "Too little history for trends: 3 loaded days" in page
    assert f"Churn risk needs all 7 days {(day - dt.timedelta(days=6)).isoformat()}" in page
    assert "(D-7) is not loaded" in page
    assert f"Churn risk is not known for {day.isoformat()} yet" in page
    headline = {row[0]: row[1:] for row in tables(page)[0][1:]}
    assert number(headline["Companies"][0]) == 5  # the CRM companies (no orphan before day 5)
    assert number(headline["Companies at churn risk"][0]) is None
    assert "cid:" not in (directory / report_notebook.EMAIL_HTML).read_text()


def test_a_failing_cell_fails_the_render_with_that_cells_error(tmp_path: Path) -> None:
    warehouse = WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}")
    build_days(open_warehouse(warehouse), 1)
    notebook = broken_notebook(tmp_path / "broken.ipynb")
    with pytest.raises(report_notebook.ReportCellError) as raised:
        report_notebook.render_report(warehouse, tmp_path / "data", FIRST, notebook_path=notebook)
    message = str(raised.value)
    assert "ValueError: no usage table for 2026-09-01" in message
    assert "raise ValueError" in message  # names the cell by its first line
    directory = report_notebook.report_dir(tmp_path / "data", FIRST)
    assert (directory / report_notebook.FAILED_NOTEBOOK).exists()
    assert not (directory / report_notebook.MANIFEST).exists()
    assert not (directory / report_notebook.REPORT_HTML).exists()


def test_the_report_target_follows_the_data_version(sqlite_report: Rendered) -> None:
    target = targets.ReportTarget(sqlite_report.warehouse, sqlite_report.data_dir, DAY)
    assert target.exists()
    with sqlite_report.engine.connect() as connection:
        version = report_data.data_version(connection, DAY)
    assert sqlite_report.manifest["data_version"] == version
    assert not targets.ReportTarget(sqlite_report.warehouse, sqlite_report.data_dir, FIRST).exists()


# -- data-quality sources (no kernel) ----------------------------------------------------------------------


def test_data_quality_reads_validation_results_defensively(tmp_path: Path) -> None:
    directory = tmp_path / "validation" / f"date={DAY.isoformat()}"
    directory.mkdir(parents=True)
    (directory / "product_usage.json").write_text(
        json.dumps(
            {
                "dataset": "product_usage",
                "warnings": ["usage: 3 rows with events but no active users"],
                "checks": [{"check": "product_usage.row_drop", "status": "accepted"}],
            }
        )
    )
    (directory / "crm.json").write_text(json.dumps({"dataset": "crm", "warnings": ["crm: extra column"]}))
    (directory / "company_daily_activity.json").write_text("{not json")
    quality = report_data.data_quality(tmp_path, DAY)
    assert quality.source == "validation results"
    assert quality.warnings[0] == "crm: extra column"  # CRM first, then usage, then output
    assert quality.warnings[1] == "usage: 3 rows with events but no active users"
    assert "product_usage.row_drop failed and was accepted" in quality.warnings[2]
    assert quality.warnings[3].startswith("company_daily_activity.json: the validation results could not")


def test_data_quality_falls_back_to_the_crm_parser_then_to_none(tmp_path: Path) -> None:
    assert report_data.data_quality(tmp_path, DAY).source == "none recorded"
    source = tmp_path / "crm_{date}.csv"
    (tmp_path / f"crm_{DAY.isoformat()}.csv").write_text(
        "company_id,company_name,country,industry_tag,last_contact_at,segment\nC1,One,DE,saas,,smb\n"
    )
    crm_location.land_snapshot(str(source), tmp_path / "data", DAY)
    quality = report_data.data_quality(tmp_path / "data", DAY)
    assert quality.source == "CRM parser"
    assert any("segment" in warning for warning in quality.warnings)


def test_the_kernel_gets_the_warehouse_and_none_of_the_other_secrets(monkeypatch) -> None:
    monkeypatch.setenv("PRODUCT_API_CLIENT_SECRET", "api-secret")
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-secret")
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", "https://hooks.example.test/secret")
    monkeypatch.setenv("PGPASSWORD", "kept: libpq reads it")
    monkeypatch.setenv("MYSQL_PWD", "kept: the MySQL engine reads it")
    warehouse = WarehouseSettings("postgresql://reporter@db/warehouse", "raw", "marts")
    environment = report_notebook.kernel_environment(warehouse)
    assert environment[report_notebook.DATABASE_URL_ENV] == "postgresql://reporter@db/warehouse"
    assert environment[report_notebook.STG_SCHEMA_ENV] == "raw"
    assert environment[report_notebook.ANALYTICS_SCHEMA_ENV] == "marts"
    monkeypatch.setattr(report_notebook.os, "environ", environment)
    assert report_notebook.warehouse_from_environment() == WarehouseSettings(
        "postgresql://reporter@db/warehouse", "raw", "marts"
    )
    assert not {"PRODUCT_API_CLIENT_SECRET", "SMTP_PASSWORD", "PIPELINE_ALERT_WEBHOOK_URL"} & set(environment)
    assert environment["PGPASSWORD"] == "kept: libpq reads it"
    assert environment["MYSQL_PWD"] == "kept: the MySQL engine reads it"
    assert str(project.project_root()) in environment["PYTHONPATH"].split(":")


def test_the_kernel_opens_the_same_sqlite_file_as_a_run_from_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel runs in the report's folder: luigi.cfg's relative sqlite:///var/warehouse.db must not
    # become a new, empty database there.
    monkeypatch.chdir(tmp_path)
    environment = report_notebook.kernel_environment(WarehouseSettings("sqlite:///var/warehouse.db"))
    assert environment[report_notebook.DATABASE_URL_ENV] == f"sqlite:///{tmp_path / 'var' / 'warehouse.db'}"
    in_memory = report_notebook.kernel_environment(WarehouseSettings("sqlite://"))
    assert in_memory[report_notebook.DATABASE_URL_ENV] == "sqlite://"


def test_on_the_first_day_with_churn_risk_everyone_at_risk_is_new(rendered: Rendered) -> None:
    """D-1's churn risk is unknown: the last active day is looked up (none in the history here)."""
    first_known = FIRST + dt.timedelta(days=6)
    data = report_data.load_report_data(rendered.engine, first_known, rendered.data_dir)
    assert [(row["company_id"], row["last_active_date"], row["days_idle"]) for row in data.newly_at_risk] == [
        ("C000003", None, None),
        ("C000004", None, None),
    ]
    assert any("Churn risk was not known on 2026-09-06 (D-1)" in note for note in data.history_notes())
    assert data.recovered == []


def test_a_worker_forked_after_a_report_still_executes_its_own(tmp_path: Path) -> None:
    """Luigi's --workers N forks a process per task: a report executed earlier in the parent must not
    leave the child's notebook client waiting on a thread that did not survive the fork."""
    import os

    def run_once(name: str) -> str:
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print('{name}')")])
        executed = report_notebook.execute_notebook(
            notebook,
            working_dir=tmp_path,
            warehouse=WarehouseSettings("sqlite://"),
            timeout=60,
            failed_path=tmp_path / "x",
        )
        return executed.cells[0].outputs[0]["text"].strip()

    assert run_once("parent") == "parent"
    child = os.fork()
    if child == 0:
        code = 1
        try:
            code = 0 if run_once("child") == "child" else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    if waited == (0, 0):
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the forked worker's notebook hung")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
