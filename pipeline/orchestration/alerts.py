"""Failure alerts: Luigi's own error e-mails, and a JSON webhook (Microsoft Teams or anything else).

Two channels, both fed from Luigi's mechanisms:

* **E-mail** is Luigi's: when a task fails, its worker mails ``[email] receiver`` through ``[smtp]``
  (the same section the report uses; ``SMTP_PASSWORD`` from the environment is handed to it here).
  The text of that mail is what the task's ``on_failure`` returns: :func:`failure_explanation` puts the
  task, the date, the error and the luigid link above Luigi's traceback. Luigi does not mail when its
  output goes to a terminal unless ``[email] force_send = true``; from cron or systemd it does.
* **Webhook**: an event handler on ``luigi.Event.FAILURE`` POSTs :func:`alert_body` to the URL in
  ``PIPELINE_ALERT_WEBHOOK_URL`` (a Teams incoming webhook reads its MessageCard fields; any other
  receiver gets the same facts as plain keys). The POST runs on a daemon thread that the handler waits
  for at most ``[alerts] webhook_timeout_seconds``: a webhook that is down, slow or hanging is logged
  and never fails or holds up the pipeline.

A failed validation check (a row drop, say) fails its task with the check's message, so it alerts with
that message like any other failure.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import traceback
import urllib.parse
from typing import Any

import luigi
import luigi.configuration

from pipeline.clock import utc_iso_seconds
from pipeline.config import SMTP_PASSWORD_ENV, AlertsConfig
from pipeline.orchestration.scheduler import (
    VISUALISER_PATH,
    command_line_scheduler_options,
    scheduler_address,
)
from pipeline.redaction import redact_secret_url

log = logging.getLogger("pipeline.alerts")

WEBHOOK_URL_ENV = "PIPELINE_ALERT_WEBHOOK_URL"
ERROR_SUMMARY_CHARS = 2000
_installed = False


def install() -> None:
    """Register the webhook handler and hand SMTP_PASSWORD to Luigi's mailer (once per process)."""
    global _installed
    if _installed:
        return
    luigi.Task.event_handler(luigi.Event.FAILURE)(_on_failure)
    password = os.environ.get(SMTP_PASSWORD_ENV)
    config = luigi.configuration.get_config()
    if password and not config.has_option("smtp", "password"):
        if not config.has_section("smtp"):
            config.add_section("smtp")
        config.set("smtp", "password", password)  # in memory only, for Luigi's error e-mails
    _installed = True


# -- what an alert says -------------------------------------------------------------------------------


def task_date(task: luigi.Task) -> str | None:
    value = getattr(task, "date", None)
    return value.isoformat() if isinstance(value, dt.date) else None


def error_summary(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_SUMMARY_CHARS else text[: ERROR_SUMMARY_CHARS - 3] + "..."


def luigid_task_url(task: luigi.Task) -> str | None:
    """The task in the luigid visualiser, when this run uses a central scheduler (None: local)."""
    from luigi.interface import core

    try:
        if core().local_scheduler or command_line_scheduler_options().local_scheduler:
            return None
        base = AlertsConfig().luigid_url.rstrip("/")
        if not base:
            host, port = scheduler_address()
            base = f"http://{host}:{port}"
    except Exception as error:  # an alert must never fail on a link
        log.debug("no luigid link: %s", error)
        return None
    fragment = urllib.parse.urlencode({"tab": "graph", "taskId": task.task_id})
    return f"{base}{VISUALISER_PATH}#{fragment}"


def alert_facts(task: luigi.Task, error: BaseException) -> dict[str, Any]:
    return {
        "task": task.task_id,
        "task_family": task.get_task_family(),
        "date": task_date(task),
        "error": error_summary(error),
        "error_type": type(error).__name__,
        "host": socket.gethostname(),
        "failed_at": utc_iso_seconds(),
        "luigid_url": luigid_task_url(task),
    }


def alert_body(facts: dict[str, Any]) -> dict[str, Any]:
    """The webhook's JSON: the facts as plain keys, plus a MessageCard that Teams shows as a card."""
    title = f"Pipeline failure: {facts['task_family']}" + (f" for {facts['date']}" if facts["date"] else "")
    card_facts = [
        {"name": "Task", "value": facts["task"]},
        {"name": "Date", "value": facts["date"] or "-"},
        {"name": "Host", "value": facts["host"]},
        {"name": "Failed at", "value": facts["failed_at"]},
    ]
    body: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": "B91C1C",
        "summary": title,
        "title": title,
        "text": facts["error"].replace("\n", "  \n"),  # Markdown line breaks in Teams
        "sections": [{"facts": card_facts}],
        **facts,
    }
    if facts["luigid_url"]:
        body["potentialAction"] = [
            {
                "@type": "OpenUri",
                "name": "Open in luigid",
                "targets": [{"os": "default", "uri": facts["luigid_url"]}],
            }
        ]
    return body


def failure_explanation(task: luigi.Task, error: BaseException, luigi_text: str) -> str:
    """What Luigi mails and shows for a failed task: the alert's facts above its own traceback."""
    try:
        facts = alert_facts(task, error)
    except Exception:  # the explanation of a failure must never fail itself
        log.exception("could not summarise the failure of %s", getattr(task, "task_id", task))
        return luigi_text
    lines = [f"Task: {facts['task']}", f"Date: {facts['date'] or '-'}", f"Error: {facts['error']}"]
    if facts["luigid_url"]:
        lines.append(f"luigid: {facts['luigid_url']}")
    return "\n".join(lines) + "\n\n" + luigi_text


# -- the webhook --------------------------------------------------------------------------------------


def post_webhook(url: str, body: dict[str, Any], timeout: float) -> bool:
    """POST ``body`` as JSON; True when the receiver answered 2xx. Never raises, never blocks longer
    than about ``timeout`` seconds (the request runs on a daemon thread that is abandoned if late)."""
    import requests

    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            response = requests.post(url, json=body, timeout=(min(timeout, 3.0), timeout))
            outcome["status"] = response.status_code
        except Exception as error:
            outcome["error"] = f"{type(error).__name__}: {error}"

    worker = threading.Thread(target=send, name="alert-webhook", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    target = redact_secret_url(url)
    if worker.is_alive():
        log.error("alert webhook %s did not answer within %.1fs; the alert is dropped", target, timeout)
        return False
    if "error" in outcome:
        log.error("alert webhook %s failed: %s", target, _redact_text(outcome["error"], url))
        return False
    if not 200 <= outcome["status"] < 300:
        log.error("alert webhook %s answered HTTP %s", target, outcome["status"])
        return False
    log.info("alert webhook %s accepted the alert (HTTP %s)", target, outcome["status"])
    return True


def _redact_text(text: str, url: str) -> str:
    return text.replace(url, redact_secret_url(url))


def send_alert(task: luigi.Task, error: BaseException) -> bool | None:
    """Send the webhook alert for a failed task; None when no webhook is configured."""
    url = os.environ.get(WEBHOOK_URL_ENV, "").strip()
    if not url:
        return None
    try:
        timeout = AlertsConfig().webhook_timeout_seconds
        body = alert_body(alert_facts(task, error))
    except Exception:
        log.exception("could not build the alert for %s", getattr(task, "task_id", task))
        return False
    return post_webhook(url, body, timeout)


def _on_failure(task: luigi.Task, error: BaseException) -> None:
    try:
        send_alert(task, error)
    except Exception:  # belt and braces: Luigi would log it too, but never let an alert break a run
        log.error("alert failed: %s", traceback.format_exc())
