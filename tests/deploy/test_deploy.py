"""The nightly schedule as shipped in deploy/: the units verify, and their exact command line works.

The command the units contain is run for real (with the install prefix swapped for this checkout): it
catches up missed days oldest first, holds a lock, logs to a file and surfaces a failure as its exit code.
"""

from __future__ import annotations

import configparser
import datetime as dt
import fcntl
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, PipelineWorld, query
from loopback_servers import SmtpSink
from webhook_receiver import WebhookReceiver

from pipeline.orchestration.tasks import COMMAND_LINE_REFUSED, UnfinishedDayError, yesterday_utc
from pipeline.warehouse.merge import as_date

DEPLOY = PROJECT_ROOT / "deploy"
INSTALL_PREFIX = "/opt/company-activity-pipeline"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(DEPLOY / name)
    return parser


UNITS = (
    "company-activity-pipeline.service",
    "company-activity-pipeline.timer",
    "company-activity-pipeline-alert.service",
    "company-activity-pipeline-freshness.service",
    "company-activity-pipeline-freshness.timer",
)


def test_the_timer_fires_at_midnight_utc_for_the_service() -> None:
    timer = unit("company-activity-pipeline.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 00:00:00 UTC"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "company-activity-pipeline.service"
    service = unit("company-activity-pipeline.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == f"{INSTALL_PREFIX}/deploy/nightly.sh"


def test_the_freshness_timer_fires_at_four_utc_and_failures_alert() -> None:
    timer = unit("company-activity-pipeline-freshness.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 04:00:00 UTC"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "company-activity-pipeline-freshness.service"
    freshness = unit("company-activity-pipeline-freshness.service")
    assert freshness["Service"]["ExecStart"] == (
        f"{INSTALL_PREFIX}/.venv/bin/python -m pipeline check-freshness --log-file var/log/nightly.log"
    )
    assert freshness["Service"]["SuccessExitStatus"].split() == ["3", "4", "5"]  # it alerted itself
    for name in ("company-activity-pipeline.service", "company-activity-pipeline-freshness.service"):
        assert unit(name)["Unit"]["OnFailure"] == "company-activity-pipeline-alert.service", name
    alert = unit("company-activity-pipeline-alert.service")
    assert alert["Service"]["ExecStart"] == f"{INSTALL_PREFIX}/deploy/alert.sh --systemd"
    assert alert["Service"]["EnvironmentFile"] == "/etc/company-activity-pipeline/env"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace(INSTALL_PREFIX, str(PROJECT_ROOT))
        (tmp_path / name).write_text(
            text.replace("/etc/company-activity-pipeline/env", str(tmp_path / "env"))
        )
    (tmp_path / "env").write_text("")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *UNITS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # not even a warning


def crontab_lines() -> list[str]:
    return [
        line for line in (DEPLOY / "crontab").read_text().splitlines() if line and not line.startswith("#")
    ]


def test_the_crontab_line_runs_nightly_sh_at_midnight_utc() -> None:
    lines = crontab_lines()
    assert lines[0] == "CRON_TZ=UTC"
    minute, hour, day, month, weekday, user, *command = lines[1].split()
    assert (minute, hour, day, month, weekday, user) == ("0", "0", "*", "*", "*", "pipeline")
    assert command[-1] == f"{INSTALL_PREFIX}/deploy/nightly.sh"


def test_the_crontab_runs_the_freshness_check_at_four_utc() -> None:
    minute, hour, day, month, weekday, user, *command = crontab_lines()[2].split()
    assert (minute, hour, day, month, weekday, user) == ("0", "4", "*", "*", "*", "pipeline")
    assert " ".join(command).endswith(
        f"cd {INSTALL_PREFIX} && .venv/bin/python -m pipeline check-freshness --log-file var/log/nightly.log"
    )


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


def run_alert_sh(world: PipelineWorld, *arguments: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = world.cli_env()
    env.update(
        PIPELINE_HOME=str(world.root), PIPELINE_VENV=str(Path(sys.executable).parent.parent), **extra_env
    )
    return subprocess.run(
        [str(DEPLOY / "alert.sh"), *arguments], env=env, capture_output=True, text=True, timeout=120
    )


def card_facts(request) -> tuple[dict[str, str], list[str]]:
    """The FactSet of an Adaptive Card alert, and the texts of its TextBlocks."""
    card = request.json()["attachments"][0]["content"]
    facts = next(element for element in card["body"] if element["type"] == "FactSet")["facts"]
    texts = [element["text"] for element in card["body"] if element["type"] == "TextBlock"]
    return {fact["title"]: fact["value"] for fact in facts}, texts


@pytest.mark.slow
def test_nightly_failure_surfaces_as_a_non_zero_exit_status_and_alerts(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    world.write_crm(yesterday_utc(), yesterday_utc())  # the two days before have no CRM file
    world.settings["alerts"] = {"webhook_format": "adaptive_card"}
    world.write_config()

    with WebhookReceiver(validate="adaptive_card") as hook:
        result = run_nightly(world, PIPELINE_ALERT_WEBHOOK_URL=hook.url())

    assert result.returncode == 30  # [retcode] task_failed
    nightly_log = (world.root / "var/log/nightly.log").read_text()
    assert "CatchUp finished with exit status 30" in nightly_log
    assert loaded_days(world) == [yesterday_utc()]
    assert hook.rejections == []
    facts = [card_facts(request) for request in hook.requests]
    # each failed task alerted, and so did the run, with its exit status and the end of its log
    assert sorted(f["Task"] for f, _ in facts if f["Task"].startswith("FetchCrmSnapshot")) != []
    [(run, texts)] = [(f, t) for f, t in facts if f["Task"] == "nightly CatchUp"]
    assert run["Exit code"] == "30"
    assert "nightly CatchUp exited with status 30: [retcode] task_failed." in texts[1]
    assert "CatchUp finished with exit status 30" in texts[2]  # the log's tail
    assert "pipeline-test-secret" not in json.dumps([request.json() for request in hook.requests])


@pytest.mark.slow
def test_a_broken_config_fails_before_any_task_and_still_alerts(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    world.config_file.write_text(
        "[pipeline\ndatabase_url = sqlite:///var/warehouse.db\n"
    )  # no section header

    with WebhookReceiver() as hook:
        result = run_nightly(world, PIPELINE_ALERT_WEBHOOK_URL=hook.url())

    assert result.returncode == 1  # Luigi could not even import its configuration
    nightly_log = (world.root / "var/log/nightly.log").read_text()
    assert "CatchUp finished with exit status 1" in nightly_log
    [request] = hook.requests
    alert = request.json()  # "auto" on a loopback URL: the plain JSON object
    assert alert["exit_code"] == 1 and alert["task"] == "nightly CatchUp"
    assert "exited with status 1" in alert["error"] and "could not be imported" in alert["error"]
    assert "MissingSectionHeaderError" in alert["log_tail"]
    assert "the pipeline cannot be imported" in nightly_log  # alert.sh said which way it went


def test_nightly_gives_up_when_another_run_holds_the_lock_and_alerts(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    (world.root / "var").mkdir(exist_ok=True)
    with WebhookReceiver() as hook, open(world.root / "var/nightly.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_nightly(world, PIPELINE_LOCK_WAIT_SECONDS="1", PIPELINE_ALERT_WEBHOOK_URL=hook.url())

    assert result.returncode == 75
    assert "another run has held var/nightly.lock" in result.stderr
    assert loaded_days(world) == []
    [request] = hook.requests
    alert = request.json()
    assert alert["exit_code"] == 75
    assert "another run held the nightly lock" in alert["error"]
    assert "another run has held var/nightly.lock for 1s" in alert["log_tail"]


@pytest.mark.slow
def test_under_systemd_a_failed_run_alerts_once_and_onfailure_covers_a_killed_one(
    nightly_world: PipelineWorld,
) -> None:
    world = nightly_world
    world.write_crm(yesterday_utc(), yesterday_utc())
    with WebhookReceiver() as hook:
        # the service's run: nightly.sh fails (30) and alerts with systemd's INVOCATION_ID
        assert (
            run_nightly(world, INVOCATION_ID="0f1e2d3c", PIPELINE_ALERT_WEBHOOK_URL=hook.url()).returncode
            == 30
        )
        runs = [r.json() for r in hook.requests if r.json()["task"] == "nightly CatchUp"]
        assert [alert["exit_code"] for alert in runs] == [30]
        # then OnFailure= starts the alert unit for the same invocation: already alerted, nothing sent
        monitor = {
            "MONITOR_UNIT": "company-activity-pipeline.service",
            "MONITOR_SERVICE_RESULT": "exit-code",
            "MONITOR_EXIT_CODE": "exited",
            "MONITOR_EXIT_STATUS": "30",
            "MONITOR_INVOCATION_ID": "0f1e2d3c",
            "PIPELINE_ALERT_WEBHOOK_URL": hook.url(),
        }
        before = len(hook.requests)
        same = run_alert_sh(world, "--systemd", **monitor)
        assert same.returncode == 0 and "already alerted for 0f1e2d3c" in same.stdout
        assert len(hook.requests) == before
        # a run killed by TimeoutStartSec= never reached nightly.sh's own alert: the unit's alert is the one
        monitor.update(
            MONITOR_SERVICE_RESULT="timeout", MONITOR_EXIT_CODE="killed", MONITOR_EXIT_STATUS="TERM",
            MONITOR_INVOCATION_ID="9a8b7c6d",
        )  # fmt: skip
        killed = run_alert_sh(world, "--systemd", **monitor)
        assert killed.returncode == 0, killed.stdout + killed.stderr
        alert = hook.requests[-1].json()
    assert alert["task"] == "company-activity-pipeline.service" and alert["exit_code"] is None
    assert "exited with status TERM: it was stopped: TERM." in alert["error"]
    assert "ended with result timeout (killed TERM)" in alert["error"]
    assert "CatchUp finished with exit status 30" in alert["log_tail"]  # no journal here: nightly.log


def freshness_command() -> list[str]:
    """ExecStart of the freshness service, pointed at this checkout's virtual environment."""
    exec_start = unit("company-activity-pipeline-freshness.service")["Service"]["ExecStart"]
    return [
        part.replace(f"{INSTALL_PREFIX}/.venv", str(Path(sys.executable).parent.parent))
        for part in shlex.split(exec_start)
    ]


@pytest.mark.slow
def test_the_freshness_check_alerts_when_yesterday_is_not_loaded(nightly_world: PipelineWorld) -> None:
    world = nightly_world
    world.settings["alerts"] = {"webhook_format": "adaptive_card"}
    world.settings["email"] = {"receiver": "Ops <ops@example.test>", "sender": "pipeline@example.test"}
    (world.root / "var/log").mkdir(parents=True, exist_ok=True)
    (world.root / "var/log/nightly.log").write_text("2026-11-28T00:00:01Z nightly: CatchUp starting\n")
    with SmtpSink() as sink, WebhookReceiver(validate="adaptive_card") as hook:
        world.settings["smtp"] = {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"}
        world.write_config()
        env = {**world.cli_env(), "PIPELINE_ALERT_WEBHOOK_URL": hook.url()}
        missing = subprocess.run(
            freshness_command(), cwd=world.root, env=env, capture_output=True, text=True, timeout=120
        )
        [mail] = sink.wait_for(1)
        assert missing.returncode == 4, missing.stdout + missing.stderr  # not loaded (status's code)
        assert f"{yesterday_utc().isoformat()} is not loaded" in missing.stdout
        assert hook.rejections == []
        [request] = hook.requests
        facts, texts = card_facts(request)
        assert facts["Task"] == "CheckFreshness" and facts["Date"] == yesterday_utc().isoformat()
        assert facts["Exit code"] == "4"
        assert "the nightly run did not load it, or did not run" in texts[1]
        assert "CatchUp starting" in texts[2]  # the nightly log's tail
        assert (
            mail["Subject"]
            == f"[company-activity-pipeline] Pipeline failure: CheckFreshness for {yesterday_utc()}"
        )

        world.write_crm(yesterday_utc(), yesterday_utc())
        assert world.run_cli("RunDaily", "--local-scheduler").returncode == 0
        loaded = subprocess.run(
            freshness_command(), cwd=world.root, env=env, capture_output=True, text=True, timeout=120
        )
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert f"{yesterday_utc().isoformat()} is loaded and passed its checks" in loaded.stdout
        assert len(hook.requests) == 1 and len(sink.messages) == 1  # no alert when all is well


def test_run_daily_without_a_date_means_yesterday_in_utc() -> None:
    from pipeline import RunDaily

    assert RunDaily().date == yesterday_utc()


@pytest.mark.parametrize("days_ahead", [0, 1])
def test_a_day_that_is_not_over_in_utc_is_refused_in_one_line(world: PipelineWorld, days_ahead: int) -> None:
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days_ahead)

    result = world.run_cli("RunDaily", "--date", day.isoformat(), "--local-scheduler")

    assert result.returncode == COMMAND_LINE_REFUSED == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    refusals = [line for line in lines if "is not over in UTC yet" in line]
    assert refusals == [
        f"error: --date {day.isoformat()} is not over in UTC yet (today is "
        f"{dt.datetime.now(dt.UTC).date().isoformat()} UTC): the sources publish a day once it is over; "
        f"run it from {(day + dt.timedelta(days=1)).isoformat()} 00:00 UTC on"
    ]
    assert "Traceback" not in result.stderr
    assert not (world.data_dir / "raw").exists()


def test_in_code_an_unfinished_day_is_an_exception_not_an_exit() -> None:
    from pipeline import RunDaily

    with pytest.raises(UnfinishedDayError, match="is not over in UTC yet"):
        RunDaily(date=dt.datetime.now(dt.UTC).date())
