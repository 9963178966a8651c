"""`python -m pipeline status`: each day of a window and the freshness of the table, from a real
warehouse loaded by the real graph, through the real command; read-only on both backends.

Exit status: 0 fresh and healthy, 3 stale, 5 a day failed a gate, 4 a day is missing (in that order of
precedence), 1 the warehouse cannot be read, 2 a wrong command line.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PipelineWorld, luigi_settings, query, unique_schema_names
from loopback_servers import SmtpSink

from pipeline import RunDaily
from pipeline.orchestration import status
from pipeline.orchestration.tasks import yesterday_utc
from pipeline.warehouse.engine import WarehouseSettings, read_only_engine

pytestmark = pytest.mark.slow


def run_status(world: PipelineWorld, *arguments: str) -> subprocess.CompletedProcess:
    """The command as an operator types it, in the world's folder with its config."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "status", *arguments],
        cwd=world.root,
        env=world.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def halve_crm(world: PipelineWorld, day: dt.date) -> None:
    path = world.crm_dir / f"crm_{day.isoformat()}.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + (len(lines) - 1) // 2]), encoding="utf-8")


@pytest.fixture
def recent(world: PipelineWorld) -> PipelineWorld:
    """The last three days up to yesterday, CRM files written; nothing loaded yet."""
    world.write_crm(yesterday_utc() - dt.timedelta(days=2), yesterday_utc())
    return world


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_loaded_window_is_fresh_and_healthy_with_every_fact_of_a_day(recent: PipelineWorld) -> None:
    world = recent
    days = [yesterday_utc() - dt.timedelta(days=back) for back in (2, 1, 0)]
    with SmtpSink() as sink:
        settings = {
            "report": {"enabled": "true", "recipients": "Ops <ops@example.test>", "max_age_days": "-1"},
            "email": {"sender": "pipeline@example.test"},
            "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"},
        }
        with luigi_settings({"report": {"enabled": "false"}}):
            assert world.run(*(RunDaily(date=day) for day in days[:2]))
        with luigi_settings(settings):
            assert world.run(RunDaily(date=days[2]))
            assert world.run(RunDaily(date=days[2], refresh=True))  # a correction is mailed
        assert len(sink.wait_for(2)) == 2

    result = run_status(world, "--json", "--days", "3")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["fresh"] is True and report["exit_code"] == 0 and report["problems"] == []
    assert report["newest_loaded_day"] == days[2].isoformat()
    assert 0 <= report["age_hours"] <= 24
    assert [(day["date"], day["loaded"]) for day in report["days"]] == [(d.isoformat(), True) for d in days]
    last = report["days"][-1]
    with world.engine.connect() as connection:
        loaded = connection.execute(
            sa.text(
                query(
                    connection,
                    "SELECT crm_rows, usage_rows, output_rows, orphan_rows, crm_landing_id, usage_landing_id "
                    "FROM {analytics}.loaded_days WHERE activity_date = :day",
                )
            ).bindparams(sa.bindparam("day", days[2], type_=sa.Date()))
        ).one()
        at_risk = connection.execute(
            sa.text(
                query(
                    connection,
                    "SELECT COUNT(*) FROM {analytics}.company_daily_activity WHERE activity_date = :day "
                    "AND is_churn_risk = TRUE",
                )
            ).bindparams(sa.bindparam("day", days[2], type_=sa.Date()))
        ).scalar()
    assert last["rows"] == {
        "crm": loaded.crm_rows,
        "usage": loaded.usage_rows,
        "output": loaded.output_rows,
        "orphans": loaded.orphan_rows,
    }
    assert last["landing_ids"] == {"crm": loaded.crm_landing_id, "usage": loaded.usage_landing_id}
    assert {name: v["verdict"] for name, v in last["validations"].items()} == {
        "crm": "passed",
        "product_usage": "passed",
        "company_daily_activity": "passed",
    }
    assert last["churn_risk_known"] is False and last["churn_risk"] is None  # 3 of 7 days: not known
    assert at_risk == 0
    assert last["report"]["rendered"] and last["report"]["current"]
    assert last["report"]["mailed"] and last["report"]["corrected"]
    assert report["days"][0]["report"]["rendered"] is False  # the backfill ran without the report
    assert {"FetchCrmSnapshot", "MergeDay", "RenderReport", "SendReport"} <= set(last["tasks"])
    assert last["task_seconds"] == pytest.approx(sum(last["tasks"].values()), abs=0.01)

    table = run_status(world, "--days", "3")
    assert table.returncode == 0
    assert "corrected" in table.stdout and "<- gap" not in table.stdout
    assert f"{days[2].isoformat()} {days[2].strftime('%a')}  yes" in table.stdout
    assert "Freshness: fresh" in table.stdout and "Exit status 0" in table.stdout


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_gap_in_the_window_exits_4_and_is_marked(recent: PipelineWorld) -> None:
    world = recent
    gap = yesterday_utc() - dt.timedelta(days=1)
    assert world.run(RunDaily(date=gap - dt.timedelta(days=1)), RunDaily(date=yesterday_utc()))

    result = run_status(world, "--days", "3")

    assert result.returncode == status.MISSING_DAY == 4, result.stdout
    [gap_line] = [line for line in result.stdout.splitlines() if line.startswith(gap.isoformat())]
    assert "MISSING" in gap_line and gap_line.endswith("<- gap")
    assert f"  - {gap.isoformat()}: not loaded" in result.stdout
    report = json.loads(run_status(world, "--json", "--days", "3").stdout)
    assert report["missing_days"] == [gap.isoformat()] and report["fresh"] is True


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_day_that_failed_its_gate_exits_5_with_the_check(recent: PipelineWorld) -> None:
    world = recent
    before = yesterday_utc() - dt.timedelta(days=1)
    halve_crm(world, yesterday_utc())
    assert world.run(RunDaily(date=before))
    assert not world.run(RunDaily(date=yesterday_utc()))  # the CRM row drop fails the day

    # a generous age limit: this test is about the gate, whatever the time of day it runs at
    result = run_status(world, "--json", "--days", "2", "--max-age-hours", "100")

    assert result.returncode == status.FAILED_GATE == 5, result.stdout
    report = json.loads(result.stdout)
    assert report["failed_gate_days"] == [yesterday_utc().isoformat()]
    assert report["missing_days"] == [yesterday_utc().isoformat()]  # 5 wins over 4
    crm = report["days"][-1]["validations"]["crm"]
    assert crm["verdict"] == "failed" and crm["failed_checks"] == 1
    assert crm["results"].endswith("crm.html") and Path(crm["results"]).is_file()
    assert any("crm failed validation" in problem for problem in report["problems"])


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_an_old_table_is_stale_and_stale_wins(world: PipelineWorld) -> None:
    old = dt.date(2026, 10, 1)
    world.write_crm(old, old)
    assert world.run(RunDaily(date=old))

    result = run_status(world, "--json", "--days", "2", "--date", old.isoformat())

    assert result.returncode == status.STALE == 3
    report = json.loads(result.stdout)
    assert report["fresh"] is False and report["newest_loaded_day"] == old.isoformat()
    assert report["missing_days"] == [(old - dt.timedelta(days=1)).isoformat()]  # stale wins over missing
    assert report["age_hours"] > 24 * 30


def test_the_precedence_of_the_exit_codes() -> None:
    last = dt.date(2026, 11, 20)

    def made(hours_after: float, newest: dt.date | None, *days: status.DayStatus) -> status.Status:
        now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC) + dt.timedelta(hours=hours_after)
        return status.Status(last, last, now, list(days), newest, max_age_hours=30)

    verdicts = {"crm": {"verdict": "failed", "failed_checks": 1, "results": None}}
    failed, missing, loaded = (
        status.DayStatus(last, False, validations=verdicts),
        status.DayStatus(last, False),
        status.DayStatus(last, True),
    )
    before = last - dt.timedelta(days=1)
    assert made(4, last, loaded).exit_code == 0
    assert made(4, before, missing).exit_code == 4  # 28 h: fresh, but the day is missing
    assert made(4, before, failed).exit_code == 5  # a failed gate wins over missing
    assert made(12, before, failed).exit_code == 3  # 36 h: stale wins over everything
    assert made(30, last, loaded).exit_code == 0  # exactly the limit: still fresh
    assert made(30.01, last, loaded).exit_code == 3
    assert made(4, None, missing).exit_code == 3  # nothing loaded at all


def test_status_reads_a_warehouse_that_does_not_exist_without_creating_it(tmp_path: Path) -> None:
    database = tmp_path / "nowhere" / "warehouse.db"
    result = status.collect_status(
        WarehouseSettings(f"sqlite:///{database}"), tmp_path / "data", last=dt.date(2026, 11, 20), days=2
    )
    assert result.missing_days == [dt.date(2026, 11, 19), dt.date(2026, 11, 20)]
    assert result.exit_code == status.STALE
    assert list(tmp_path.iterdir()) == []  # no folder, no database file, no data_dir


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)  # PostgreSQL: the test below
def test_status_never_writes_to_an_existing_sqlite_warehouse(world: PipelineWorld, tmp_path: Path) -> None:
    day = dt.date(2026, 10, 1)
    world.write_crm(day, day)
    assert world.run(RunDaily(date=day))
    files = sorted(path for path in world.root.glob("*.db*"))
    before = {path: path.stat().st_mtime_ns for path in files}
    status.collect_status(world.warehouse, world.data_dir, last=day, days=3)
    assert {path: path.stat().st_mtime_ns for path in sorted(world.root.glob("*.db*"))} == before
    engine = read_only_engine(world.warehouse)
    with engine.connect() as connection, pytest.raises(sa.exc.OperationalError, match="readonly"):
        connection.exec_driver_sql(query(connection, "DELETE FROM {analytics}.loaded_days"))
    engine.dispose()


@pytest.mark.postgres
def test_status_creates_no_schema_on_postgresql(postgres_server_url: str, tmp_path: Path) -> None:
    warehouse = WarehouseSettings(postgres_server_url, **unique_schema_names())
    result = status.collect_status(warehouse, tmp_path / "data", last=dt.date(2026, 11, 20), days=1)
    assert result.missing_days == [dt.date(2026, 11, 20)] and result.newest_loaded_day is None
    engine = sa.create_engine(postgres_server_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.connect() as connection:
        schemas = {
            row[0]
            for row in connection.exec_driver_sql("SELECT schema_name FROM information_schema.schemata")
        }
    engine.dispose()
    assert not {warehouse.stg_schema, warehouse.analytics_schema} & schemas
    read_only = read_only_engine(warehouse)
    with (
        read_only.connect() as connection,
        pytest.raises(sa.exc.InternalError, match="read-only transaction"),
    ):
        connection.exec_driver_sql(f"CREATE SCHEMA {warehouse.analytics_schema}")
    read_only.dispose()


def test_an_unreachable_warehouse_exits_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "luigi.cfg"
    config.write_text("[pipeline]\ndatabase_url = postgresql://nobody@127.0.0.1:1/none\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "status"],
        cwd=tmp_path,
        env={"LUIGI_CONFIG_PATH": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status.CANNOT_READ == 1
    assert result.stderr.startswith("error: cannot read the warehouse postgresql://nobody@127.0.0.1:1/none: ")
    assert "Traceback" not in result.stderr


def test_a_wrong_command_line_exits_2(tmp_path: Path) -> None:
    for arguments in (
        ["--days", "0"],
        ["--date", "tomorrow"],
        ["--date", (dt.date.today() + dt.timedelta(days=2)).isoformat()],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "status", *arguments],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, arguments
        assert "usage: python -m pipeline status" in result.stderr


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_status_shows_what_the_latest_correction_of_a_day_changed(recent: PipelineWorld) -> None:
    world = recent
    day = yesterday_utc()
    with luigi_settings({"report": {"enabled": "false"}}):
        assert world.run(RunDaily(date=day))
        snapshot = world.crm_dir / f"crm_{day.isoformat()}.csv"
        with snapshot.open("a", encoding="utf-8") as handle:
            handle.write("C9999999,Late Arrival GmbH,DE,software,\n")
        assert world.run(RunDaily(date=day, refresh=True))

    report = json.loads(run_status(world, "--json", "--days", "1").stdout)
    correction = report["days"][-1]["correction"]
    assert correction["merged_date"] == day.isoformat()
    assert (correction["rows_added"], correction["rows_removed"], correction["rows_changed"]) == (1, 0, 0)
    assert correction["companies"][1] == correction["companies"][0] + 1
    table = run_status(world, "--days", "1").stdout
    assert f"{day.isoformat()}: +1 -0 ~0 rows" in table
