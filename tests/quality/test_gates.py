"""Data-quality gates: the suites as files, row-drop checks, the output check inside the merge, results."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PROJECT_ROOT, company, load_day, query, table_rows

from pipeline import project
from pipeline.orchestration import targets
from pipeline.orchestration.tasks import MergeDay, ValidateCrm, ValidateProductUsage
from pipeline.quality import gates, runner, store, suites
from pipeline.quality.results import DataValidationError, ValidationOutcome
from pipeline.quality.runner import SuiteError
from pipeline.sources.crm_snapshot import CrmSnapshot
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

DAY = dt.date(2026, 11, 20)
BEFORE = DAY - dt.timedelta(days=1)


def companies(count: int, **overrides) -> list:
    return [company(f"C{i:06d}", **overrides) for i in range(1, count + 1)]


def stage(engine: sa.Engine, day: dt.date, crm: list, usage: list, landing_id: str = "L1") -> None:
    staging.stage_crm(engine, day, CrmSnapshot(source="test", companies=crm), landing_id)
    staging.stage_usage(engine, day, usage, "test", landing_id)


def loaded_days(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query(connection, "SELECT * FROM {analytics}.loaded_days ORDER BY activity_date")
        ).all()
    return [tuple(map(str, row)) for row in rows]


# -- suites as files -----------------------------------------------------------------------------------


def test_importing_the_pipeline_does_not_import_great_expectations() -> None:
    code = "import pipeline, sys; assert 'great_expectations' not in sys.modules, 'imported GE'"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True, capture_output=True)


def test_the_suite_files_are_exactly_what_the_rules_generate(tmp_path: Path, capsys) -> None:
    assert suites.stale_files() == {}
    assert suites.main(["--check"]) == 0

    shutil.copytree(project.expectations_dir(), tmp_path, dirs_exist_ok=True)
    suite = json.loads((tmp_path / "product_usage.json").read_text())
    suite["expectations"] = suite["expectations"][:-1]  # someone deleted the row-drop rule by hand
    (tmp_path / "product_usage.json").write_text(json.dumps(suite, indent=2) + "\n")
    capsys.readouterr()
    assert suites.main(["--check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("+") and '"product_usage.row_drop"' in line for line in out.splitlines())
    assert "1 suite file(s) differ" in out
    assert suites.main(["--write", "--dir", str(tmp_path)]) == 0
    assert suites.stale_files(tmp_path) == {}


def test_every_rule_of_the_issue_is_in_the_suites() -> None:
    checks = {
        dataset: {item["meta"]["check"]: item for item in json.loads(path.read_text())["expectations"]}
        for dataset, path in (
            (name, project.expectations_dir() / file) for name, file in suites.SUITE_FILES.items()
        )
    }
    assert {
        "crm.company_id.exists",
        "crm.company_id.not_null",
        "crm.company_id.unique",
        "crm.country.iso_3166_alpha_2",
        "crm.last_contact_at.parseable",
        "crm.last_contact_at.not_in_future",
        "crm.not_empty",
        "crm.row_drop",
    } <= set(checks["crm"])
    assert checks["crm"]["crm.country.iso_3166_alpha_2"]["severity"] == "warning"
    assert len(checks["crm"]["crm.country.iso_3166_alpha_2"]["kwargs"]["value_set"]) == 249
    assert {
        "product_usage.company_id.unique",
        "product_usage.active_users.integer",
        "product_usage.events.non_negative",
        "product_usage.not_empty",
        "product_usage.row_drop",
    } <= set(checks["product_usage"])
    assert {
        "company_daily_activity.primary_key.unique",
        "company_daily_activity.7d_active_users.at_least_active_users",
        "company_daily_activity.is_churn_risk.consistent_with_7d_active_users",
        "company_daily_activity.row_count.crm_plus_orphans",
        "company_daily_activity.row_drop",
    } <= set(checks["company_daily_activity"])
    for dataset, by_check in checks.items():
        row_drop = by_check[f"{dataset}.row_drop"]
        assert row_drop["type"] == "expect_table_row_count_to_be_between"
        assert row_drop["kwargs"]["min_value"] == {"$PARAMETER": "min_row_count"}
        assert row_drop["meta"]["override"] == "accept_row_drop"


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "expect_column_values_to_be_between", "kwargs": {"min_value": 0}},  # no column
        {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "events"}},
    ],
    ids=["missing_column", "unknown_expectation"],
)
def test_a_suite_file_with_a_rule_great_expectations_cannot_run_is_refused(tmp_path: Path, broken) -> None:
    shutil.copytree(project.expectations_dir(), tmp_path, dirs_exist_ok=True)
    suite = json.loads((tmp_path / "product_usage.json").read_text())
    suite["expectations"].append(broken)
    (tmp_path / "product_usage.json").write_text(json.dumps(suite))
    with pytest.raises(SuiteError, match=f"{tmp_path / 'product_usage.json'}.* great-expectations 1.24.1"):
        runner.load_suite("product_usage", tmp_path)


@pytest.mark.parametrize(
    ("previous", "threshold", "expected"),
    [
        (None, 0.10, 0),
        (100, 0.10, 90),
        (101, 0.10, 91),
        (50, 0.10, 45),
        (7, 0.10, 7),
        (40, 0.25, 30),
        (9, 0.0, 9),
    ],
)
def test_min_row_count_allows_a_drop_of_exactly_the_threshold(previous, threshold, expected) -> None:
    assert runner.min_row_count(previous, threshold) == expected


# -- row drop against the previous loaded day ------------------------------------------------------------


def test_the_first_day_has_no_previous_count_and_passes(engine: sa.Engine, tmp_path: Path) -> None:
    stage(engine, DAY, companies(20), [("C000001", 1, 2)])
    outcome = gates.validate_crm(engine, DAY, tmp_path, landing_id="L1")
    assert (outcome.success, outcome.previous_row_count, outcome.min_row_count) == (True, None, 0)
    results = store.read_results(tmp_path, DAY, "crm")
    assert results["previous_row_count"] is None and results["parameters"]["min_row_count"] == 0
    assert results["landing_id"] == "L1" and results["great_expectations_result"]["success"]
    assert ValidationOutcome.from_json(results).checks == outcome.checks
    assert "no loaded day before 2026-11-20" in outcome.describe(
        next(check for check in outcome.checks if check.check == "crm.row_drop")
    )


@pytest.mark.parametrize(
    ("today", "threshold", "passes"), [(18, 0.10, True), (17, 0.10, False), (17, 0.2, True)]
)
def test_a_drop_beyond_the_threshold_fails_against_the_previous_loaded_day(
    engine: sa.Engine, tmp_path: Path, today: int, threshold: float, passes: bool
) -> None:
    load_day(engine, BEFORE - dt.timedelta(days=3), companies(5), [])  # an older day: not the baseline
    load_day(engine, BEFORE, companies(20), [(f"C{i:06d}", 1, 1) for i in range(1, 11)])
    stage(engine, DAY, companies(today), [(f"C{i:06d}", 1, 1) for i in range(1, 10)])
    if passes:
        gates.validate_crm(engine, DAY, tmp_path, landing_id="L1", max_row_drop=threshold)
        return
    with pytest.raises(DataValidationError) as caught:
        gates.validate_crm(engine, DAY, tmp_path, landing_id="L1", max_row_drop=threshold)
    assert str(caught.value).splitlines()[1] == (
        "  - table [crm.row_drop] row count 17 is 15.0% below 20 on 2026-11-19 (the previous loaded day); "
        "the allowed drop is 10% (at least 18 rows)"
    )
    assert caught.value.outcome.failures[0].observed_value == 17
    # usage: 10 -> 9 rows is exactly 10%: passes
    gates.validate_product_usage(engine, DAY, tmp_path, landing_id="L1", max_row_drop=threshold)
    with engine.connect() as connection:
        records = {row["dataset"]: row for row in gates.recorded_validations(connection, DAY)}
    assert not records["crm"]["success"] and records["crm"]["failed_checks"] == 1
    assert records["product_usage"]["success"] and records["product_usage"]["previous_row_count"] == 10


def test_accepting_a_drop_records_it_and_warns(engine: sa.Engine, tmp_path: Path) -> None:
    load_day(engine, BEFORE, companies(20), [])
    stage(engine, DAY, companies(10), [])
    outcome = gates.validate_crm(engine, DAY, tmp_path, landing_id="L1", accept_row_drop=True)
    assert outcome.success and outcome.row_drop_accepted
    assert [check.status for check in outcome.checks if check.check == "crm.row_drop"] == ["accepted"]
    assert store.warnings_for_day(tmp_path, DAY) == [
        "CRM snapshot 2026-11-20: accepted by the operator (--accept-row-drop): table [crm.row_drop] row "
        "count 10 is 50.0% below 20 on 2026-11-19 (the previous loaded day); the allowed drop is 10% "
        "(at least 18 rows)"
    ]


def test_a_staged_timestamp_that_does_not_parse_fails_with_the_value(tmp_path: Path) -> None:
    # SQLite stores timestamps as text: a hand edit (or another writer) can leave one that does not parse.
    engine = open_warehouse(WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}"))
    stage(engine, DAY, companies(5, last_contact_at=dt.datetime(2026, 11, 19, 8)), [])
    with engine.begin() as connection:
        connection.exec_driver_sql(
            query(
                connection,
                "UPDATE {stg}.crm_daily SET last_contact_at = 'yesterday' WHERE company_id = 'C000004'",
            )
        )
    with pytest.raises(DataValidationError) as caught:
        gates.validate_crm(engine, DAY, tmp_path, landing_id="L1")
    assert str(caught.value).splitlines()[1] == (
        "  - last_contact_at_unparseable [crm.last_contact_at.parseable] last_contact_at, where given, "
        "parses as a timestamp (last_contact_at_unparseable holds the values as loaded that do not): "
        "1 bad row of 5 (20.0%), e.g. company_id C000004 (last_contact_at_unparseable=yesterday)"
    )


# -- the output, inside the merge's transaction ------------------------------------------------------------


CORRUPTIONS = {
    "7d_below_active_users": (
        "UPDATE {analytics}.company_daily_activity SET \"7d_active_users\" = 0 WHERE company_id = 'C000002'",
        [
            "  - 7d_active_users, active_users "
            "[company_daily_activity.7d_active_users.at_least_active_users] 7d_active_users >= "
            "active_users (the 7-day sum includes the day): 1 bad row of 21 (4.8%), e.g. company_id "
            "C000002 (7d_active_users=0, active_users=3)"
        ],
    ),
    "churn_risk_with_usage": (
        "UPDATE {analytics}.company_daily_activity SET is_churn_risk = TRUE WHERE company_id = 'C000002'",
        [
            "  - 7d_active_users [company_daily_activity.is_churn_risk.consistent_with_7d_active_users] "
            "is_churn_risk TRUE implies 7d_active_users = 0: 1 bad row of 1 (100.0%), e.g. company_id "
            "C000002 (7d_active_users=5)",
            "  - events [company_daily_activity.is_churn_risk.consistent_with_events] is_churn_risk TRUE "
            "implies no events on the day: 1 bad row of 1 (100.0%), e.g. company_id C000002 (events=4)",
        ],
    ),
    "a_row_lost": (
        "DELETE FROM {analytics}.company_daily_activity WHERE company_id = 'C000005'",
        [
            "  - table [company_daily_activity.row_count.crm_plus_orphans] One row per company of the "
            "effective CRM snapshot plus one per orphan (a company with usage that the snapshot does not "
            "know), counted from staging (expected_row_count): observed 20 rows, expected 21 "
            "(20 CRM companies + 1 orphans)"
        ],
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_bad_merge_result_is_rolled_back(engine: sa.Engine, tmp_path: Path, corruption: str) -> None:
    statement, lines = CORRUPTIONS[corruption]
    load_day(engine, BEFORE, companies(20), [("C000002", 2, 2)])
    stage(engine, DAY, companies(20), [("C000002", 3, 4), ("C000007", 1, 1), ("C900001", 1, 9)])
    before = table_rows(engine, with_loaded_at=True), loaded_days(engine)
    validator = gates.output_validator(tmp_path)

    def corrupt_then_validate(connection, result) -> None:
        connection.exec_driver_sql(
            query(connection, statement)
        )  # a bug in the merge, as the output suite would see it
        validator(connection, result)

    with pytest.raises(DataValidationError) as caught:
        merge.merge_day(engine, DAY, before_commit=corrupt_then_validate)
    html = store.results_path(tmp_path, DAY, "company_daily_activity", ".html")
    assert str(caught.value).splitlines() == [
        "analytics.company_daily_activity (company_daily_activity) for 2026-11-20 failed validation: "
        f"{len(lines)} check{'s' if len(lines) > 1 else ''} failed (results: {html})",
        *lines,
    ]
    assert (table_rows(engine, with_loaded_at=True), loaded_days(engine)) == before
    with engine.connect() as connection:
        assert gates.recorded_validations(connection, DAY) == []
    assert store.read_results(tmp_path, DAY, "company_daily_activity")["success"] is False


def test_a_good_merge_commits_with_its_output_verdict(engine: sa.Engine, tmp_path: Path) -> None:
    load_day(engine, BEFORE, companies(20), [("C000002", 2, 2)])
    stage(engine, DAY, companies(20), [("C000002", 3, 4), ("C900001", 1, 9)])
    result = merge.merge_day(engine, DAY, before_commit=gates.output_validator(tmp_path))
    assert result.output_rows == 21
    with engine.connect() as connection:
        [record] = gates.recorded_validations(connection, DAY)
    assert (record["dataset"], bool(record["success"]), record["row_count"]) == (
        "company_daily_activity",
        True,
        21,
    )
    assert (record["previous_row_count"], record["min_row_count"]) == (20, 18)
    results = store.read_results(tmp_path, DAY, "company_daily_activity")
    assert results["context"] == {
        "crm_snapshot_date": "2026-11-20",
        "crm_companies": 20,
        "orphans": 1,
        "recomputed_days": ["2026-11-20"],
    }


# -- results on disk -----------------------------------------------------------------------------------


def test_the_html_results_are_self_contained_and_escaped(engine: sa.Engine, tmp_path: Path) -> None:
    crm = companies(3)
    crm[1] = company("C000002", country="<script>alert(1)</script>")
    stage(engine, DAY, crm, [])
    outcome = gates.validate_crm(engine, DAY, tmp_path, landing_id="L1")
    page = Path(outcome.html_path).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "PASSED" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    for remote in ("http://", "https://", "<link", "src="):
        assert remote not in page
    assert Path(outcome.json_path).parent == tmp_path / "validation" / "date=2026-11-20"
    document = json.loads(Path(outcome.json_path).read_text(encoding="utf-8"))
    assert document["warnings"] == outcome.warnings and len(outcome.warnings) == 1


def test_a_verdict_counts_only_for_the_landing_it_validated(engine: sa.Engine, tmp_path: Path) -> None:
    class Staged:
        landing = "L1"

        def staged_landing_id(self) -> str:
            return self.landing

    staged = Staged()
    target = targets.ValidatedTarget(tmp_path, "crm", DAY, staged)
    assert not target.exists() and store.warnings_for_day(tmp_path, DAY) == []
    stage(engine, DAY, companies(3), [])
    gates.validate_crm(engine, DAY, tmp_path, landing_id="L1")
    assert target.exists()
    staged.landing = "L2"  # a refresh staged a new landing: validate again
    assert not target.exists()
    future = company("C000003", last_contact_at=dt.datetime(2027, 1, 1))
    stage(engine, DAY, [*companies(2), future], [], landing_id="L2")
    with pytest.raises(DataValidationError, match=r"crm\.last_contact_at\.not_in_future"):
        gates.validate_crm(engine, DAY, tmp_path, landing_id="L2")
    assert not target.exists()


def test_accept_row_drop_on_the_command_line_reaches_every_gate() -> None:
    import luigi.task
    from luigi.cmdline_parser import CmdlineParser

    with CmdlineParser.global_instance(["RunDaily", "--date", "2026-11-20", "--accept-row-drop"]) as parser:
        task = parser.get_task_obj()
    merge = next(t for t in luigi.task.flatten(task.requires()) if isinstance(t, MergeDay))
    assert merge.accept_row_drop
    gates = merge.requires()
    assert isinstance(gates["crm"], ValidateCrm) and isinstance(gates["usage"], ValidateProductUsage)
    assert gates["crm"].accept_row_drop and gates["usage"].accept_row_drop


def test_row_drop_baseline_on_the_command_line_reaches_every_gate() -> None:
    import luigi.task
    from luigi.cmdline_parser import CmdlineParser

    argv = ["RunDaily", "--date", "2026-11-20", "--validation-row-drop-baseline", "same_weekday"]
    with CmdlineParser.global_instance(argv) as parser:
        task = parser.get_task_obj()
        merge = next(t for t in luigi.task.flatten(task.requires()) if isinstance(t, MergeDay))
        gates = merge.requires()
        for gate in (merge, gates["crm"], gates["usage"]):
            assert gate.validation_settings()["row_drop_baseline"] == "same_weekday"


# -- row-drop baselines: the message names the days compared ---------------------------------------------

WEDNESDAY = dt.date(2026, 11, 25)


def test_a_drop_against_the_same_weekday_names_that_day(engine: sa.Engine, tmp_path: Path) -> None:
    load_day(
        engine, WEDNESDAY - dt.timedelta(weeks=1), companies(20), [(f"C{i:06d}", 1, 1) for i in range(1, 21)]
    )
    load_day(
        engine, WEDNESDAY - dt.timedelta(days=1), companies(20), [(f"C{i:06d}", 1, 1) for i in range(1, 9)]
    )
    stage(engine, WEDNESDAY, companies(20), [(f"C{i:06d}", 1, 1) for i in range(1, 11)])
    # against the day before (8 rows) 10 rows is a rise; against last Wednesday (20) a 50% drop
    gates.validate_product_usage(engine, WEDNESDAY, tmp_path, landing_id="L1")
    with pytest.raises(DataValidationError) as caught:
        gates.validate_product_usage(
            engine, WEDNESDAY, tmp_path, landing_id="L1", row_drop_baseline="same_weekday"
        )
    assert str(caught.value).splitlines()[1] == (
        "  - table [product_usage.row_drop] row count 10 is 50.0% below 20 on 2026-11-18 (the same weekday, "
        "a Wednesday, a week before; row_drop_baseline = same_weekday); the allowed drop is 10% "
        "(at least 18 rows)"
    )
    results = store.read_results(tmp_path, WEDNESDAY, "product_usage")
    assert (results["baseline"], results["baseline_days"]) == ("same_weekday", ["2026-11-18"])
    with engine.connect() as connection:
        [record] = [
            r for r in gates.recorded_validations(connection, WEDNESDAY) if r["dataset"] == "product_usage"
        ]
    assert (str(record["previous_date"]), record["previous_row_count"]) == ("2026-11-18", 20)


def test_a_drop_against_the_trailing_median_lists_its_days(engine: sa.Engine, tmp_path: Path) -> None:
    for back, count in zip(range(3, 0, -1), (12, 30, 11), strict=True):
        load_day(
            engine,
            WEDNESDAY - dt.timedelta(days=back),
            companies(20),
            [(f"C{i:06d}", 1, 1) for i in range(1, count + 1)],
        )
    stage(engine, WEDNESDAY, companies(20), [(f"C{i:06d}", 1, 1) for i in range(1, 10)])
    with pytest.raises(DataValidationError) as caught:
        gates.validate_product_usage(
            engine, WEDNESDAY, tmp_path, landing_id="L1", row_drop_baseline="trailing_median"
        )
    assert str(caught.value).splitlines()[1] == (
        "  - table [product_usage.row_drop] row count 9 is 25.0% below 12 (the median of the 3 loaded days "
        "before 2026-11-25: 2026-11-22, 2026-11-23, 2026-11-24; row_drop_baseline = trailing_median); "
        "the allowed drop is 10% (at least 11 rows)"
    )


def test_without_a_loaded_same_weekday_the_check_passes_and_says_so(
    engine: sa.Engine, tmp_path: Path
) -> None:
    load_day(engine, WEDNESDAY - dt.timedelta(days=1), companies(20), [])
    stage(engine, WEDNESDAY, companies(5), [])
    outcome = gates.validate_crm(
        engine, WEDNESDAY, tmp_path, landing_id="L1", row_drop_baseline="same_weekday"
    )
    assert outcome.success and outcome.previous_row_count is None and outcome.min_row_count == 0
    row_drop = next(check for check in outcome.checks if check.check == "crm.row_drop")
    assert outcome.describe(row_drop) == (
        "table [crm.row_drop] row count 5; no loaded Wednesday in the 4 weeks before 2026-11-25 (2026-11-18, "
        "2026-11-11, 2026-11-04, 2026-10-28) to compare with (row_drop_baseline = same_weekday): the check "
        "passes without a baseline"
    )


def _halve_crm_file(world, day: dt.date) -> None:
    import csv

    path = world.crm_dir / f"crm_{day.isoformat()}.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows[: 1 + (len(rows) - 1) // 2])


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_luigi_run_compares_with_the_configured_baseline(world) -> None:
    """A CRM export that is small every Wednesday: previous_day fails the second Wednesday, same_weekday
    (set in the config, as an operator would) passes it."""
    from conftest import luigi_settings

    first_wednesday, tuesday, wednesday = (
        WEDNESDAY - dt.timedelta(weeks=1),
        WEDNESDAY - dt.timedelta(days=1),
        WEDNESDAY,
    )
    world.write_crm(first_wednesday, wednesday)
    _halve_crm_file(world, first_wednesday)
    _halve_crm_file(world, wednesday)
    assert world.run(MergeDay(date=first_wednesday), MergeDay(date=tuesday))
    assert not world.run(MergeDay(date=wednesday))  # previous_day: half of Tuesday's companies
    crm = store.read_results(world.data_dir, wednesday, "crm")
    assert not crm["success"] and crm["baseline_days"] == [tuesday.isoformat()]
    with luigi_settings({"validation": {"row_drop_baseline": "same_weekday"}}):
        assert world.run(MergeDay(date=wednesday))
    crm = store.read_results(world.data_dir, wednesday, "crm")
    assert crm["success"] and (crm["baseline"], crm["baseline_days"]) == ("same_weekday", ["2026-11-18"])


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_process_killed_while_validating_does_not_block_the_next_validation(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """A Luigi task process (forked) killed by kill -9 in the middle of a validation must not leave a
    lock behind that every later validation of the run waits for: GE's tqdm bars share their default
    lock with forked processes."""
    import tqdm

    runner._gx()
    tqdm.tqdm.get_lock()  # made once in this process, as any validation before the fork does
    child = os.fork()
    if child == 0:  # the task process: dies holding the progress-bar lock, as kill -9 mid-validation does
        tqdm.tqdm.get_lock().acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)
    stage(engine, DAY, companies(5), [("C000001", 1, 2)])
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.update(
            result=gates.validate_product_usage(engine, DAY, tmp_path, landing_id="L1")
        ),
        daemon=True,
    )
    worker.start()
    worker.join(120)
    assert "result" in outcome, "the validation waited for the lock of a killed process"
    assert outcome["result"].success
