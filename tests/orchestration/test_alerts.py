"""Failure alerts: the webhook (a local HTTP server receives it, in each [alerts] webhook_format) and the
e-mails (Luigi's for a failed task, ours for a run; aiosmtpd receives them).

A webhook that refuses, hangs or answers 500 never fails or holds up a run; a failed validation check
and a failed notebook cell alert with their own message; a failed render mails no report; a real `luigi`
run that fails posts an Adaptive Card that a Teams Workflows receiver accepts.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import time
import urllib.parse
from pathlib import Path

import luigi
import pytest
from conftest import PipelineWorld, luigi_settings
from loopback_servers import SmtpSink, WebhookSink, free_port, hanging_server
from report_world import DAY, broken_notebook
from webhook_receiver import Reply, WebhookReceiver

from pipeline import MergeDay, RunDaily
from pipeline.config import WEBHOOK_FORMATS
from pipeline.orchestration import alerts
from pipeline.orchestration.tasks import DayTask
from pipeline.reporting import mailer, webhooks
from pipeline.reporting import notebook as report_notebook

LOCAL = {"core": {"local_scheduler": "true"}}
SENDER, OPS = "pipeline@example.test", "ops@example.test"


class ExplodingDay(DayTask):
    """A day task that fails with ``message``."""

    message = luigi.Parameter(default="boom")
    marker = luigi.Parameter(default="")

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.marker)

    def run(self) -> None:
        raise RuntimeError(self.message)


class FineDay(DayTask):
    marker = luigi.Parameter(default="")

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.marker)

    def run(self) -> None:
        Path(self.marker).write_text("done")


def build(*tasks: luigi.Task) -> bool:
    alerts.install()  # what a `luigi` command-line run does when it starts (pipeline.orchestration.run_start)
    return luigi.build(list(tasks), local_scheduler=True, log_level="CRITICAL")


def test_a_failing_task_posts_its_alert_to_the_webhook(tmp_path: Path, monkeypatch) -> None:
    task = ExplodingDay(date=DAY, message="the warehouse is gone <b>", marker=str(tmp_path / "never"))
    with WebhookSink() as hook, luigi_settings(LOCAL):
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url)
        assert not build(task)
    [received] = hook.bodies
    body = received["json"]
    assert received["content_type"] == "application/json"
    # "auto" on a URL that is not a Teams host: the plain JSON object
    assert body["task"] == task.task_id and body["task_family"] == "ExplodingDay"
    assert body["date"] == "2026-09-10"
    assert body["error"] == "RuntimeError: the warehouse is gone <b>"
    assert body["error_type"] == "RuntimeError" and body["host"] and body["failed_at"]
    assert body["luigid_url"] is None  # the local scheduler: no luigid to link to
    assert "Pipeline failure: ExplodingDay for 2026-09-10" in body["text"]
    assert "&lt;b&gt;" in body["text"]  # Slack's markup characters escaped in the one-line text
    assert "@type" not in body and "attachments" not in body


@pytest.mark.parametrize("fmt", ["message_card", "adaptive_card"])
def test_the_configured_webhook_format_is_what_is_posted(fmt: str, tmp_path: Path, monkeypatch) -> None:
    task = ExplodingDay(date=DAY, message="disk full", marker=str(tmp_path / "never"))
    validate = "adaptive_card" if fmt == "adaptive_card" else None
    with (
        WebhookReceiver(validate=validate) as hook,
        luigi_settings({**LOCAL, "alerts": {"webhook_format": fmt}}),
    ):
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
        assert not build(task)
    [request] = hook.requests
    body = request.json()
    assert hook.rejections == []
    if fmt == "message_card":
        assert body["@type"] == "MessageCard"
        assert body["title"] == "Pipeline failure: ExplodingDay for 2026-09-10"
        assert {"name": "Date", "value": "2026-09-10"} in body["sections"][0]["facts"]
        assert body["task"] == task.task_id  # the facts as plain keys too
    else:
        assert set(body) == {"type", "attachments"}
        card = body["attachments"][0]["content"]
        assert card["body"][0]["text"] == "Pipeline failure: ExplodingDay for 2026-09-10"
        assert "RuntimeError: disk full" in card["body"][2]["text"]


def test_the_config_offers_the_formats_the_payload_builder_knows() -> None:
    assert WEBHOOK_FORMATS == webhooks.FORMATS


def test_alerts_link_the_task_in_luigid_when_a_scheduler_is_used() -> None:
    task = ExplodingDay(date=DAY)
    central = {"core": {"local_scheduler": "false", "scheduler_host": "10.0.0.5", "scheduler_port": "8082"}}
    with luigi_settings(central):
        alert = alerts.task_alert(task, RuntimeError("x"))
    fragment = urllib.parse.urlencode({"tab": "graph", "taskId": task.task_id})
    assert alert.luigid_url == f"http://10.0.0.5:8082/static/visualiser/index.html#{fragment}"
    card = webhooks.payload(alert, "adaptive_card")["attachments"][0]["content"]
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in luigid", "url": alert.luigid_url}]
    body = webhooks.payload(alert, "message_card")
    assert body["potentialAction"][0]["targets"][0]["uri"] == alert.luigid_url
    with luigi_settings({**central, "alerts": {"luigid_url": "https://luigid.example.test/"}}):
        alert = alerts.task_alert(task, RuntimeError("x"))
    assert alert.luigid_url.startswith("https://luigid.example.test/static/visualiser/index.html#")


def test_a_webhook_answering_503_gets_the_alert_on_a_later_attempt(tmp_path: Path, monkeypatch) -> None:
    task = ExplodingDay(date=DAY, marker=str(tmp_path / "never"))
    settings = {**LOCAL, "alerts": {"webhook_attempts": "3", "webhook_timeout_seconds": "2"}}
    with WebhookReceiver([Reply(503, {"Retry-After": "0"}), 200]) as hook, luigi_settings(settings):
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
        assert not build(task)
    assert len(hook.requests) == 2
    assert hook.requests[0].body == hook.requests[1].body  # the same alert, delivered the second time


@pytest.mark.parametrize("kind", ["refused", "hanging", "http-500"])
def test_a_dead_webhook_neither_fails_nor_holds_up_the_run(
    kind: str, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {**LOCAL, "alerts": {"webhook_timeout_seconds": "1", "webhook_attempts": "2"}}
    if kind == "refused":
        server = contextlib.nullcontext(f"http://127.0.0.1:{free_port()}/hook")
    elif kind == "hanging":
        server = hanging_server()
    else:
        server = contextlib.nullcontext(None)
    with server as url, WebhookSink(status=500) as failing, luigi_settings(settings):
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, url or failing.url)
        failing_task = ExplodingDay(date=DAY, marker=str(tmp_path / "never"))
        fine = FineDay(date=DAY, marker=str(tmp_path / "fine"))
        started = time.monotonic()
        with caplog.at_level("ERROR", logger="pipeline.alerts"):
            succeeded = build(failing_task, fine)
        elapsed = time.monotonic() - started
    assert not succeeded  # the task's failure, reported as ever
    assert (tmp_path / "fine").read_text() == "done"  # and the rest of the run went on
    # bounded: attempts x timeout + the 2 s slack of the delivery, not a hang
    assert elapsed < 2 * 1 + webhooks.BUDGET_SLACK_SECONDS + 2, elapsed
    assert "the alert was not delivered" in caplog.text  # undeliverable: logged
    if kind == "http-500":
        assert len(failing.bodies) == 2  # tried again


def test_post_webhook_returns_within_its_budget_when_the_receiver_hangs(monkeypatch) -> None:
    alert = alerts.run_alert("nightly CatchUp", "boom", error_type="RunFailed", exit_code=30)
    settings = {"alerts": {"webhook_timeout_seconds": "0.5", "webhook_attempts": "1"}}
    with hanging_server() as url, luigi_settings(settings):
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, url)
        started = time.monotonic()
        result = alerts.post_webhook(alert)
        assert time.monotonic() - started < 2
    assert result is not None and not result.delivered


def test_an_unknown_format_is_reported_not_raised(monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    alert = alerts.run_alert("nightly CatchUp", "boom", error_type="RunFailed")
    with WebhookReceiver() as hook, luigi_settings({"alerts": {"webhook_format": "teams"}}):
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
        with caplog.at_level("ERROR", logger="pipeline.alerts"):
            result = alerts.post_webhook(alert)
    assert result is not None and not result.delivered
    assert hook.requests == []
    assert "unknown webhook format 'teams': expected one of auto, adaptive_card, message_card, json" in (
        caplog.text
    )


def test_a_run_alert_is_posted_and_mailed(monkeypatch) -> None:
    alert = alerts.run_alert(
        "nightly CatchUp",
        "the nightly run exited with status 35 before any task ran",
        error_type="RunFailed",
        date=DAY,
        exit_code=35,
        log_tail="... ERROR luigi-interface scheduling failed\nCatchUp finished with exit status 35",
    )
    with SmtpSink() as sink, WebhookReceiver(validate="adaptive_card") as hook:
        settings = {
            "alerts": {"webhook_format": "adaptive_card"},
            "email": {"receiver": f"Ops Team <{OPS}>", "sender": SENDER, "force_send": "true"},
            "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"},
        }
        with luigi_settings(settings):
            monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url())
            outcome = alerts.send_alert(alert)
        [message] = sink.wait_for(1)
    assert outcome["mail"] is True and outcome["webhook"].delivered
    assert hook.rejections == []
    card = hook.requests[0].json()["attachments"][0]["content"]
    facts = {fact["title"]: fact["value"] for fact in card["body"][1]["facts"]}
    assert facts["Exit code"] == "35" and facts["Task"] == "nightly CatchUp"
    assert "CatchUp finished with exit status 35" in card["body"][3]["text"]
    assert sink.messages[0][2] == [OPS]
    assert (
        message["Subject"] == "[company-activity-pipeline] Pipeline failure: nightly CatchUp for 2026-09-10"
    )
    text = message.get_body(("plain",)).get_content()
    assert "Exit code: 35" in text and "CatchUp finished with exit status 35" in text


def test_luigi_mails_the_failure_with_the_alert_summary(tmp_path: Path) -> None:
    task = ExplodingDay(date=DAY, message="disk full", marker=str(tmp_path / "never"))
    with SmtpSink() as sink:
        settings = {
            **LOCAL,
            "email": {"receiver": OPS, "sender": SENDER, "force_send": "true"},
            "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"},
        }
        with luigi_settings(settings):
            assert not build(task)
        [message] = sink.wait_for(1)
    assert sink.messages[0][2] == [OPS]
    assert "ExplodingDay" in message["Subject"] and "FAILED" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    assert f"Task: {task.task_id}" in text
    assert "Date: 2026-09-10" in text
    assert "Error: RuntimeError: disk full" in text
    assert "Traceback" in text  # Luigi's own traceback follows the summary


# -- through the pipeline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_failed_row_drop_check_alerts_with_the_checks_message(world: PipelineWorld, monkeypatch) -> None:
    first, second = dt.date(2026, 10, 1), dt.date(2026, 10, 2)
    world.write_crm(first, second)
    crm_file = world.crm_dir / f"crm_{second.isoformat()}.csv"
    with crm_file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    with crm_file.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows[: len(rows) // 2])  # half the companies are gone
    assert world.run(MergeDay(date=first))
    with WebhookSink() as hook:
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url)
        assert not world.run(MergeDay(date=second))
    failures = [body["json"] for body in hook.bodies]
    crm_alert = next(body for body in failures if body["task_family"] == "ValidateCrm")
    assert crm_alert["date"] == "2026-10-02"
    assert "crm.row_drop" in crm_alert["error"] and "below" in crm_alert["error"]


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_failed_notebook_cell_fails_the_render_alerts_and_mails_no_report(
    world: PipelineWorld, tmp_path: Path, monkeypatch
) -> None:
    day = dt.date(2026, 10, 1)
    world.write_crm(day, day)
    notebook = broken_notebook(tmp_path / "broken.ipynb")
    with SmtpSink() as sink, WebhookSink() as hook:
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, hook.url)
        settings = {
            "report": {
                "enabled": "true",
                "recipients": "churn-team@example.test",
                "notebook": str(notebook),
                "max_age_days": "-1",
            },
            "email": {"receiver": OPS, "sender": SENDER, "force_send": "true"},
            "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"},
        }
        with luigi_settings(settings):
            assert not world.run(RunDaily(date=day))
        messages = sink.wait_for(1)
    [alert] = [body["json"] for body in hook.bodies]
    assert alert["task_family"] == "RenderReport" and alert["date"] == "2026-10-01"
    assert "ValueError: no usage table for 2026-10-01" in alert["error"]
    assert len(messages) == 1  # Luigi's failure mail, and no report
    assert "RenderReport" in messages[0]["Subject"] and "FAILED" in messages[0]["Subject"]
    assert sink.messages[0][2] == [OPS]
    assert mailer.send_history(world.data_dir, day) == []
    assert not (report_notebook.report_dir(world.data_dir, day) / report_notebook.MANIFEST).exists()


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_failing_luigi_run_posts_an_adaptive_card_that_teams_workflows_accept(world: PipelineWorld) -> None:
    day = dt.date(2026, 10, 1)  # no CRM file: FetchCrmSnapshot fails
    world.settings["alerts"] = {"webhook_format": "adaptive_card"}
    world.write_config()
    with WebhookReceiver(validate="adaptive_card") as hook:
        result = world.run_cli(
            "RunDaily", "--date", day.isoformat(), env={alerts.WEBHOOK_URL_ENV: hook.url()}
        )
    assert result.returncode == 30, result.stderr[-3000:]
    assert hook.rejections == []
    [request] = hook.requests
    card = request.json()["attachments"][0]["content"]
    assert card["body"][0]["text"] == "Pipeline failure: FetchCrmSnapshot for 2026-10-01"
    assert "CRM snapshot for 2026-10-01 not found" in card["body"][2]["text"]
    assert "accepted the alert (HTTP 202" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_an_undeliverable_alert_is_logged_and_the_run_still_reports_its_error(world: PipelineWorld) -> None:
    day = dt.date(2026, 10, 1)
    world.settings["alerts"] = {"webhook_attempts": "2", "webhook_timeout_seconds": "1"}
    world.write_config()
    with WebhookReceiver([Reply(500, body="down for maintenance")]) as hook:
        result = world.run_cli(
            "RunDaily", "--date", day.isoformat(), env={alerts.WEBHOOK_URL_ENV: hook.url()}
        )
    assert result.returncode == 30  # the task's failure, not the alert's
    assert len(hook.requests) == 2
    assert "CRM snapshot for 2026-10-01 not found" in result.stderr
    assert "the alert was not delivered after 2 attempt(s): HTTP 500: down for maintenance" in result.stderr
    assert "secret-signature" not in result.stderr  # the webhook URL's secret stays out of the log
