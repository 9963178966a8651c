"""Mailing the churn report: a real SMTP server (aiosmtpd) on loopback receives it.

The message's structure, its images, recipients and subject, the escaped names, the plain-text numbers
against direct SQL; the send record (no mail without recipients, none for old days, corrections); and
through the Luigi graph: one mail per day, none on a re-run, a correction after ``--refresh``.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import PipelineWorld, luigi_settings
from loopback_servers import SmtpSink
from report_world import (
    DAY,
    LABELS,
    SCRIPT_NAME,
    Rendered,
    change,
    direct_totals,
    mariadb_report,
    postgres_report,
    rendered,
    sqlite_report,
)

from pipeline import RunDaily, config, files
from pipeline.reporting import mailer
from pipeline.reporting import notebook as report_notebook

# The module-scoped fixtures used here.
__all__ = ["mariadb_report", "postgres_report", "rendered", "sqlite_report"]

RECIPIENTS = ["churn-team@example.test", "cs-leads@example.test"]
SENDER = "pipeline@example.test"


def structure(message: EmailMessage) -> list:
    """The MIME tree as nested content types."""
    if message.is_multipart():
        return [message.get_content_type(), [structure(part) for part in message.iter_parts()]]
    return message.get_content_type()


def copy_report(rendered: Rendered, tmp_path: Path) -> Path:
    """A private copy of the rendered report's folder (the send record is written beside it)."""
    data_dir = tmp_path / "data"
    shutil.copytree(rendered.directory, report_notebook.report_dir(data_dir, DAY))
    return data_dir


def deliver(data_dir: Path, sink: SmtpSink | None, recipients=RECIPIENTS, **options) -> dict:
    settings = mailer.SmtpSettings("127.0.0.1", sink.port, no_tls=True) if sink else None
    return mailer.deliver(
        data_dir, DAY, recipients=list(recipients), sender=SENDER, settings=settings, **options
    )


def test_the_report_arrives_over_smtp(rendered: Rendered, tmp_path: Path) -> None:
    data_dir = copy_report(rendered, tmp_path)
    with SmtpSink() as sink:
        entry = deliver(data_dir, sink)
        [message] = sink.wait_for(1)
    _message, envelope_from, envelope_to = sink.messages[0]

    assert entry["status"] == "sent" and not entry["correction"]
    assert envelope_from == SENDER and envelope_to == RECIPIENTS
    assert message["To"] == ", ".join(RECIPIENTS) and message["From"] == SENDER
    assert message["Subject"] == "Daily churn report 2026-09-10: 2 companies at churn risk (no change vs D-1)"
    charts = rendered.manifest["files"]["charts"]
    assert structure(message) == [
        "multipart/alternative",
        ["text/plain", ["multipart/related", ["text/html", *["image/png"] * len(charts)]]],
    ]

    related = message.get_payload()[1]
    html_part, *images = related.iter_parts()
    body = html_part.get_content()
    referenced = re.findall(r'src="cid:([^"]+)"', body)
    by_cid = {image["Content-ID"].strip("<>"): image for image in images}
    assert referenced and set(referenced) == set(by_cid)  # every cid: has its image, and no stray one
    for cid, image in by_cid.items():
        assert image.get_content_disposition() == "inline"
        assert image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.get_filename() == cid.split(".")[0] + ".png"
    assert "<script" not in body.lower() and "data:" not in body and "<style" not in body
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; Sons" in body
    assert len(body.encode()) < 100_000

    text = message.get_body(("plain",)).get_content()
    assert SCRIPT_NAME in text  # plain text needs no escaping: it is never interpreted
    assert_plain_text_numbers(text, rendered)


def assert_plain_text_numbers(text: str, rendered: Rendered) -> None:
    """Each headline line of the plain text: D's value, the change vs D-1 and vs D-7, as SQL has them."""
    today = direct_totals(rendered.engine, DAY)
    day_before = direct_totals(rendered.engine, DAY - dt.timedelta(days=1))
    week_before = direct_totals(rendered.engine, DAY - dt.timedelta(days=7))

    def parse(cell: str) -> int | None:
        return None if cell == "-" else int(cell.replace(",", ""))

    for key, label in LABELS.items():
        line = next(line for line in text.splitlines() if line.startswith(label + " "))
        value, versus_day, versus_week = line[len(label) :].split()
        assert parse(value) == today[key], line
        assert parse(versus_day) == change(today[key], day_before[key]), line
        assert parse(versus_week) == change(today[key], week_before[key]), line
    assert "Newly at risk: 1" in text and "Recovered: 1" in text
    assert "Orphans (usage without a CRM company): 2" in text
    assert "Data-quality warnings (validation results): 1" in text


def test_smtp_login_uses_the_password_from_the_environment(
    sqlite_report: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiosmtpd.smtp import AuthResult

    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)

    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-from-env")
    sink = SmtpSink()
    sink.controller.SMTP_kwargs = {"authenticator": authenticator, "auth_require_tls": False}
    settings = {
        "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true", "username": "reporter"}
    }
    with sink, luigi_settings(settings):
        message = mailer.build_message(
            mailer.load_rendered(sqlite_report.data_dir, DAY), sender=SENDER, recipients=RECIPIENTS[:1]
        )
        mailer.send_message(message, SENDER, RECIPIENTS[:1], mailer.SmtpSettings(**config.smtp_settings()))
        sink.wait_for(1)
    assert logins == [("reporter", "s3cret-from-env")]


def test_without_recipients_the_report_is_rendered_and_not_sent(sqlite_report: Rendered, tmp_path) -> None:
    data_dir = copy_report(sqlite_report, tmp_path)
    entry = deliver(data_dir, None, recipients=[])
    assert entry["status"] == "not_sent" and "no recipients" in entry["reason"]
    assert mailer.send_history(data_dir, DAY) == [entry]


def test_an_old_day_is_not_mailed_but_its_correction_is(sqlite_report: Rendered, tmp_path) -> None:
    data_dir = copy_report(sqlite_report, tmp_path)
    with SmtpSink() as sink:
        old = deliver(data_dir, sink, max_age_days=7, today=DAY + dt.timedelta(days=30))
        assert old["status"] == "not_sent" and "30 days old" in old["reason"]
        first = deliver(data_dir, sink, max_age_days=-1)
        # The day's data changes (a refresh): the new report corrects the mailed one, however old.
        manifest_path = report_notebook.report_dir(data_dir, DAY) / report_notebook.MANIFEST
        manifest = files.read_json(manifest_path)
        files.write_json_atomic(manifest_path, {**manifest, "data_version": "reloaded"})
        corrected = deliver(data_dir, sink, max_age_days=7, today=DAY + dt.timedelta(days=30))
        messages = sink.wait_for(2)
    assert [entry["status"] for entry in (old, first, corrected)] == ["not_sent", "sent", "sent"]
    assert corrected["correction"] and len(messages) == 2
    assert messages[1]["Subject"].startswith("Correction: Daily churn report 2026-09-10")
    assert messages[1]["In-Reply-To"].strip() == first["message_id"]
    assert "Correction." in messages[1].get_body(("html",)).get_content()
    assert messages[1].get_body(("plain",)).get_content().count("CORRECTION") == 1


def test_recipients_are_checked() -> None:
    assert mailer.parse_recipients(" a@x.test, b@y.test ;c@z.test ") == ["a@x.test", "b@y.test", "c@z.test"]
    assert mailer.parse_recipients("") == []
    with pytest.raises(mailer.MailError, match="not e-mail addresses"):
        mailer.parse_recipients("a@x.test, nobody")
    with pytest.raises(mailer.MailError, match=r"\['a@x.test b@y.test'\].*separate addresses with commas"):
        mailer.parse_recipients("a@x.test b@y.test")


def test_recipients_may_have_display_names() -> None:
    parsed = mailer.parse_recipients('Jane Doe <jane@example.com>, ops@x.org; "Doe, John" <john@x.org>')
    assert parsed == ["Jane Doe <jane@example.com>", "ops@x.org", '"Doe, John" <john@x.org>']
    assert mailer.envelope_addresses(parsed) == ["jane@example.com", "ops@x.org", "john@x.org"]


def test_named_recipients_get_the_report_with_bare_envelope_addresses(rendered: Rendered, tmp_path) -> None:
    data_dir = copy_report(rendered, tmp_path)
    recipients = mailer.parse_recipients("Jane Doe <jane@example.com>, ops@x.org")
    with SmtpSink() as sink:
        entry = deliver(data_dir, sink, recipients=recipients)
        [message] = sink.wait_for(1)
    assert entry["status"] == "sent"
    assert sink.messages[0][2] == ["jane@example.com", "ops@x.org"]  # RCPT TO: the bare addresses
    assert message["To"] == "Jane Doe <jane@example.com>, ops@x.org"
    assert [str(address) for address in message["To"].addresses] == recipients


@pytest.mark.parametrize(
    "text",
    [
        # 70 to 77 characters: Python's own folder moves these whole to a continuation line
        "Daily churn report 2026-09-10: 2 companies at churn risk (no change vs D-1)",
        "Correction: Daily churn report 2026-09-10: 12,345 companies at churn risk (+1,234 vs D-1)",
        "Daily churn report 2026-09-10: churn risk not known yet (too little history)",
    ],
)
def test_a_long_subject_is_folded_at_a_space_and_reads_back_unchanged(text: str, rendered: Rendered) -> None:
    message = mailer.build_message(
        mailer.load_rendered(rendered.data_dir, DAY), sender=SENDER, recipients=RECIPIENTS[:1]
    )
    message.replace_header("Subject", text)
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    subject_lines = (
        re.search(rb"^Subject:.*?(?=\r\n[^ \t])", header_block, re.M | re.S).group(0).split(b"\r\n")
    )
    assert subject_lines[0] != b"Subject:"  # never an empty first line
    assert all(len(line) <= 78 for line in subject_lines)
    assert all(line.startswith(b" ") for line in subject_lines[1:])  # folded before a space
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == text  # no leading space, nothing lost


# -- through the Luigi graph ------------------------------------------------------------------------------


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_run_daily_mails_once_and_a_correction_after_refresh(world: PipelineWorld) -> None:
    day = dt.date(2026, 10, 1)
    world.write_crm(day, day)
    with SmtpSink() as sink:
        settings = {
            "report": {"enabled": "true", "recipients": ", ".join(RECIPIENTS), "max_age_days": "-1"},
            "email": {"sender": SENDER},
            "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"},
        }
        with luigi_settings(settings):
            assert world.run(RunDaily(date=day))
            [first] = sink.wait_for(1)
            assert world.run(RunDaily(date=day))  # done: nothing runs, nothing is mailed
            assert RunDaily(date=day).complete()
            assert len(sink.wait_for(2, timeout=1)) == 1
            assert world.run(RunDaily(date=day, refresh=True))
            messages = sink.wait_for(2)
    assert len(messages) == 2
    assert first["Subject"].startswith("Daily churn report 2026-10-01: churn risk not known yet")
    correction = messages[1]
    assert correction["Subject"].startswith("Correction: Daily churn report 2026-10-01")
    assert correction["In-Reply-To"].strip() == first["Message-ID"].strip()
    html_body = correction.get_body(("html",)).get_content()
    assert "Correction." in html_body and "was loaded again" in html_body
    # The simulator and the CRM file give the same data again: the correction says it changes nothing.
    assert "No value of this day changed" in correction.get_body(("plain",)).get_content()
    assert "Too little history for trends: 1 loaded day" in html_body
    history = mailer.send_history(world.data_dir, day)
    assert [entry["correction"] for entry in history] == [False, True]
    assert history[0]["data_version"] != history[1]["data_version"]


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_correction_mail_says_what_changed_and_status_shows_it(world: PipelineWorld) -> None:
    day = dt.date(2026, 10, 1)
    world.write_crm(day, day)
    with SmtpSink() as sink:
        settings = {
            "report": {"enabled": "true", "recipients": RECIPIENTS[0], "max_age_days": "-1"},
            "email": {"sender": SENDER},
            "smtp": {"host": "127.0.0.1", "port": str(sink.port), "no_tls": "true"},
        }
        with luigi_settings(settings):
            assert world.run(RunDaily(date=day))
            sink.wait_for(1)
            # The CRM sends a late snapshot with one more company (no usage yet): a real correction.
            snapshot = world.crm_dir / f"crm_{day.isoformat()}.csv"
            with snapshot.open("a", encoding="utf-8") as handle:
                handle.write("C9999999,Late Arrival GmbH,DE,software,\n")
            assert world.run(RunDaily(date=day, refresh=True))
            messages = sink.wait_for(2)
    text = messages[1].get_body(("plain",)).get_content()
    assert "What changed (merge of 2026-10-01" in text
    assert "1 added, 0 removed, 0 changed" in text
    companies = next(line for line in text.splitlines() if line.strip().startswith("companies "))
    assert companies.rstrip().endswith("(+1)")
    html_body = messages[1].get_body(("html",)).get_content()
    assert "What changed" in html_body and "1 added, 0 removed" in html_body
    history = mailer.send_history(world.data_dir, day)
    assert history[-1]["changes"]["rows_added"] == 1
