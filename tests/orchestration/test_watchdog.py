"""Alerts that no task sends: a failed run (`python -m pipeline alert-run`, what deploy/alert.sh runs) and
the dead-man's check (`python -m pipeline check-freshness`). Real webhook receiver and warehouse; the
deploy scripts around them are tested end to end in tests/deploy/test_deploy.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PipelineWorld, luigi_settings
from webhook_receiver import WebhookReceiver

from pipeline import RunDaily
from pipeline.orchestration import alerts, watchdog
from pipeline.redaction import LOGGED_SECRET_ENV_VARS
from pipeline.reporting import webhooks
from pipeline.warehouse.engine import WarehouseSettings


def test_the_log_tail_keeps_the_end_and_masks_secrets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PRODUCT_API_CLIENT_SECRET", "s3cr3t-value")
    log = tmp_path / "nightly.log"
    log.write_text("".join(f"line {n} token s3cr3t-value Bearer abc.def\n" for n in range(200)))
    tail = watchdog.log_tail(log)
    lines = tail.splitlines()
    assert len(lines) == watchdog.LOG_TAIL_LINES and lines[-1].startswith("line 199")
    assert "s3cr3t-value" not in tail and "abc.def" not in tail and "***" in tail
    assert watchdog.log_tail(tmp_path / "missing.log") is None


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        ("30", "[retcode] task_failed"),
        ("35", "[retcode] scheduling_error (before any task ran)"),
        ("40", "[retcode] unhandled_exception (before any task ran)"),
        ("75", "another run held the nightly lock"),
        ("1", "crashed before Luigi could report"),
        ("TERM", "it was stopped: TERM"),
        ("99", "see the log"),
    ],
)
def test_each_exit_status_says_what_it_means(status: str, meaning: str) -> None:
    assert meaning in watchdog.exit_status_meaning(status)


def test_a_configured_retcode_is_named_by_its_key() -> None:
    with luigi_settings({"retcode": {"task_failed": "31"}}):
        assert watchdog.exit_status_meaning("31") == "[retcode] task_failed"


def test_a_run_alert_goes_once_per_key(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "nightly.log"
    log.write_text("... ERROR luigi-interface the scheduler could not be reached\n")
    with WebhookReceiver() as hook:
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
        first = watchdog.alert_failed_run(
            "nightly CatchUp", "35", log_file=log, log_dir=tmp_path, once_per="k1"
        )
        again = watchdog.alert_failed_run(
            "nightly CatchUp", "35", log_file=log, log_dir=tmp_path, once_per="k1"
        )
        other = watchdog.alert_failed_run(
            "nightly CatchUp", "35", log_file=log, log_dir=tmp_path, once_per="k2"
        )
    assert first["webhook"].delivered and again == {"skipped": True} and not other["skipped"]
    assert len(hook.requests) == 2
    alert = hook.requests[0].json()
    assert alert["exit_code"] == 35 and "scheduler could not be reached" in alert["log_tail"]
    assert (
        "nightly CatchUp exited with status 35: [retcode] scheduling_error (before any task ran)."
        in (alert["error"])
    )
    assert len((tmp_path / watchdog.SENT_LOG).read_text().splitlines()) == 2


def test_alert_run_says_when_a_channel_did_not_take_it(tmp_path: Path) -> None:
    config = tmp_path / "luigi.cfg"
    config.write_text(
        f"[pipeline]\nlog_dir = {tmp_path / 'log'}\n"
        "[alerts]\nwebhook_attempts = 1\nwebhook_timeout_seconds = 1\n"
    )
    with WebhookReceiver([500]) as hook:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "alert-run", "--exit-status", "30"],
            cwd=tmp_path,
            env={
                "LUIGI_CONFIG_PATH": str(config),
                "PIPELINE_ALERT_WEBHOOK_URL": hook.url(),
                "PATH": "/usr/bin",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 6
    assert "webhook: NOT delivered" in result.stdout
    assert "e-mail: not sent ([email] receiver is empty" in result.stdout


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_check_freshness_alerts_a_day_that_failed_its_gate_with_code_5(
    world: PipelineWorld, monkeypatch
) -> None:
    before, day = dt.date(2026, 10, 1), dt.date(2026, 10, 2)
    world.write_crm(before, day)
    path = world.crm_dir / f"crm_{day.isoformat()}.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))
    assert world.run(RunDaily(date=before))
    assert not world.run(RunDaily(date=day))
    with WebhookReceiver() as hook:
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
        code, sentence, outcome = watchdog.check_freshness(
            day, warehouse=world.warehouse, data_dir=world.data_dir, max_age_hours=30, log_file=None
        )
    assert code == 5 and outcome["webhook"].delivered
    assert sentence.startswith("2026-10-02 failed validation: crm (1 failed check(s): ")
    assert "--accept-row-drop" in sentence
    [request] = hook.requests
    assert request.json()["error_type"] == "GateFailed" and request.json()["date"] == "2026-10-02"


def test_check_freshness_alerts_when_the_warehouse_cannot_be_read(tmp_path: Path, monkeypatch) -> None:
    with WebhookReceiver() as hook:
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
        code, sentence, _ = watchdog.check_freshness(
            dt.date(2026, 10, 2),
            warehouse=WarehouseSettings("postgresql://nobody@127.0.0.1:1/none"),
            data_dir=tmp_path,
            max_age_hours=30,
            log_file=None,
        )
    assert code == 1 and "could not read the warehouse" in sentence
    assert hook.requests[0].json()["error_type"] == "WarehouseUnreadable"


def test_the_fallback_masks_the_same_secrets_as_the_pipeline() -> None:
    assert set(webhooks.SECRET_ENV_VARS) == set(LOGGED_SECRET_ENV_VARS)
