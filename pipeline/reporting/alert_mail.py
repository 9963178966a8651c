"""The e-mail of an alert that does not come from a Luigi task (a nightly run that failed before any task
ran, a day the freshness check found not loaded): plain text, the same facts as the webhook's.

Luigi mails failed tasks itself; this is the mail for everything else, sent with
:func:`pipeline.reporting.mailer.send_message` over the same ``[smtp]`` settings.
"""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.utils import formatdate

from pipeline.reporting.mailer import MAIL_POLICY
from pipeline.reporting.webhooks import Alert, log_tail_excerpt

SUBJECT_PREFIX = "[company-activity-pipeline]"


def alert_text(alert: Alert) -> str:
    """The body: the facts, the error, and the end of the log when there is one."""
    lines = [
        alert.title,
        "",
        f"What:      {alert.task}",
        f"Date:      {alert.date or '-'}",
        f"Host:      {alert.host}",
        f"At:        {alert.failed_at}",
    ]
    if alert.exit_code is not None:
        lines.append(f"Exit code: {alert.exit_code}")
    if alert.luigid_url:
        lines.append(f"luigid:    {alert.luigid_url}")
    lines += ["", alert.error.rstrip()]
    tail = log_tail_excerpt(alert)
    if tail:
        lines += ["", "The end of the log:", "", tail]
    return "\n".join(lines) + "\n"


def alert_message(alert: Alert, *, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = f"{SUBJECT_PREFIX} {alert.title}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<pipeline-alert.{uuid.uuid4().hex[:16]}@{domain}>"
    message.set_content(alert_text(alert), subtype="plain", charset="utf-8")
    return message
