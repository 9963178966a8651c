"""Mailing the rendered churn report: the MIME message, SMTP, and the record of what was sent.

The message::

    multipart/alternative
    ├── text/plain            the headline numbers, the newly at risk, the warnings (summary.json)
    └── multipart/related
        ├── text/html         email/body.html: inline CSS, no script, no data: URI
        └── image/png ...     one inline part per chart, referenced from the HTML as cid:

SMTP settings are Luigi's own ``[smtp]`` section (host, port, ssl, no_tls, username, timeout, with
Luigi's meanings: without ``no_tls`` the connection is upgraded with STARTTLS), the sender is
``[email] sender``, the recipients ``[report] recipients``; the password comes from the environment
(``SMTP_PASSWORD``).

``{report dir}/sent.json`` records every decision for the day (sent, or not sent and why) with the
version of the data the report was built from. It is ``SendReport``'s marker: a day whose latest
record is for the current data is done, so a re-run does not mail again; after ``RunDaily --refresh``
the data version differs and the new mail says it is a correction of the earlier one. The record is
written right after the SMTP server accepted the message: a crash between the two mails the day again
on the next run (at least once, never silently not at all).

Why one module of about 470 lines: the message (parts, inline charts, folding), the correction's
"What changed" and the send record are read together when a mail looks wrong; SMTP itself is short.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.policy import default as default_policy
from email.utils import formatdate, getaddresses, parseaddr
from pathlib import Path
from typing import Any

from pipeline import clock, files
from pipeline.reporting import html_blocks, notebook, rendering
from pipeline.warehouse.corrections import DayCorrection

log = logging.getLogger("pipeline.report")


SMTP_PASSWORD_ENV = "SMTP_PASSWORD"
SEND_LOG = "sent.json"
SENT, NOT_SENT = "sent", "not_sent"


class MailError(RuntimeError):
    """The report could not be mailed (the message is incomplete or the configuration is wrong)."""


class _FoldingPolicy(EmailPolicy):
    """Python's default e-mail policy, except that an ASCII Subject is folded at the last space that keeps
    a line within ``max_line_length``. The standard folder moves a subject of 70 to 77 characters whole to
    a continuation line ("Subject:" CRLF SP "Daily churn ..."), which mail readers, Python's own parser
    among them, show with a leading space."""

    def _subject(self, name: str, value: object) -> str | None:
        text = str(value)
        if name.lower() != "subject" or not text.isascii() or "\r" in text or "\n" in text:
            return None
        lines, line = [], f"{name}:"
        for word in text.split(" "):
            if len(line) + 1 + len(word) > self.max_line_length and line != f"{name}:":
                lines.append(line)
                line = ""  # the continuation line starts with the folding space
            line += " " + word
        lines.append(line)
        return self.linesep.join(lines) + self.linesep

    def fold(self, name: str, value: object) -> str:
        return self._subject(name, value) or super().fold(name, value)

    def fold_binary(self, name: str, value: object) -> bytes:
        folded = self._subject(name, value)
        return folded.encode("ascii") if folded else super().fold_binary(name, value)


# The policy of every message the pipeline builds (the report, alert mails).
MAIL_POLICY = _FoldingPolicy(**default_policy.__dict__)


@dataclass
class RenderedReport:
    day: dt.date
    directory: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    email_html: str
    charts: list[tuple[str, str, bytes]]  # (cid, file name, PNG)

    @property
    def data_version(self) -> str:
        return self.manifest["data_version"]

    @property
    def html_path(self) -> Path:
        return self.directory / self.manifest["files"]["html"]


def load_rendered(data_dir: Path | str, day: dt.date) -> RenderedReport:
    directory = notebook.report_dir(data_dir, day).resolve()
    manifest = notebook.read_manifest(data_dir, day)
    if manifest is None:
        raise MailError(f"the report of {day.isoformat()} is not rendered ({directory / notebook.MANIFEST})")
    outputs = manifest["files"]
    summary = files.read_json(directory / outputs["summary"])
    if summary is None:
        raise MailError(f"{directory / outputs['summary']} is missing")
    charts = [
        (rendering.chart_cid(name, day), name, (directory / name).read_bytes()) for name in outputs["charts"]
    ]
    body = (directory / outputs["email_html"]).read_text(encoding="utf-8")
    return RenderedReport(day, directory, manifest, summary, body, charts)


@dataclass(frozen=True)
class Correction:
    """The earlier mail a corrected report replaces, and what the re-merge changed on the day since
    (None: no value of the day changed; the day was only loaded again)."""

    sent_at: str
    message_id: str
    changes: DayCorrection | None = None


def what_changed(correction: Correction) -> list[str]:
    """The "What changed" lines of a correction: the headline numbers before and after, then the rows."""
    changes = correction.changes
    if changes is None:
        return ["No value of this day changed: it was loaded again with the same data."]
    merged = f"{changes.merged_date.isoformat()}, {changes.corrected_at:%Y-%m-%d %H:%M} UTC"
    lines = [f"What changed (merge of {merged}):"]
    for label, (before, after) in (
        ("companies", changes.companies),
        ("active users", changes.active_users),
        ("companies at churn risk", changes.churn_risk),
    ):
        lines.append(f"  {label:<24} {before:>12,} -> {after:>12,} ({after - before:+,})")
    columns = ", ".join(f"{column} {count:,}" for column, count in sorted(changes.changed_columns.items()))
    lines.append(
        f"  rows: {changes.rows_added:,} added, {changes.rows_removed:,} removed, "
        f"{changes.rows_changed:,} changed" + (f" ({columns})" if columns else "")
    )
    return lines


def _metric(summary: dict[str, Any], key: str) -> dict[str, Any]:
    return next(metric for metric in summary["headline"] if metric["key"] == key)


def subject(summary: dict[str, Any], correction: Correction | None = None) -> str:
    """E.g. 'Daily churn report 2026-11-27: 42 companies at churn risk (+3 vs D-1)'."""
    risk = _metric(summary, "churn_risk_companies")
    if risk["value"] is None:
        tail = "churn risk not known yet (too little history)"
    else:
        change = risk["change_previous_day"]
        tail = f"{risk['value']:,} {'company' if risk['value'] == 1 else 'companies'} at churn risk"
        if change is not None:
            tail += f" ({change:+,} vs D-1)" if change else " (no change vs D-1)"
    text = f"Daily churn report {summary['date']}: {tail}"
    return f"Correction: {text}" if correction else text


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _change(value: int | None) -> str:
    return "-" if value is None else f"{value:+,}"


def _clean(value: Any) -> str:
    """A value from the data on one line of plain text."""
    return re.sub(r"\s+", " ", "" if value is None else str(value)).strip()


def plain_text(rendered: RenderedReport, correction: Correction | None = None) -> str:
    """The text/plain part: the headline numbers and the lists' first rows, for any mail client."""
    summary = rendered.summary
    title = f"Daily churn report {summary['date']}"
    lines = [title, "=" * len(title), ""]
    if correction:
        lines += [
            f"CORRECTION: this report replaces the one sent at {correction.sent_at}: the data of "
            f"{summary['date']} was loaded again since.",
            *what_changed(correction),
            "",
        ]
    lines += [f"{note}" for note in summary["history_notes"]]
    if summary["history_notes"]:
        lines.append("")
    header = f"{'':<34} {summary['date']:>12} {'vs D-1':>12} {'vs D-7':>12}"
    lines += [header, "-" * len(header)]
    for metric in summary["headline"]:
        lines.append(
            f"{metric['label']:<34} {_number(metric['value']):>12} "
            f"{_change(metric['change_previous_day']):>12} {_change(metric['change_previous_week']):>12}"
        )
    lines.append(f"(D-1 = {summary['previous_day']}, D-7 = {summary['previous_week']}; - = not known)")
    lines.append("")
    if summary["churn_known"]:
        newly = summary["newly_at_risk"]
        lines.append(f"Newly at risk: {newly['count']:,}")
        for company in newly["top"]:
            idle = company.get("days_idle")
            lines.append(
                f"  - {_clean(company.get('company_name')) or '(no name)'} ({company['company_id']}), "
                f"{_clean(company.get('country')) or '-'}, {_clean(company.get('industry_tag')) or '-'}, "
                f"last active {company.get('last_active_date') or 'not in the last 30 days'}"
                + (f" ({idle} days idle)" if idle is not None else "")
            )
        if newly["count"] > len(newly["top"]):
            lines.append(f"  ... and {newly['count'] - len(newly['top']):,} more (newly_at_risk.csv)")
        lines.append(f"Recovered: {summary['recovered']['count']:,}")
    else:
        lines.append("Newly at risk / recovered: churn risk is not known for this day yet.")
    lines.append(f"Orphans (usage without a CRM company): {summary['orphans']['count']:,}")
    warnings = summary["data_quality"]["warnings"]
    if warnings:
        lines.append(f"Data-quality warnings ({summary['data_quality']['source']}): {len(warnings)}")
        lines += [f"  - {_clean(warning)}" for warning in warnings[:20]]
    else:
        lines.append("Data-quality warnings: none recorded")
    lines += ["", f"The full report with charts: {rendered.html_path}", ""]
    return "\n".join(lines)


def correction_banner(correction: Correction, day: str) -> str:
    return (
        f'<div style="{html_blocks.FONT};background:#fef2f2;color:#991b1b;border:1px solid #fecaca;'
        f'border-radius:4px;padding:8px 12px;margin:0 0 12px;font-size:14px">'
        f"<strong>Correction.</strong> This report replaces the one sent at "
        f"{html_blocks.esc(correction.sent_at)}: the data of {html_blocks.esc(day)} was loaded again since."
        + "".join(
            f'<div style="white-space:pre;font-family:monospace;font-size:12px;margin-top:4px">'
            f"{html_blocks.esc(line)}</div>"
            for line in what_changed(correction)
        )
        + "</div>"
    )


def build_message(
    rendered: RenderedReport,
    *,
    sender: str,
    recipients: list[str],
    correction: Correction | None = None,
) -> EmailMessage:
    """The report as a multipart/alternative message with the charts inline."""
    body = rendered.email_html
    banner = correction_banner(correction, rendered.summary["date"]) if correction else ""
    body = body.replace(rendering.CORRECTION_SLOT, banner, 1)
    referenced = set(re.findall(r'src="cid:([^"]+)"', body))
    attached = {cid for cid, _name, _png in rendered.charts}
    if referenced - attached:
        raise MailError(f"the e-mail refers to images it does not carry: {sorted(referenced - attached)}")

    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = subject(rendered.summary, correction)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    # Short enough to stay on one header line (a folded In-Reply-To confuses some parsers).
    message["Message-ID"] = f"<churn-report.{rendered.day.isoformat()}.{uuid.uuid4().hex[:16]}@{domain}>"
    message["X-Churn-Report-Date"] = rendered.day.isoformat()
    if correction:
        message["X-Churn-Report-Correction"] = "yes"
        if correction.message_id:
            message["In-Reply-To"] = correction.message_id
            message["References"] = correction.message_id
    message.set_content(plain_text(rendered, correction), subtype="plain", charset="utf-8")
    message.add_alternative(body, subtype="html", charset="utf-8")
    html_part = message.get_payload()[1]
    for cid, name, png in rendered.charts:
        if cid in referenced:
            html_part.add_related(png, "image", "png", cid=f"<{cid}>", filename=name, disposition="inline")
    return message


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to hand mail over; built from Luigi's ``[smtp]`` by ``pipeline.config.smtp_settings``."""

    host: str
    port: int
    ssl: bool = False
    no_tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    local_hostname: str | None = None


def send_message(message: EmailMessage, sender: str, recipients: list[str], settings: SmtpSettings) -> dict:
    """Hand the message to the SMTP server; returns the recipients it refused (all refused: raises)."""
    context = ssl.create_default_context()
    if settings.ssl:
        server: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.host,
            settings.port or 465,
            settings.local_hostname,
            timeout=settings.timeout,
            context=context,
        )
    else:
        server = smtplib.SMTP(
            settings.host, settings.port or 25, settings.local_hostname, timeout=settings.timeout
        )
    with server:
        if not settings.ssl and not settings.no_tls:
            server.starttls(context=context)
        if settings.username:
            server.login(settings.username, settings.password or "")
        return server.send_message(
            message, from_addr=parseaddr(sender)[1] or sender, to_addrs=envelope_addresses(recipients)
        )


def send_log_path(data_dir: Path | str, day: dt.date) -> Path:
    return notebook.report_dir(data_dir, day) / SEND_LOG


def send_history(data_dir: Path | str, day: dt.date) -> list[dict[str, Any]]:
    document = files.read_json(send_log_path(data_dir, day))
    return list(document.get("history", [])) if document else []


def _record(data_dir: Path | str, day: dt.date, entry: dict[str, Any]) -> None:
    history = [*send_history(data_dir, day), entry]
    files.write_json_atomic(send_log_path(data_dir, day), {"date": day.isoformat(), "history": history})


def parse_recipients(value: str, setting: str = "[report] recipients") -> list[str]:
    """The addresses of a comma-separated list (``;`` works too), display names allowed:
    ``Jane Doe <jane@example.com>, "Ops, EU" <ops@x.org>, cs@x.org``. Each is parsed with
    :func:`email.utils.getaddresses` and returned in its canonical form (the name quoted when needed)."""
    recipients, bad = [], []
    for item in _address_items(value or ""):
        parsed = getaddresses([item])
        if len(parsed) != 1 or not _is_address(parsed[0][1]):
            bad.append(item)
            continue
        name, addr = parsed[0]
        try:
            recipients.append(str(Address(display_name=name, addr_spec=addr)))
        except (ValueError, IndexError, HeaderParseError):
            bad.append(item)
    if bad:
        raise MailError(
            f"{setting} has entries that are not e-mail addresses: {bad} "
            "(separate addresses with commas; a name goes before the address: Jane Doe <jane@example.com>)"
        )
    return recipients


def _address_items(value: str) -> list[str]:
    """``value`` split at the commas and semicolons that are outside quotes and angle brackets."""
    items, current, quoted, angle = [], [], False, False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        if char in ",;" and not quoted and not angle:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _is_address(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return bool(at and local and domain) and not any(char.isspace() for char in addr)


def envelope_addresses(recipients: list[str]) -> list[str]:
    """The bare addresses of the SMTP envelope (``RCPT TO``) for recipients with display names."""
    return [addr for _name, addr in getaddresses(recipients)]


def _recorded_after(changes: DayCorrection | None, sent_at: str | None) -> bool:
    """Whether ``changes`` were made after the mail sent at ``sent_at`` (ISO, with offset)."""
    if changes is None:
        return False
    try:
        sent = dt.datetime.fromisoformat(sent_at or "").astimezone(dt.UTC).replace(tzinfo=None)
    except ValueError:
        return True  # an unreadable record of the earlier mail: say what the latest change was
    return changes.corrected_at >= sent.replace(microsecond=0)


def deliver(
    data_dir: Path | str,
    day: dt.date,
    *,
    recipients: list[str],
    sender: str,
    settings: SmtpSettings | None,
    max_age_days: int = -1,
    today: dt.date | None = None,
    changes: DayCorrection | None = None,
) -> dict[str, Any]:
    """Mail the rendered report of ``day`` unless that is not wanted; record the decision either way.

    Not sent: no recipients configured, or a first report of a day older than ``max_age_days`` (a
    backfill; a negative value means no limit). A correction is always sent once a report of the day
    was mailed before, since its readers have the wrong numbers; ``changes`` (the day's latest recorded
    correction, ``pipeline.warehouse.corrections``) is its "What changed" section.
    """
    rendered = load_rendered(data_dir, day)
    mailed = [entry for entry in send_history(data_dir, day) if entry.get("status") == SENT]
    previous = mailed[-1] if mailed else None
    correction = (
        Correction(
            previous.get("sent_at", "?"),
            previous.get("message_id", ""),
            changes if _recorded_after(changes, previous.get("sent_at")) else None,
        )
        if previous and previous.get("data_version") != rendered.data_version
        else None
    )
    now = clock.utc_iso_seconds()
    entry: dict[str, Any] = {"data_version": rendered.data_version, "recorded_at": now}
    age = ((today or clock.today_utc()) - day).days
    if not recipients:
        entry.update(status=NOT_SENT, reason="no recipients configured ([report] recipients is empty)")
    elif correction is None and 0 <= max_age_days < age:
        entry.update(
            status=NOT_SENT,
            reason=f"{day.isoformat()} is {age} days old, more than [report] max_age_days = {max_age_days} "
            "(a backfill); set max_age_days = -1 to mail every day",
        )
    else:
        if settings is None:
            raise MailError("no SMTP settings")
        message = build_message(rendered, sender=sender, recipients=recipients, correction=correction)
        refused = send_message(message, sender, recipients, settings)
        entry.update(
            status=SENT,
            sent_at=now,
            message_id=message["Message-ID"],
            subject=message["Subject"],
            recipients=recipients,
            refused=sorted(refused),
            correction=correction is not None,
            changes=correction.changes.as_json() if correction and correction.changes else None,
        )
        if refused:
            log.warning("the SMTP server refused some recipients of the report of %s: %s", day, refused)
    _record(data_dir, day, entry)
    if entry["status"] == SENT:
        log.info(
            "mailed the%s churn report of %s to %d recipient(s): %s",
            " corrected" if correction else "",
            day,
            len(recipients),
            entry["subject"],
        )
    else:
        log.info("the churn report of %s is rendered, not mailed: %s", day, entry["reason"])
    return entry
