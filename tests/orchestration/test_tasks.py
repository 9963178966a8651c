"""The Luigi task graph end to end: CRM files + the simulated API over loopback -> the analytics table.

Expected values come from an oracle written here from docs/contract.md section 4 alone, fed by the same seeded
generator the CRM files and the simulator use, never from the pipeline's own SQL.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from conftest import WORLD_COMPANIES, WORLD_SEED, PipelineWorld, query, table_rows

from devtools.sample_data import CompanyUniverse
from pipeline import FetchCrmSnapshot, FetchProductUsage, MergeDay, RunDaily
from pipeline.sources.crm_snapshot import parse_timestamp
from pipeline.sources.landing import prior_versions
from pipeline.warehouse.sql import normalise_value

START = dt.date(2026, 10, 1)


def expected_table(loaded_days: list[dt.date]) -> list[tuple]:
    """docs/contract.md section 4 in Python: rows, zeros, 7-calendar-day window and churn for the days."""
    universe = CompanyUniverse(WORLD_COMPANIES, WORLD_SEED)
    loaded = set(loaded_days)
    usage = {day: {row["company_id"]: row for row in universe.usage_rows(day)} for day in loaded}
    rows = []
    for day in sorted(loaded):
        crm = {row["company_id"]: row for row in universe.crm_rows(day)}
        window = [day - dt.timedelta(days=back) for back in range(7)]
        for company_id in sorted(set(crm) | set(usage[day])):
            info = crm.get(company_id)
            today = usage[day].get(company_id, {"active_users": 0, "events": 0})
            in_window = [usage[d].get(company_id) for d in window if d in loaded]
            users_7d = sum(row["active_users"] for row in in_window if row)
            if len(in_window) < 7:
                churn = None
            else:
                churn = int(
                    all(row is None or (row["active_users"] == 0 and row["events"] == 0) for row in in_window)
                )
            rows.append(
                tuple(
                    normalise_value(value)
                    for value in (
                        day,
                        company_id,
                        info["company_name"] if info else None,
                        (info["country"] or None) if info else None,
                        (info["industry_tag"] or None) if info else None,
                        parse_timestamp(info["last_contact_at"]) if info else None,
                        today["active_users"],
                        today["events"],
                        users_7d,
                        churn,
                    )
                )
            )
    return rows


def days(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=offset) for offset in range(count)]


def loaded_at(world: PipelineWorld) -> dict[dt.date, set]:
    with world.engine.connect() as connection:
        result = connection.exec_driver_sql(
            query(
                connection, "SELECT activity_date, record_loaded_at FROM {analytics}.company_daily_activity"
            )
        ).all()
    stamps: dict[dt.date, set] = {}
    for activity_date, stamp in result:
        day = activity_date if isinstance(activity_date, dt.date) else dt.date.fromisoformat(activity_date)
        stamps.setdefault(day, set()).add(str(stamp))
    return stamps


def test_run_daily_builds_the_day_from_both_sources_as_the_spec_says(world: PipelineWorld) -> None:
    world.write_crm(START, START)

    assert world.run(RunDaily(date=START))

    assert table_rows(world.engine) == expected_table([START])
    assert (world.data_dir / "raw/crm/date=2026-10-01/manifest.json").exists()
    landed = world.data_dir / "raw/product_usage/date=2026-10-01"
    manifest = json.loads((landed / "manifest.json").read_text())
    expected_rows = len(CompanyUniverse(WORLD_COMPANIES, WORLD_SEED).usage_rows(START))
    assert manifest["row_count"] == expected_rows
    assert manifest["page_count"] == len(list(landed.glob("page-?????.json"))) == -(-expected_rows // 50)


def test_seven_days_in_any_order_give_the_in_order_table(world: PipelineWorld) -> None:
    week = days(START, 8)
    world.write_crm(week[0], week[-1])
    shuffled = [week[3], week[7], week[0], week[5], week[1], week[6], week[2], week[4]]

    for day in shuffled:
        assert world.run(RunDaily(date=day)), day

    assert table_rows(world.engine) == expected_table(week)


def test_a_gap_filled_later_recomputes_the_following_days(world: PipelineWorld) -> None:
    week = days(START, 7)
    world.write_crm(week[0], week[-1])
    for day in week[:2] + week[3:]:
        assert world.run(RunDaily(date=day))
    assert table_rows(world.engine) == expected_table(week[:2] + week[3:])

    assert world.run(RunDaily(date=week[2]))

    assert table_rows(world.engine) == expected_table(week)


def test_a_done_day_is_not_run_again(world: PipelineWorld, usage_api) -> None:
    world.write_crm(START, START)
    assert world.run(RunDaily(date=START))
    before = loaded_at(world)
    requests_before = usage_api.stats()["requests"]

    assert RunDaily(date=START).complete()
    assert world.run(RunDaily(date=START))

    assert loaded_at(world) == before
    assert usage_api.stats()["requests"] == requests_before


def test_refresh_refetches_keeps_the_prior_landing_and_rebuilds_the_following_days(
    world: PipelineWorld,
) -> None:
    week = days(START, 3)
    world.write_crm(week[0], week[-1])
    for day in week:
        assert world.run(RunDaily(date=day))
    before = loaded_at(world)
    # The CRM corrects yesterday's file: one company renamed.
    crm_file = world.crm_dir / f"crm_{week[0].isoformat()}.csv"
    original = crm_file.read_text()
    first_id = original.splitlines()[1].split(",")[0]
    corrected = original.replace(
        original.splitlines()[1], original.splitlines()[1].replace(",", ",Renamed ", 1), 1
    )
    crm_file.write_text(corrected)
    time.sleep(1.1)

    assert world.run(RunDaily(date=week[0], refresh=True))

    for dataset in ("crm", "product_usage"):
        directory = world.data_dir / f"raw/{dataset}/date={week[0].isoformat()}"
        assert [path.name for path in prior_versions(directory)] == ["v1"], dataset
        assert (directory / "manifest.json").exists()
    with world.engine.connect() as connection:
        name = connection.execute(
            sa.text(
                query(
                    connection,
                    "SELECT company_name FROM {analytics}.company_daily_activity "
                    "WHERE activity_date = :day AND company_id = :company_id",
                )
            ).bindparams(sa.bindparam("day", week[0], type_=sa.Date()), company_id=first_id)
        ).scalar_one()
    assert name.startswith("Renamed ")
    after = loaded_at(world)
    # Timestamps have second precision: every row of D .. D+2 carries the refresh's (later) stamp.
    assert all(min(after[day]) > max(before[day]) for day in week), (before, after)
    assert (
        table_rows(world.engine)[len(expected_table([week[0]])) :]
        == expected_table(week)[len(expected_table([week[0]])) :]
    )


def test_a_day_without_a_crm_file_fails_and_leaves_the_table_as_it_was(world: PipelineWorld) -> None:
    world.write_crm(START, START)
    assert world.run(RunDaily(date=START))
    before = table_rows(world.engine, with_loaded_at=True)

    assert not world.run(RunDaily(date=START + dt.timedelta(days=1)))

    assert table_rows(world.engine, with_loaded_at=True) == before
    assert FetchProductUsage(date=START + dt.timedelta(days=1)).complete(), "the other source still lands"
    assert not FetchCrmSnapshot(date=START + dt.timedelta(days=1)).complete()
    assert not MergeDay(date=START + dt.timedelta(days=1)).complete()


@pytest.mark.slow
def test_command_line_backfill_with_range_daily(world: PipelineWorld) -> None:
    world.write_crm(START, START + dt.timedelta(days=2))

    result = world.run_cli(
        "RangeDaily",
        "--of",
        "RunDaily",
        "--start",
        START.isoformat(),
        "--stop",
        (START + dt.timedelta(days=3)).isoformat(),
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert table_rows(world.engine) == expected_table(days(START, 3))


@pytest.mark.slow
def test_command_line_failure_exits_non_zero_with_the_reason(world: PipelineWorld) -> None:
    result = world.run_cli("RunDaily", "--date", START.isoformat())

    assert result.returncode == 30, result.stderr[-3000:]  # [retcode] task_failed
    assert f"CRM snapshot for {START.isoformat()} not found at" in result.stderr
    assert table_rows(world.engine) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_parent_of_forked_task_processes_prepares_great_expectations_once(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --workers N > 1 each task runs in a process forked from the scheduling one: the parent
    creates Great Expectations' context and freezes its objects, so no validating child pays for them."""
    import gc

    import luigi

    from pipeline.orchestration import tasks
    from pipeline.quality import runner

    monkeypatch.setattr(tasks, "_prepared_for_forking", set())
    monkeypatch.setattr(luigi.interface, "core", lambda: type("core", (), {"workers": workers})())
    runner._gx.cache_clear()
    day = dt.date(2026, 10, 1)
    try:
        tasks._prepare_libraries_before_forking(tasks.ValidateCrm(date=day), FetchCrmSnapshot(date=day))
        tasks._prepare_libraries_before_forking(MergeDay(date=day), FetchCrmSnapshot(date=day))
        prepared = runner._gx.cache_info().currsize == 1
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    if workers == 1:  # one worker runs every task in this process: nothing to prepare ahead
        assert not prepared and frozen == 0
    else:
        assert prepared and frozen > 0
        assert tasks._prepared_for_forking == {"columnar", "great_expectations"}


PREPARE_IN_A_FRESH_PROCESS = """
import datetime as dt, sys
import luigi
from pipeline.orchestration import tasks
luigi.interface.core = lambda: type("core", (), {"workers": %d})()
day = dt.date(2026, 10, 1)
tasks._prepare_libraries_before_forking(tasks.StageCrm(date=day), tasks.FetchCrmSnapshot(date=day))
print(sorted(name for name in ("pyarrow.csv", "pyarrow.compute", "pandas", "great_expectations")
             if name in sys.modules))
"""


@pytest.mark.parametrize(
    ("workers", "imported"),
    [(1, []), (2, ["pandas", "pyarrow.compute", "pyarrow.csv"])],
)
def test_a_parent_of_forked_task_processes_imports_the_columnar_libraries_once_for_every_task(
    workers: int, imported: list[str]
) -> None:
    """Staging reads columns (pyarrow, and pandas, which pyarrow imports at its first conversion): with
    several workers the parent imports them before forking, for any day task, not only the validating
    ones; Great Expectations only for those."""
    result = subprocess.run(
        [sys.executable, "-c", PREPARE_IN_A_FRESH_PROCESS % workers],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LUIGI_CONFIG_PATH": os.devnull},
    )
    assert result.stdout.strip() == str(imported)
