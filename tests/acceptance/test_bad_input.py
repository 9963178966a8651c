"""The bad-input corpus (tests/data/, see its README) through the whole Luigi graph, on both backends.

Each case lands one input for 2026-11-20 on top of a loaded baseline day (2026-11-19), runs
``RunDaily`` with the local scheduler, and asserts the task that failed, the exact error, and that
``analytics.company_daily_activity`` and ``analytics.loaded_days`` are exactly as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import luigi
import luigi.configuration
import pytest
from conftest import BACKENDS, luigi_settings, make_warehouse, query, table_rows, warehouse_config

from pipeline import RunDaily, clock, datasets, files
from pipeline.quality import gates, store
from pipeline.quality.results import DataValidationError
from pipeline.sources import landing, usage_landing
from pipeline.sources.crm_snapshot import CrmSnapshotError, CrmSnapshotNotFound
from pipeline.sources.product_api import UsagePageError
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

DAY = dt.date(2026, 11, 20)
BASELINE = DAY - dt.timedelta(days=1)
DATA = Path(__file__).resolve().parent.parent / "data"
GOOD_CRM = "good_50_companies.csv"
GOOD_USAGE_ROWS = 40

FAILURES: list[tuple[str, BaseException]] = []


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _remember_failure(task: luigi.Task, error: BaseException) -> None:
    FAILURES.append((task.get_task_family(), error))


# -- a sandbox: its own data_dir and CRM folder, a shared warehouse with the baseline day loaded --------


def usage_rows(count: int) -> list[dict]:
    return [
        {"company_id": f"C{i:06d}", "active_users": (i * 7) % 13, "events": (i * 31) % 200}
        for i in range(1, count + 1)
    ]


def usage_page(day: dt.date, rows: list[dict]) -> bytes:
    return json.dumps({"date": day.isoformat(), "data": rows, "next_cursor": None}).encode()


class Sandbox:
    def __init__(self, root: Path, warehouse: WarehouseSettings) -> None:
        self.root, self.warehouse = root, warehouse
        self.data_dir, self.crm_dir = root / "data", root / "crm"
        self.crm_dir.mkdir(parents=True, exist_ok=True)
        self.settings = {
            "pipeline": {**warehouse_config(warehouse), "data_dir": str(self.data_dir)},
            "crm": {"source": str(self.crm_dir / "crm_{date}.csv")},
            "product_api": {"base_url": "http://127.0.0.1:9"},  # never called: every day is landed
            "validation": {"max_row_drop": "0.10"},
        }

    def crm_path(self, day: dt.date = DAY) -> Path:
        return self.crm_dir / f"crm_{day.isoformat()}.csv"

    def landed_crm(self, day: dt.date = DAY) -> Path:
        return landing.day_dir(self.data_dir, "crm", day) / f"crm_{day.isoformat()}.csv"

    def page_path(self, number: int, day: dt.date = DAY) -> Path:
        return landing.day_dir(self.data_dir, datasets.USAGE, day) / usage_landing.PAGE_NAME.format(
            number=number
        )

    def put_crm(self, name: str, day: dt.date = DAY) -> None:
        shutil.copyfile(DATA / "crm" / name, self.crm_path(day))

    def put_usage(self, pages: list[bytes], day: dt.date = DAY) -> None:
        """Land raw pages with their records and the manifest, as usage_landing.fetch_day lands them."""
        directory = landing.day_dir(self.data_dir, datasets.USAGE, day)
        metas, rows = [], 0
        for number, raw in enumerate(pages, start=1):
            files.write_atomic(self.page_path(number, day), raw)
            meta = {
                "page": number,
                "file": usage_landing.PAGE_NAME.format(number=number),
                "cursor": None if number == 1 else f"cursor-{number}",
                "bytes": len(raw),
                "sha256": files.sha256_bytes(raw),
                "fetched_at": clock.utc_timestamp(),
            }
            files.write_json_atomic(directory / usage_landing.PAGE_META_NAME.format(number=number), meta)
            metas.append(meta)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                rows += len(json.loads(raw)["data"])
        stamp = clock.utc_timestamp()
        manifest = {
            "dataset": datasets.USAGE,
            "date": day.isoformat(),
            "base_url": "tests/data",
            "page_size": 1000,
            "page_count": len(pages),
            "row_count": rows,
            "pages": metas,
            "fetched_at": stamp,
            "landing_id": stamp,
        }
        files.write_json_atomic(directory / landing.MANIFEST_NAME, manifest)

    def put_good_day(self, day: dt.date) -> None:
        self.put_crm(GOOD_CRM, day)
        self.put_usage([usage_page(day, usage_rows(GOOD_USAGE_ROWS))], day)

    def run(self, day: dt.date = DAY, **parameters) -> bool:
        FAILURES.clear()
        return luigi.build([RunDaily(date=day, **parameters)], local_scheduler=True, log_level="WARNING")

    def state(self) -> tuple[list, list]:
        """The whole mart (with record_loaded_at) and the record of loaded days."""
        engine = open_warehouse(self.warehouse)
        with engine.connect() as connection:
            loaded = connection.exec_driver_sql(
                query(connection, "SELECT * FROM {analytics}.loaded_days ORDER BY activity_date")
            ).all()
        return table_rows(engine, with_loaded_at=True), [tuple(map(str, row)) for row in loaded]

    def html(self, dataset: str) -> Path:
        return store.results_path(self.data_dir, DAY, dataset, ".html")


@pytest.fixture(scope="module", params=BACKENDS)
def baseline(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WarehouseSettings]:
    """A warehouse per backend with the baseline day loaded through the graph, shared by the module."""
    root = tmp_path_factory.mktemp(f"baseline-{request.param}")
    with make_warehouse(request.param, request, root) as warehouse:
        sandbox = Sandbox(root, warehouse)
        with luigi_settings(sandbox.settings):
            sandbox.put_good_day(BASELINE)
            assert sandbox.run(BASELINE), FAILURES
        yield warehouse


@pytest.fixture
def sandbox(baseline: WarehouseSettings, tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path, baseline)
    with luigi_settings(box.settings):
        yield box


def assert_fails(sandbox: Sandbox, task: str, error_type: type, message: str) -> BaseException:
    before = sandbox.state()
    assert not sandbox.run()
    assert [(family, type(error)) for family, error in FAILURES] == [(task, error_type)]
    error = FAILURES[0][1]
    assert str(error) == message
    assert sandbox.state() == before, "something of the bad day reached the analytics tables"
    return error


# -- CRM snapshots -----------------------------------------------------------------------------------


def _crm(problem: str, *, row: int | None = None, line: int | None = None, column: str | None = None):
    return (problem, row, line, column)


CRM_PARSER_CASES = {
    "empty.csv": _crm("the file is empty: expected a header row and one row per company"),
    "blank_lines_only.csv": _crm("the file is empty: expected a header row and one row per company"),
    "header_only.csv": _crm("the file has a header but no rows: a CRM snapshot is never empty"),
    "missing_company_id_column.csv": _crm(
        "missing required column company_id; the header has: company_name, country, industry_tag, "
        "last_contact_at",
        line=1,
        column="company_id",
    ),
    "missing_country_and_industry_columns.csv": _crm(
        "missing required columns country, industry_tag; the header has: company_id, company_name, "
        "last_contact_at",
        line=1,
        column="country",
    ),
    "duplicate_header_column.csv": _crm("duplicate column names in the header: country", line=1),
    "duplicate_company_id.csv": _crm(
        "duplicate company_id 'C000002' (first seen in row 2)", row=5, line=6, column="company_id"
    ),
    "duplicate_company_id_after_trimming.csv": _crm(
        "duplicate company_id 'C000003' (first seen in row 3)", row=6, line=7, column="company_id"
    ),
    "blank_company_id.csv": _crm("company_id is empty", row=3, line=4, column="company_id"),
    "semicolon_delimiter.csv": _crm(
        "missing required columns company_id, company_name, country, industry_tag, last_contact_at; "
        "the header has: company_id;company_name;country;industry_tag;last_contact_at "
        "(is the file comma-separated?)",
        line=1,
        column="company_id",
    ),
    "tab_delimiter.csv": _crm(
        "missing required columns company_id, company_name, country, industry_tag, last_contact_at; "
        "the header has: company_id\tcompany_name\tcountry\tindustry_tag\tlast_contact_at",
        line=1,
        column="company_id",
    ),
    "latin1_encoding.csv": _crm(
        "not UTF-8: byte 0xfc at offset 132 cannot be decoded (export the file as UTF-8)",
        row=2,
        line=3,
        column="company_name",
    ),
    "unterminated_quote.csv": _crm(
        "malformed CSV (check the quoting): ',' expected after '\"'", row=3, line=6
    ),
    "stray_quote.csv": _crm("malformed CSV (check the quoting): ',' expected after '\"'", row=2, line=3),
    "unquoted_comma_in_name.csv": _crm(
        "expected 5 fields like the header, found 6 (check the delimiter and the quoting)", row=4, line=5
    ),
    "too_few_fields.csv": _crm(
        "expected 5 fields like the header, found 3 (check the delimiter and the quoting)", row=2, line=3
    ),
    "unparseable_timestamp.csv": _crm(
        "cannot parse 'last Tuesday' as an ISO 8601 timestamp (e.g. 2026-11-20T14:03:00Z)",
        row=5,
        line=6,
        column="last_contact_at",
    ),
    "impossible_date.csv": _crm(
        "cannot parse '2026-02-30T10:00:00' as an ISO 8601 timestamp (e.g. 2026-11-20T14:03:00Z)",
        row=2,
        line=3,
        column="last_contact_at",
    ),
}


@pytest.mark.parametrize("name", sorted(CRM_PARSER_CASES))
def test_a_bad_crm_file_fails_staging_with_file_row_and_column(sandbox: Sandbox, name: str) -> None:
    problem, row, line, column = CRM_PARSER_CASES[name]
    sandbox.put_crm(name)
    sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
    where = [f"{sandbox.crm_path()} (landed as {sandbox.landed_crm()})"]
    if row is not None:
        where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
    elif line is not None:
        where.append(f"line {line}")
    if column is not None:
        where.append(f"column '{column}'")
    error = assert_fails(sandbox, "StageCrm", CrmSnapshotError, f"{', '.join(where)}: {problem}")
    assert (error.row, error.line, error.column) == (row, line, column)


def test_a_utf16_crm_file_is_named_not_utf8_at_line_1(sandbox: Sandbox) -> None:
    sandbox.put_crm("utf16_encoding.csv")
    sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
    before = sandbox.state()
    assert not sandbox.run()
    assert sandbox.state() == before
    [(task, error)] = FAILURES
    assert (task, type(error)) == ("StageCrm", CrmSnapshotError)
    assert "not UTF-8: byte 0xff at offset 0 cannot be decoded (it looks like UTF-16)" in str(error)
    assert "\x00" not in str(error) and error.line == 1 and error.column is None


def test_a_missing_crm_file_fails_the_fetch(sandbox: Sandbox) -> None:
    sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
    location = str(sandbox.crm_path())
    assert_fails(
        sandbox,
        "FetchCrmSnapshot",
        CrmSnapshotNotFound,
        f"{location}: CRM snapshot for 2026-11-20 not found at {location}",
    )


def test_a_40_percent_drop_of_crm_companies_fails_validation(sandbox: Sandbox) -> None:
    sandbox.put_crm("row_drop_40_percent.csv")
    sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
    assert_fails(
        sandbox,
        "ValidateCrm",
        DataValidationError,
        "CRM snapshot (crm) for 2026-11-20 failed validation: 1 check failed "
        f"(results: {sandbox.html('crm')})\n"
        "  - table [crm.row_drop] row count 30 is 40.0% below 50 on 2026-11-19 (the previous loaded day); "
        "the allowed drop is 10% (at least 45 rows)\n"
        "  If the drop is real, run the day again with --accept-row-drop (logged and recorded).",
    )
    results = store.read_results(sandbox.data_dir, DAY, "crm")
    assert results is not None and not results["success"]
    assert sandbox.html("crm").exists()


def test_crm_contacts_more_than_a_day_in_the_future_fail_validation(sandbox: Sandbox) -> None:
    sandbox.put_crm("last_contact_in_the_future.csv")
    sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
    assert_fails(
        sandbox,
        "ValidateCrm",
        DataValidationError,
        "CRM snapshot (crm) for 2026-11-20 failed validation: 1 check failed "
        f"(results: {sandbox.html('crm')})\n"
        "  - last_contact_at [crm.last_contact_at.not_in_future] last_contact_at is not in the future by "
        "more than a day (at most the snapshot date + 2 days, 00:00 UTC): 2 bad rows of 50 (4.0%) "
        "(allowed: max_value 2026-11-22T00:00:00), e.g. company_id C000010 "
        "(last_contact_at=2027-01-15T10:00:00), C000021 (last_contact_at=2026-11-25T00:00:01)",
    )


ACCEPTED_CRM = {
    "accepted_bom.csv": [],
    "accepted_crlf.csv": [],
    "accepted_extra_columns.csv": ["extra columns ignored: account_owner, tier"],
    "accepted_non_iso_country.csv": [
        "country [crm.country.iso_3166_alpha_2] country is an ISO 3166-1 alpha-2 code (warning only; "
        "empty is allowed): 3 bad rows of 50 (6.0%), e.g. company_id C000004 (country=Germany), "
        "C000008 (country=XX), C000012 (country=de)"
    ],
}


@pytest.mark.parametrize("name", sorted(ACCEPTED_CRM))
def test_awkward_but_valid_crm_files_load_with_their_warnings(sandbox: Sandbox, name: str) -> None:
    sandbox.put_crm(name)
    sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
    assert sandbox.run(), FAILURES
    warnings = store.warnings_for_day(sandbox.data_dir, DAY)
    assert len(warnings) == len(ACCEPTED_CRM[name])
    for warning, expected in zip(warnings, ACCEPTED_CRM[name], strict=True):
        assert warning.startswith("CRM snapshot 2026-11-20: ") and expected in warning
    with open_warehouse(sandbox.warehouse).connect() as connection:
        count = connection.exec_driver_sql(
            query(
                connection,
                "SELECT COUNT(*) FROM {analytics}.company_daily_activity WHERE activity_date = '2026-11-20'",
            )
        ).scalar()
        names = {
            row[0]
            for row in connection.exec_driver_sql(
                query(
                    connection,
                    "SELECT company_name FROM {analytics}.company_daily_activity "
                    "WHERE activity_date = '2026-11-20'",
                )
            )
        }
    assert count == 50
    assert {"Müller & Söhne, KG", '"Quoted" Holdings, Inc.', "Łukasiewicz Energy sp. z o.o."} <= names


# -- API pages -----------------------------------------------------------------------------------------


API_PARSER_CASES = {
    "not_json": (
        ["not_json.json"],
        "not valid JSON (Expecting value: line 1 column 1 (char 0)); the raw page is kept for inspection",
    ),
    "truncated": (
        ["truncated.json"],
        "not valid JSON (Expecting ',' delimiter: line 23 column 2 (char 333)); "
        "the raw page is kept for inspection",
    ),
    "not_an_object": (["not_an_object.json"], "expected a JSON object, got list"),
    "data_not_a_list": (["data_not_a_list.json"], "'data' must be a list, got dict"),
    "wrong_date": (["wrong_date.json"], "the page is for date '2026-11-19', not 2026-11-20"),
    "numeric_cursor": (["numeric_cursor.json"], "'next_cursor' must be a string or null"),
    "negative_count": (
        ["negative_count.json"],
        "row 6 (company_id 'C000006'): active_users must be a non-negative integer, got -3",
    ),
    "string_count": (
        ["string_count.json"],
        "row 3 (company_id 'C000003'): events must be a non-negative integer, got \"340\"",
    ),
    "float_count": (
        ["float_count.json"],
        "row 7 (company_id 'C000007'): active_users must be a non-negative integer, got 12.5",
    ),
    "boolean_count": (
        ["boolean_count.json"],
        "row 2 (company_id 'C000002'): events must be a non-negative integer, got true",
    ),
    "missing_field": (["missing_field.json"], "row 5: missing field(s) events"),
    "renamed_field": (
        ["renamed_field.json"],
        "row 1: missing field(s) active_users; unexpected field(s) activeUsers (schema drift?)",
    ),
    "null_company_id": (["null_company_id.json"], "row 4: company_id must be a non-empty string, got null"),
}


@pytest.mark.parametrize("case", sorted(API_PARSER_CASES))
def test_a_bad_api_page_fails_staging_and_stays_landed(sandbox: Sandbox, case: str) -> None:
    pages, problem = API_PARSER_CASES[case]
    sandbox.put_crm(GOOD_CRM)
    sandbox.put_usage([(DATA / "api" / page).read_bytes() for page in pages])
    separator = ", " if problem.startswith("row ") else ": "
    assert_fails(
        sandbox,
        "StageProductUsage",
        UsagePageError,
        f"usage page 1 of 2026-11-20 ({sandbox.page_path(1)}){separator}{problem}",
    )
    assert sandbox.page_path(1).read_bytes() == (DATA / "api" / pages[0]).read_bytes()


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        (
            ["duplicate_within_page.json"],
            "usage for 2026-11-20: company_id 'C000002' appears twice (in page 1); refusing to double count",
        ),
        (
            ["duplicate_across_pages-1.json", "duplicate_across_pages-2.json"],
            "usage for 2026-11-20: company_id 'C000018' appears twice (in page 1 and page 2); "
            "refusing to double count",
        ),
    ],
    ids=["within_a_page", "across_pages"],
)
def test_duplicate_company_ids_in_a_day_fail_staging(
    sandbox: Sandbox, pages: list[str], message: str
) -> None:
    sandbox.put_crm(GOOD_CRM)
    sandbox.put_usage([(DATA / "api" / page).read_bytes() for page in pages])
    assert_fails(sandbox, "StageProductUsage", UsagePageError, message)


ROW_DROP_HINT = "  If the drop is real, run the day again with --accept-row-drop (logged and recorded)."


def test_an_empty_api_day_never_passes_silently(sandbox: Sandbox) -> None:
    sandbox.put_crm(GOOD_CRM)
    sandbox.put_usage([(DATA / "api" / "empty_day.json").read_bytes()])
    assert_fails(
        sandbox,
        "ValidateProductUsage",
        DataValidationError,
        "product usage (product_usage) for 2026-11-20 failed validation: 2 checks failed "
        f"(results: {sandbox.html('product_usage')})\n"
        "  - table [product_usage.not_empty] The API day has at least one row: an empty day never passes "
        "silently: observed 0 rows\n"
        "  - table [product_usage.row_drop] row count 0 is 100.0% below 40 on 2026-11-19 (the previous "
        "loaded day); the allowed drop is 10% (at least 36 rows)\n" + ROW_DROP_HINT,
    )


def test_a_40_percent_drop_of_usage_rows_fails_validation(sandbox: Sandbox) -> None:
    sandbox.put_crm(GOOD_CRM)
    sandbox.put_usage([(DATA / "api" / "row_drop_40_percent.json").read_bytes()])
    assert_fails(
        sandbox,
        "ValidateProductUsage",
        DataValidationError,
        "product usage (product_usage) for 2026-11-20 failed validation: 1 check failed "
        f"(results: {sandbox.html('product_usage')})\n"
        "  - table [product_usage.row_drop] row count 24 is 40.0% below 40 on 2026-11-19 (the previous "
        "loaded day); the allowed drop is 10% (at least 36 rows)\n" + ROW_DROP_HINT,
    )


# -- the operator's override ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["crm", "product_usage"])
def test_accept_row_drop_loads_a_real_drop_and_records_it(sandbox: Sandbox, source: str) -> None:
    if source == "crm":
        sandbox.put_crm("row_drop_40_percent.csv")
        sandbox.put_usage([usage_page(DAY, usage_rows(GOOD_USAGE_ROWS))])
        accepted = {"crm", "company_daily_activity"}  # 50 -> 30 companies, so 50 -> 30 output rows
    else:
        sandbox.put_crm(GOOD_CRM)
        sandbox.put_usage([(DATA / "api" / "empty_day.json").read_bytes()])
        accepted = {"product_usage"}  # the output still has a row per CRM company
    assert not sandbox.run()
    assert sandbox.run(accept_row_drop=True), FAILURES

    with open_warehouse(sandbox.warehouse).connect() as connection:
        records = {row["dataset"]: row for row in gates.recorded_validations(connection, DAY)}
    assert set(records) == {"crm", "product_usage", "company_daily_activity"}
    assert {name for name, row in records.items() if row["row_drop_accepted"]} == accepted
    assert all(row["success"] for row in records.values())
    # The override is recorded with the runs that used it (the other input had passed the day before).
    assert all(records[name]["accept_row_drop"] for name in accepted)
    warnings = store.warnings_for_day(sandbox.data_dir, DAY)
    assert warnings and all("accepted by the operator (--accept-row-drop)" in text for text in warnings)
    for dataset in accepted:
        results = store.read_results(sandbox.data_dir, DAY, dataset)
        assert results["accept_row_drop"] and results["row_drop_accepted"] and results["success"]
