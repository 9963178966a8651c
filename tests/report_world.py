"""The report world shared by the report and e-mail tests: ten hand-made days with one of everything the
churn report shows, rendered once per backend and module, and readers for what the report says.

A company (named like an HTML attack) becomes at risk on D, one recovers on D, one is at risk all along,
there are orphans and a data-quality warning. Expected numbers come from direct SQL on the table
(:func:`direct_totals`), never from the report's own queries.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
from conftest import BACKENDS, company, load_day, make_warehouse, query

from pipeline.reporting import notebook as report_notebook
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

FIRST = dt.date(2026, 9, 1)
DAY = FIRST + dt.timedelta(days=9)  # D: ten loaded days, so churn risk is known on D-1 and D
SCRIPT_NAME = '<script>alert("pwned")</script> & Sons'
BOLD_NAME = "Comeback <b>SA</b>"
WARNING = "crm: country 'X<img src=x onerror=alert(1)>' of C000004 is not ISO 3166-1 alpha-2"
COMPANIES = [
    company("C000001", SCRIPT_NAME, "DE", "software"),  # active D-9 .. D-7, then silent: newly at risk on D
    company("C000002", "Steady Ltd", "GB", "fintech"),  # active every day
    company("C000003", BOLD_NAME, "FR", None),  # silent until D-1, active on D: recovered on D
    company("C000004", 'Dormant "Quote" GmbH', None, "retail"),  # never active: at risk from D-3 on
    company("C000005", "Weekly Co", "US", "software"),  # active on D-9 and D-2
]


def usage_of(index: int) -> list[tuple[str, int, int]]:
    """The API rows of day FIRST + index."""
    rows = [("C000002", 10 + index, 100 + index)]
    if index <= 2:
        rows.append(("C000001", 4, 40))
    if index == 9:
        rows += [("C000003", 3, 9), ("C900001", 1, 1)]
    if index in (0, 7):
        rows.append(("C000005", 2, 5))
    if index >= 5:
        rows.append(("C900002", 2, 7))
    return rows


def build_days(engine: sa.Engine, count: int) -> None:
    for index in range(count):
        load_day(engine, FIRST + dt.timedelta(days=index), COMPANIES, usage_of(index))


def write_validation_warning(data_dir: Path, day: dt.date) -> None:
    """A validation result as the quality gates keep it (pipeline.validation), with one warning."""
    directory = data_dir / "validation" / f"date={day.isoformat()}"
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "dataset": "crm",
        "date": day.isoformat(),
        "success": True,
        "warnings": [WARNING],
        "checks": [],
    }
    (directory / "crm.json").write_text(json.dumps(document))


@dataclass
class Rendered:
    backend: str
    warehouse: WarehouseSettings
    data_dir: Path
    manifest: dict

    @property
    def directory(self) -> Path:
        return report_notebook.report_dir(self.data_dir, DAY)

    @property
    def html(self) -> str:
        return (self.directory / report_notebook.REPORT_HTML).read_text(encoding="utf-8")

    @property
    def email_html(self) -> str:
        return (self.directory / report_notebook.EMAIL_HTML).read_text(encoding="utf-8")

    @property
    def summary(self) -> dict:
        return json.loads((self.directory / report_notebook.SUMMARY).read_text())

    @property
    def engine(self) -> sa.Engine:
        return open_warehouse(self.warehouse)


def render_world(backend: str, warehouse: WarehouseSettings, root: Path) -> Rendered:
    build_days(open_warehouse(warehouse), 10)
    data_dir = root / "data"
    write_validation_warning(data_dir, DAY)
    manifest = report_notebook.render_report(warehouse, data_dir, DAY)
    return Rendered(backend, warehouse, data_dir, manifest)


def _report(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(f"report-{backend}")
    with make_warehouse(backend, request, root) as warehouse:
        yield render_world(backend, warehouse, root)


@pytest.fixture(scope="module")
def sqlite_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    yield from _report("sqlite", request, tmp_path_factory)


@pytest.fixture(scope="module")
def postgres_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    yield from _report("postgres", request, tmp_path_factory)


@pytest.fixture(scope="module")
def mariadb_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    yield from _report("mariadb", request, tmp_path_factory)


@pytest.fixture(scope="module", params=BACKENDS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """The report of DAY, rendered once per backend."""
    return request.getfixturevalue(f"{request.param}_report")


# -- reading what the report says ----------------------------------------------------------------------


class _Tables(HTMLParser):
    """The text of every table cell: [[row cells], ...] per table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def number(text: str) -> int | None:
    """'1,234' -> 1234; '+2 (+3.4%)' -> 2; an em dash -> None."""
    match = re.match(r"^\s*([+-]?[\d,]+)", text)
    return int(match.group(1).replace(",", "")) if match else None


def direct_totals(engine: sa.Engine, day: dt.date) -> dict[str, int | None]:
    """The headline numbers straight from analytics.company_daily_activity (not the report's SQL)."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.text(
                query(
                    connection,
                    "SELECT COUNT(*), SUM(CASE WHEN active_users > 0 THEN 1 ELSE 0 END), SUM(active_users), "
                    "SUM(events), SUM(CASE WHEN is_churn_risk THEN 1 ELSE 0 END), COUNT(is_churn_risk) "
                    "FROM {analytics}.company_daily_activity WHERE activity_date = :day",
                )
            ).bindparams(sa.bindparam("day", day, type_=sa.Date()))
        ).one()
    companies, active_companies, users, events, at_risk, churn_known = (int(value or 0) for value in row)
    if companies == 0:
        return dict.fromkeys(("companies", "active_companies", "active_users", "events", "at_risk"))
    return {
        "companies": companies,
        "active_companies": active_companies,
        "active_users": users,
        "events": events,
        "at_risk": at_risk if churn_known else None,
    }


LABELS = {
    "companies": "Companies",
    "active_companies": "Active companies (1+ active user)",
    "active_users": "Active users",
    "events": "Events",
    "at_risk": "Companies at churn risk",
}


def change(now: int | None, before: int | None) -> int | None:
    return None if now is None or before is None else now - before


def broken_notebook(path: Path) -> Path:
    """The report notebook with a cell that raises right after the parameters."""
    notebook = nbformat.read(report_notebook.default_notebook(), as_version=4)
    position = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    notebook.cells.insert(
        position + 1, nbformat.v4.new_code_cell('raise ValueError(f"no usage table for {report_date}")')
    )
    nbformat.write(notebook, path)
    return path
