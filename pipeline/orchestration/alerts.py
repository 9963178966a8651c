"""Failure alerts: e-mail and a webhook (Microsoft Teams Workflows, a legacy connector, or any JSON receiver).

Two kinds of failure alert, through the same two channels:

* **A failed task.** E-mail is Luigi's: its worker mails ``[email] receiver`` through ``[smtp]`` (the
  section the report uses; ``SMTP_PASSWORD`` from the environment is handed to it here). The text of that
  mail is what the task's ``on_failure`` returns: :func:`failure_explanation` puts the task, the date, the
  error and the luigid link above Luigi's traceback. Luigi does not mail when its output goes to a terminal
  unless ``[email] force_send = true``; from cron or systemd it does. The webhook: an event handler on
  ``luigi.Event.FAILURE`` POSTs the alert to ``PIPELINE_ALERT_WEBHOOK_URL``.
* **A run, not a task** (a nightly run that failed before any task ran, a day that the freshness check
  found not loaded: ``pipeline.orchestration.watchdog``): :func:`send_alert` POSTs the same webhook and
  mails ``[email] receiver`` itself (a plain-text mail, with Luigi's terminal rule).

The webhook's payload is ``[alerts] webhook_format`` (``pipeline.reporting.webhooks`` builds it: an
Adaptive Card for Teams Workflows, a MessageCard, or plain JSON). Delivery retries 429, 5xx and timeouts
with backoff and ``Retry-After``, at most ``[alerts] webhook_attempts`` times of
``webhook_timeout_seconds`` each; an alert that cannot be delivered is logged, and never fails the run,
holds it up without bound, or hides the error it reports.

A failed validation check (a row drop, say) fails its task with the check's message, so it alerts with
that message like any other failure.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import smtplib
import socket
import sys
import traceback
import urllib.parse

import luigi
import luigi.configuration

from pipeline.clock import utc_iso_seconds
from pipeline.config import SMTP_PASSWORD_ENV, AlertsConfig, smtp_settings
from pipeline.orchestration.scheduler import (
    VISUALISER_PATH,
    command_line_scheduler_options,
    scheduler_address,
)
from pipeline.reporting import alert_mail, mailer, webhooks

log = logging.getLogger("pipeline.alerts")

WEBHOOK_URL_ENV = "PIPELINE_ALERT_WEBHOOK_URL"
ERROR_SUMMARY_CHARS = 2000
# Between webhook attempts: 1 s, then 2 s (a Retry-After from the receiver wins).
WEBHOOK_BACKOFF_SECONDS = 1.0
# [alerts] defaults, used as well when that section cannot be read (an alert must still go out).
DEFAULT_TIMEOUT_SECONDS, DEFAULT_ATTEMPTS = 5.0, 3
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


def task_alert(task: luigi.Task, error: BaseException) -> webhooks.Alert:
    """The alert of a failed task."""
    return webhooks.Alert(
        task=task.task_id,
        task_family=task.get_task_family(),
        date=task_date(task),
        error=error_summary(error),
        error_type=type(error).__name__,
        host=socket.gethostname(),
        failed_at=utc_iso_seconds(),
        luigid_url=luigid_task_url(task),
    )


def run_alert(
    what: str,
    error: str,
    *,
    error_type: str,
    date: dt.date | None = None,
    exit_code: int | None = None,
    log_tail: str | None = None,
) -> webhooks.Alert:
    """The alert of something that is not a task: ``what`` is e.g. "nightly CatchUp" or "CheckFreshness"."""
    return webhooks.Alert(
        task=what,
        task_family=what,
        date=date.isoformat() if date else None,
        error=error if len(error) <= ERROR_SUMMARY_CHARS else error[: ERROR_SUMMARY_CHARS - 3] + "...",
        error_type=error_type,
        host=socket.gethostname(),
        failed_at=utc_iso_seconds(),
        luigid_url=None,
        exit_code=exit_code,
        log_tail=log_tail,
    )


def failure_explanation(task: luigi.Task, error: BaseException, luigi_text: str) -> str:
    """What Luigi mails and shows for a failed task: the alert's facts above its own traceback."""
    try:
        alert = task_alert(task, error)
    except Exception:  # the explanation of a failure must never fail itself
        log.exception("could not summarise the failure of %s", getattr(task, "task_id", task))
        return luigi_text
    lines = [f"Task: {alert.task}", f"Date: {alert.date or '-'}", f"Error: {alert.error}"]
    if alert.luigid_url:
        lines.append(f"luigid: {alert.luigid_url}")
    return "\n".join(lines) + "\n\n" + luigi_text


# -- delivery -----------------------------------------------------------------------------------------


def post_webhook(alert: webhooks.Alert) -> webhooks.DeliveryResult | None:
    """POST ``alert`` to ``PIPELINE_ALERT_WEBHOOK_URL`` in ``[alerts] webhook_format``; None when no
    webhook is configured. Never raises; bounded by ``webhook_attempts`` x ``webhook_timeout_seconds``."""
    url = os.environ.get(WEBHOOK_URL_ENV, "").strip()
    if not url:
        return None
    fmt, timeout, attempts = "auto", DEFAULT_TIMEOUT_SECONDS, DEFAULT_ATTEMPTS
    try:
        config = AlertsConfig()
        timeout, attempts = float(config.webhook_timeout_seconds), int(config.webhook_attempts)
        fmt = config.webhook_format
    except Exception as error:  # an unreadable [alerts] section must not silence the alert: use defaults
        log.error("[alerts] cannot be read (%s: %s); alerting with the defaults", type(error).__name__, error)
    try:
        body = webhooks.payload(alert, webhooks.resolve_format(fmt, url))
    except ValueError as error:  # an unknown format: say so, never fail the run that is being reported
        log.error("the alert for %s was not sent: %s", alert.task, error)
        return webhooks.DeliveryResult(delivered=False, attempts=0, error=str(error))
    return webhooks.post_alert(
        url, body, timeout=timeout, attempts=attempts, backoff_seconds=WEBHOOK_BACKOFF_SECONDS
    )


def mail_alert(alert: webhooks.Alert) -> bool | None:
    """Mail ``alert`` to ``[email] receiver`` over ``[smtp]``, as Luigi mails a failed task: not when the
    output is a terminal unless ``[email] force_send``. None when not mailed; never raises."""
    from luigi.notifications import email as email_config

    try:
        config = email_config()
        recipients = mailer.parse_recipients(config.receiver or "", "[email] receiver")
        if not recipients:
            return None
        if sys.stdout is not None and sys.stdout.isatty() and not config.force_send:
            log.info("the alert is not mailed from a terminal ([email] force_send = true mails it anyway)")
            return None
        message = alert_mail.alert_message(alert, sender=config.sender, recipients=recipients)
        settings = mailer.SmtpSettings(**smtp_settings())
        mailer.send_message(message, config.sender, recipients, settings)
    except (OSError, smtplib.SMTPException, mailer.MailError, ValueError) as error:
        log.error("the alert for %s could not be mailed: %s: %s", alert.task, type(error).__name__, error)
        return False
    log.info("mailed the alert for %s to %s", alert.task, ", ".join(recipients))
    return True


def send_alert(alert: webhooks.Alert) -> dict[str, object]:
    """Both channels for an alert that does not come from a task (Luigi mails failed tasks itself).

    Returns what happened per channel: ``{"webhook": DeliveryResult | None, "mail": bool | None}``.
    """
    return {"webhook": post_webhook(alert), "mail": mail_alert(alert)}


def send_task_alert(task: luigi.Task, error: BaseException) -> webhooks.DeliveryResult | None:
    """The webhook alert of a failed task; None when no webhook is configured."""
    if not os.environ.get(WEBHOOK_URL_ENV, "").strip():
        return None
    try:
        alert = task_alert(task, error)
    except Exception:
        log.exception("could not build the alert for %s", getattr(task, "task_id", task))
        return webhooks.DeliveryResult(delivered=False, attempts=0, error="the alert could not be built")
    return post_webhook(alert)


def _on_failure(task: luigi.Task, error: BaseException) -> None:
    try:
        send_task_alert(task, error)
    except Exception:  # belt and braces: Luigi would log it too, but never let an alert break a run
        log.error("alert failed: %s", traceback.format_exc())
