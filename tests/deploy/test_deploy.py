"""The nightly schedule as shipped in deploy/: the units verify, and their exact command line works.

The command the units contain is run for real (with the install prefix swapped for this checkout): it
catches up missed days oldest first, holds a lock, logs to a file and surfaces a failure as its exit code.
"""

from __future__ import annotations

import configparser
import datetime as dt
import fcntl
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, PipelineWorld, query

from pipeline.orchestration.tasks import yesterday_utc
from pipeline.warehouse.merge import as_date

DEPLOY = PROJECT_ROOT / "deploy"
INSTALL_PREFIX = "/opt/company-activity-pipeline"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(DEPLOY / name)
    return parser


def test_the_timer_fires_at_midnight_utc_for_the_service() -> None:
    timer = unit("company-activity-pipeline.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 00:00:00 UTC"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "company-activity-pipeline.service"
    service = unit("company-activity-pipeline.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == f"{INSTALL_PREFIX}/deploy/nightly.sh"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    for name in ("company-activity-pipeline.service", "company-activity-pipeline.timer"):
        text = (DEPLOY / name).read_text().replace(INSTALL_PREFIX, str(PROJECT_ROOT))
        (tmp_path / name).write_text(
            text.replace("/etc/company-activity-pipeline/env", str(tmp_path / "env"))
        )
    (tmp_path / "env").write_text("")
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            "company-activity-pipeline.timer",
            "company-activity-pipeline.service",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_crontab_line_runs_nightly_sh_at_midnight_utc() -> None:
    lines = [
        line for line in (DEPLOY / "crontab").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines[0] == "CRON_TZ=UTC"
    minute, hour, day, month, weekday, user, *command = lines[1].split()
    assert (minute, hour, day, month, weekday, user) == ("0", "0", "*", "*", "*", "pipeline")
    assert command[-1] == f"{INSTALL_PREFIX}/deploy/nightly.sh"


def nightly_command() -> list[str]:
    """ExecStart of the service, pointed at this checkout."""
    exec_start = unit("company-activity-pipeline.service")["Service"]["ExecStart"]
    return [part.replace(INSTALL_PREFIX, str(PROJECT_ROOT)) for part in shlex.split(exec_start)]


def run_nightly(world: PipelineWorld, **extra_env: str) -> subprocess.CompletedProcess:
    env = world.cli_env()
    env.update(
        PIPELINE_HOME=str(world.root), PIPELINE_VENV=str(Path(sys.executable).parent.parent), **extra_env
    )
    return subprocess.run(nightly_command(), env=env, capture_output=True, text=True, timeout=300)


def loaded_days(world: PipelineWorld) -> list[dt.date]:
    with world.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query(connection, "SELECT activity_date FROM {analytics}.loaded_days")
        ).all()
    return sorted(as_date(row[0]) for row in rows)


@pytest.fixture
def nightly_world(world: PipelineWorld) -> PipelineWorld:
    world.settings["pipeline"]["catch_up_days"] = "3"
    world.settings["pipeline"]["log_dir"] = str(world.root / "var/log")
    world.write_config()
    return world


@pytest.mark.slow
def test_nightly_catches_up_missed_days_oldest_first_and_logs_to_files(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    yesterday = yesterday_utc()
    window = [yesterday - dt.timedelta(days=back) for back in (2, 1, 0)]
    world.write_crm(window[0], window[-1])

    result = run_nightly(world)

    assert result.returncode == 0, (world.root / "var/log/nightly.log").read_text()[-3000:]
    assert loaded_days(world) == window
    nightly_log = (world.root / "var/log/nightly.log").read_text()
    assert "CatchUp finished with exit status 0" in nightly_log
    run_logs = list((world.root / "var/log").glob("run-*.log"))
    assert len(run_logs) == 1
    run_log = run_logs[0].read_text()
    merges = [line for line in run_log.splitlines() if "MergeDay done for" in line]
    assert [line.split("MergeDay done for ")[1][:10] for line in merges] == [
        day.isoformat() for day in window
    ]
    assert "FetchCrmSnapshot started for" in run_log
    assert "pipeline-test-secret" not in run_log + nightly_log


@pytest.mark.slow
def test_nightly_failure_surfaces_as_a_non_zero_exit_status(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    world.write_crm(yesterday_utc(), yesterday_utc())  # the two days before have no CRM file

    result = run_nightly(world)

    assert result.returncode == 30  # [retcode] task_failed
    assert "CatchUp finished with exit status 30" in (world.root / "var/log/nightly.log").read_text()
    assert loaded_days(world) == [yesterday_utc()]


def test_nightly_gives_up_when_another_run_holds_the_lock(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    (world.root / "var").mkdir(exist_ok=True)
    with open(world.root / "var/nightly.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_nightly(world, PIPELINE_LOCK_WAIT_SECONDS="1")

    assert result.returncode == 75
    assert "another run has held var/nightly.lock" in result.stderr
    assert loaded_days(world) == []


def test_run_daily_without_a_date_means_yesterday_in_utc() -> None:
    from pipeline import RunDaily

    assert RunDaily().date == yesterday_utc()


def test_a_day_that_is_not_over_in_utc_is_refused(world: PipelineWorld) -> None:
    today = dt.datetime.now(dt.UTC).date()

    result = world.run_cli("RunDaily", "--date", today.isoformat())

    assert result.returncode != 0
    assert f"{today.isoformat()} is not over in UTC yet" in result.stderr
    assert not (world.data_dir / "raw").exists()
