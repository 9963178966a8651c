"""Failure alerts: the JSON webhook (a local HTTP server receives it) and Luigi's error e-mail (aiosmtpd).

A webhook that refuses, hangs or answers 500 never fails or holds up a run; a failed validation check
and a failed notebook cell alert with their own message; a failed render mails no report.
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

from pipeline import MergeDay, RunDaily
from pipeline.orchestration import alerts
from pipeline.orchestration.tasks import DayTask
from pipeline.reporting import mailer
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
    assert body["task"] == task.task_id and body["task_family"] == "ExplodingDay"
    assert body["date"] == "2026-09-10"
    assert body["error"] == "RuntimeError: the warehouse is gone <b>"
    assert body["error_type"] == "RuntimeError" and body["host"] and body["failed_at"]
    assert body["luigid_url"] is None  # the local scheduler: no luigid to link to
    # The same as a Teams MessageCard.
    assert body["@type"] == "MessageCard" and body["title"] == "Pipeline failure: ExplodingDay for 2026-09-10"
    assert {"name": "Date", "value": "2026-09-10"} in body["sections"][0]["facts"]


def test_alerts_link_the_task_in_luigid_when_a_scheduler_is_used() -> None:
    task = ExplodingDay(date=DAY)
    central = {"core": {"local_scheduler": "false", "scheduler_host": "10.0.0.5", "scheduler_port": "8082"}}
    with luigi_settings(central):
        facts = alerts.alert_facts(task, RuntimeError("x"))
    fragment = urllib.parse.urlencode({"tab": "graph", "taskId": task.task_id})
    assert facts["luigid_url"] == f"http://10.0.0.5:8082/static/visualiser/index.html#{fragment}"
    body = alerts.alert_body(facts)
    assert body["potentialAction"][0]["targets"][0]["uri"] == facts["luigid_url"]
    with luigi_settings({**central, "alerts": {"luigid_url": "https://luigid.example.test/"}}):
        facts = alerts.alert_facts(task, RuntimeError("x"))
    assert facts["luigid_url"].startswith("https://luigid.example.test/static/visualiser/index.html#")


@pytest.mark.parametrize("kind", ["refused", "hanging", "http-500"])
def test_a_dead_webhook_neither_fails_nor_holds_up_the_run(kind: str, tmp_path: Path, monkeypatch) -> None:
    settings = {**LOCAL, "alerts": {"webhook_timeout_seconds": "1"}}
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
        succeeded = build(failing_task, fine)
        elapsed = time.monotonic() - started
    assert not succeeded  # the task's failure, reported as ever
    assert (tmp_path / "fine").read_text() == "done"  # and the rest of the run went on
    assert elapsed < 6, elapsed  # bounded: one webhook timeout at most, not a hang


def test_post_webhook_returns_within_its_timeout_when_the_receiver_hangs() -> None:
    with hanging_server() as url:
        started = time.monotonic()
        assert alerts.post_webhook(url, {"x": 1}, timeout=0.5) is False
        assert time.monotonic() - started < 2


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
