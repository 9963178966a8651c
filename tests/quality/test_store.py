"""Validation results on disk, and the data-quality history across days (validation/index.html): every
day from the first validated to the last, each dataset's latest verdict linking to its results page,
regenerated after each validation, safe when validations run at once, read in a real browser."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import company, load_day
from headless_chromium import dump_dom

from pipeline.quality import gates, store
from pipeline.quality.results import DataValidationError
from pipeline.reporting.rendering import offline_problems
from pipeline.sources.crm_snapshot import CrmSnapshot
from pipeline.warehouse import staging

DAY = dt.date(2026, 11, 20)


def document(day: dt.date, dataset: str, success: bool = True, warnings: int = 0, rows: int = 10) -> dict:
    return {
        "dataset": dataset,
        "date": day.isoformat(),
        "success": success,
        "row_count": rows,
        "failed_checks": 0 if success else 1,
        "failures": [] if success else ["table [crm.row_drop] row count ..."],
        "warnings": [f"warning {n}" for n in range(warnings)],
        "row_drop_accepted": False,
        "validated_at": "2026-11-21T00:10:00.000000Z",
    }


def write_result(data_dir: Path, doc: dict) -> None:
    """A day's result as save_results writes it (the JSON and a page), then the index update."""
    day = dt.date.fromisoformat(doc["date"])
    store.results_path(data_dir, day, doc["dataset"], ".html").parent.mkdir(parents=True, exist_ok=True)
    store.results_path(data_dir, day, doc["dataset"], ".html").write_text("<!DOCTYPE html><p>results</p>")
    store.results_path(data_dir, day, doc["dataset"]).write_text(json.dumps(doc))
    store.update_index(data_dir, doc)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[tuple[str, str]]] = {}
        self._row: str | None = None
        self._href: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("id"):
            self._row = attributes["id"]
            self.rows[self._row] = []
        if tag == "a" and self._row:
            self._href = attributes["href"]

    def handle_data(self, data) -> None:
        if self._href and self._row:
            self.rows[self._row].append((self._href, data))
            self._href = None


def test_the_index_lists_every_day_with_each_verdict_and_link(tmp_path: Path) -> None:
    write_result(tmp_path, document(DAY - dt.timedelta(days=3), "crm"))
    write_result(tmp_path, document(DAY, "crm", warnings=2))
    write_result(tmp_path, document(DAY, "product_usage", success=False))

    page = store.index_path(tmp_path).read_text(encoding="utf-8")
    links = Links()
    links.feed(page)
    # newest first, the two days in between shown without results
    assert list(links.rows) == [(DAY - dt.timedelta(days=n)).isoformat() for n in range(4)]
    assert links.rows["2026-11-20"] == [
        ("date=2026-11-20/crm.html", "passed"),
        ("date=2026-11-20/product_usage.html", "FAILED"),
    ]
    assert links.rows["2026-11-18"] == [] and "not validated" in page
    for href, _text in links.rows["2026-11-20"] + links.rows["2026-11-17"]:
        assert (store.index_path(tmp_path).parent / href).is_file()
    assert "10 rows, 2 warnings" in page and "1 failed" in page
    assert offline_problems(page) == []
    assert "2 validated days from 2026-11-17 to 2026-11-20; 1 with a failed check" in page


def test_a_later_validation_of_a_day_replaces_its_verdict(tmp_path: Path) -> None:
    write_result(tmp_path, document(DAY, "crm", success=False))
    write_result(tmp_path, document(DAY, "crm", success=True))
    index = json.loads((tmp_path / "validation" / store.INDEX_JSON).read_text())
    assert index["days"] == {"2026-11-20": {"crm": store.index_entry(document(DAY, "crm"))}}


def test_without_index_json_the_index_is_rebuilt_from_the_results(tmp_path: Path) -> None:
    write_result(tmp_path, document(DAY - dt.timedelta(days=1), "crm"))
    write_result(tmp_path, document(DAY, "crm"))
    (tmp_path / "validation" / store.INDEX_JSON).unlink()
    write_result(tmp_path, document(DAY, "company_daily_activity"))
    days = json.loads((tmp_path / "validation" / store.INDEX_JSON).read_text())["days"]
    assert sorted(days) == ["2026-11-19", "2026-11-20"]
    assert sorted(days["2026-11-20"]) == ["company_daily_activity", "crm"]
    (tmp_path / "validation" / "date=2026-11-19" / "crm.json").write_text("{ not json")
    store.rebuild_index(tmp_path)
    page = store.index_path(tmp_path).read_text()
    assert "unreadable results" in page


def _write_many(data_dir: str, dataset: str, count: int) -> None:
    for offset in range(count):
        write_result(Path(data_dir), document(DAY - dt.timedelta(days=offset), dataset))


def test_validations_at_once_do_not_drop_each_others_entries(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_many, args=(str(tmp_path), dataset, 15))
        for dataset in ("crm", "product_usage", "company_daily_activity")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    days = json.loads((tmp_path / "validation" / store.INDEX_JSON).read_text())["days"]
    assert len(days) == 15
    assert all(len(entries) == 3 for entries in days.values())


def test_a_real_validation_updates_the_index_and_chromium_shows_it(engine: sa.Engine, tmp_path: Path) -> None:
    crm = [company(f"C{i:06d}") for i in range(1, 6)]
    load_day(engine, DAY - dt.timedelta(days=1), crm, [])
    staging.stage_crm(engine, DAY, CrmSnapshot(source="test", companies=crm[:2]), "L1")
    data_dir = tmp_path / "data"
    with pytest.raises(DataValidationError):  # 2 of 5 companies: a row drop, which the index must show
        gates.validate_crm(engine, DAY, data_dir, landing_id="L1")
    page_url = store.index_path(data_dir).resolve().as_uri()

    dom = dump_dom(page_url, tmp_path / "profile")

    row = re.search(r'<tr id="2026-11-20">(.*?)</tr>', dom, re.S).group(1)
    assert "2026-11-20 Fri" in row
    link = re.search(r'<a class="failed" href="([^"]+)">FAILED</a>', row)
    assert link, row
    target = Path(urllib.parse.urlsplit(urllib.parse.urljoin(page_url, link.group(1))).path)
    assert target == store.results_path(data_dir, DAY, "crm", ".html").resolve()
    assert "row drop" in target.read_text()
