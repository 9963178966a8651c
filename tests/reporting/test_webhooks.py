"""The alert webhook: its three payload formats, and a delivery that retries, gives up in bounded time and
keeps the URL's secret out of the logs. Every HTTP exchange is real, with a receiver on loopback."""

from __future__ import annotations

import ast
import json
import logging
import sys
import time
from pathlib import Path

import pytest
from webhook_receiver import HangingServer, Reply, WebhookReceiver, closed_port, workflows_rejection

from pipeline.reporting import webhooks

SECRET_PATH = "/workflows/0a1b2c3d4e5f/triggers/manual/paths/invoke"
SECRET_SIG = "sig=TOPSECRETSIGNATURE"
TEAMS_URL = (
    "https://prod-00.westeurope.logic.azure.com:443/workflows/0a1b2c3d4e5f/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=abc"
)


def make_alert(**changes) -> webhooks.Alert:
    facts = {
        "task": "MergeDay(date=2026-11-27)",
        "task_family": "MergeDay",
        "date": "2026-11-27",
        "error": "ValueError: 12 rows dropped\nsee the run log",
        "error_type": "ValueError",
        "host": "etl-01",
        "failed_at": "2026-11-28T02:14:05+00:00",
        "luigid_url": "http://luigid.internal:8082/static/visualiser/index.html#tab=graph&taskId=MergeDay_x",
    }
    facts.update(changes)
    return webhooks.Alert(**facts)


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def secret_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{SECRET_PATH}?{SECRET_SIG}"


# -- payloads -----------------------------------------------------------------------------------------


def test_alert_facts_are_plain_keys() -> None:
    facts = make_alert(exit_code=30).as_facts()
    assert facts["task_family"] == "MergeDay"
    assert facts["exit_code"] == 30
    assert facts["log_tail"] is None
    assert set(facts) == {
        "task", "task_family", "date", "error", "error_type", "host", "failed_at", "luigid_url",
        "exit_code", "log_tail",
    }  # fmt: skip


def test_adaptive_card_is_the_teams_workflows_envelope() -> None:
    body = webhooks.payload(make_alert(exit_code=30, log_tail="line one\nline two\n"), "adaptive_card")

    assert set(body) == {"type", "attachments"}  # nothing else at the top level
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["msteams"] == {"width": "Full"}

    title, facts, error, tail = card["body"]
    assert title["type"] == "TextBlock"
    assert title["text"] == "Pipeline failure: MergeDay for 2026-11-27"
    assert (title["weight"], title["size"], title["color"], title["wrap"]) == (
        "Bolder",
        "Medium",
        "Attention",
        True,
    )
    assert facts["type"] == "FactSet"
    assert [(f["title"], f["value"]) for f in facts["facts"]] == [
        ("Task", "MergeDay(date=2026-11-27)"),
        ("Date", "2026-11-27"),
        ("Host", "etl-01"),
        ("Failed at", "2026-11-28T02:14:05+00:00"),
        ("Exit code", "30"),
    ]
    assert error["type"] == "TextBlock" and error["wrap"] is True
    assert "12 rows dropped" in error["text"] and "see the run log" in error["text"]
    assert tail["fontType"] == "Monospace" and tail["wrap"] is True
    assert "line one" in tail["text"] and "line two" in tail["text"]
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open in luigid", "url": make_alert().luigid_url}
    ]
    assert workflows_rejection(json.dumps(body).encode()) is None


def test_adaptive_card_leaves_out_what_an_alert_does_not_have() -> None:
    body = webhooks.payload(make_alert(date=None, luigid_url=None), "adaptive_card")
    card = body["attachments"][0]["content"]
    title, facts, _error = card["body"]
    assert title["text"] == "Pipeline failure: MergeDay"
    assert [f["title"] for f in facts["facts"]] == ["Task", "Date", "Host", "Failed at"]
    assert ("Date", "-") in [(f["title"], f["value"]) for f in facts["facts"]]
    assert card["actions"] == []


def test_message_card_is_the_legacy_connector_card_with_plain_keys() -> None:
    alert = make_alert(exit_code=2)
    body = webhooks.payload(alert, "message_card")
    assert body["@type"] == "MessageCard"
    assert body["@context"] == "https://schema.org/extensions"
    assert body["themeColor"] == "B91C1C"
    assert body["summary"] == body["title"] == "Pipeline failure: MergeDay for 2026-11-27"
    assert body["text"] == "ValueError: 12 rows dropped  \nsee the run log"
    facts = {f["name"]: f["value"] for f in body["sections"][0]["facts"]}
    assert facts == {
        "Task": alert.task,
        "Date": "2026-11-27",
        "Host": "etl-01",
        "Failed at": alert.failed_at,
        "Exit code": "2",
    }
    assert body["potentialAction"][0]["@type"] == "OpenUri"
    assert body["potentialAction"][0]["targets"] == [{"os": "default", "uri": alert.luigid_url}]
    for key, value in alert.as_facts().items():
        assert body[key] == value
    assert "potentialAction" not in webhooks.payload(make_alert(luigid_url=None), "message_card")


def test_json_is_a_plain_object_with_a_one_paragraph_text() -> None:
    alert = make_alert(error="KeyError: <company_id> & more\nsecond line", exit_code=30, log_tail="tail")
    body = webhooks.payload(alert, "json")
    for key in (
        "task", "task_family", "date", "error", "error_type", "host", "failed_at", "luigid_url",
        "exit_code", "log_tail",
    ):  # fmt: skip
        assert body[key] == getattr(alert, key)
    text = body["text"]
    assert "\n" not in text
    assert "Pipeline failure: MergeDay for 2026-11-27" in text
    assert "second line" in text and "Exit code 30" in text and "MergeDay(date=2026-11-27)" in text
    # Slack's own markup characters are escaped, so an error cannot turn into a link or a mention
    assert "&lt;company_id&gt; &amp; more" in text


def test_a_long_log_tail_keeps_its_end() -> None:
    tail = "\n".join(f"line {n}" for n in range(5000))
    body = webhooks.payload(make_alert(log_tail=tail), "json")
    assert len(body["log_tail"]) <= webhooks.LOG_TAIL_CHARS
    assert body["log_tail"].endswith("line 4999")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (TEAMS_URL, "adaptive_card"),
        (
            "https://default0a1b.2c.environment.api.powerplatform.com/powerautomate/automations/x",
            "adaptive_card",
        ),
        ("https://eu.powerautomate.com/hooks/x", "adaptive_card"),
        ("https://contoso.webhook.office.com/webhookb2/abc/IncomingWebhook/def", "adaptive_card"),
        ("https://hooks.slack.com/services/T000/B000/XXXX", "json"),
        ("https://logic.azure.com.attacker.example/workflows/x", "json"),
        ("http://127.0.0.1:9000/hook", "json"),
    ],
)
def test_auto_picks_the_format_from_the_host(url: str, expected: str) -> None:
    assert webhooks.resolve_format("auto", url) == expected


def test_an_explicit_format_wins_and_an_unknown_one_is_refused() -> None:
    assert webhooks.resolve_format("message_card", TEAMS_URL) == "message_card"
    assert webhooks.resolve_format("json", TEAMS_URL) == "json"
    with pytest.raises(ValueError, match="auto, adaptive_card, message_card, json"):
        webhooks.resolve_format("teams", TEAMS_URL)
    with pytest.raises(ValueError):
        webhooks.payload(make_alert(), "auto")
    with pytest.raises(ValueError):
        webhooks.payload(make_alert(), "slack")


def test_the_module_imports_only_the_standard_library_and_requests() -> None:
    tree = ast.parse(Path(webhooks.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.level)
    }
    assert imported - set(sys.stdlib_module_names) == {"requests"}


# -- delivery -----------------------------------------------------------------------------------------


def test_the_adaptive_card_is_accepted_by_a_workflows_receiver() -> None:
    body = webhooks.payload(make_alert(exit_code=30, log_tail="a\nb"), "adaptive_card")
    with WebhookReceiver(validate="adaptive_card") as receiver:
        result = webhooks.post_alert(receiver.url(), body, timeout=2.0, sleep=RecordingSleep())
    assert receiver.rejections == []
    assert result == webhooks.DeliveryResult(delivered=True, attempts=1, status=202, error=None)
    [request] = receiver.requests
    assert request.json() == body
    assert request.headers["Content-Type"] == "application/json"


def test_a_broken_card_is_refused_and_reported_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    body = webhooks.payload(make_alert(), "adaptive_card")
    body["attachments"][0]["content"]["version"] = "2.0"
    sleep = RecordingSleep()
    with WebhookReceiver(validate="adaptive_card") as receiver, caplog.at_level(logging.ERROR):
        result = webhooks.post_alert(receiver.url(), body, timeout=2.0, sleep=sleep)
    assert not result.delivered
    assert (result.status, result.attempts) == (400, 1)  # a 400 is final: no retry
    assert "version" in (result.error or "")
    assert len(receiver.requests) == 1 and sleep.waits == []
    assert "not delivered" in caplog.text


def test_a_503_is_retried_with_backoff() -> None:
    sleep = RecordingSleep()
    with WebhookReceiver([503, 200]) as receiver:
        result = webhooks.post_alert(
            receiver.url(), {"text": "x"}, timeout=2.0, backoff_seconds=0.5, sleep=sleep
        )
    assert (result.delivered, result.attempts, result.status) == (True, 2, 200)
    assert len(receiver.requests) == 2
    [wait] = sleep.waits
    assert 0.5 <= wait <= 0.5 * 1.1 + 1e-9  # the backoff plus a little jitter


def test_retry_after_on_429_sets_the_wait() -> None:
    sleep = RecordingSleep()
    replies = [Reply(429, {"Retry-After": "1"}), Reply(200)]
    with WebhookReceiver(replies) as receiver:
        result = webhooks.post_alert(
            receiver.url(), {"text": "x"}, timeout=2.0, backoff_seconds=0.01, sleep=sleep
        )
    assert (result.delivered, result.attempts) == (True, 2)
    [wait] = sleep.waits
    assert 1.0 <= wait <= 1.01  # Retry-After, not the 0.01 s backoff


def test_a_long_retry_after_is_capped_to_the_budget() -> None:
    sleep = RecordingSleep()
    replies = [Reply(503, {"Retry-After": "3600"}), Reply(200)]
    with WebhookReceiver(replies) as receiver:
        result = webhooks.post_alert(receiver.url(), {"text": "x"}, timeout=0.5, attempts=2, sleep=sleep)
    assert result.delivered
    [wait] = sleep.waits
    assert wait <= 0.5 * 2 + webhooks.BUDGET_SLACK_SECONDS


def test_a_real_retry_after_wait_is_about_one_second() -> None:
    replies = [Reply(429, {"Retry-After": "1"}), Reply(200)]
    with WebhookReceiver(replies) as receiver:
        result = webhooks.post_alert(receiver.url(), {"text": "x"}, timeout=2.0, backoff_seconds=0.01)
    assert result.delivered
    first, second = receiver.requests
    assert 0.95 <= second.at - first.at <= 1.6


def test_a_400_is_not_retried() -> None:
    sleep = RecordingSleep()
    with WebhookReceiver([Reply(400, body="bad card"), 200]) as receiver:
        result = webhooks.post_alert(receiver.url(), {"text": "x"}, timeout=2.0, sleep=sleep)
    assert (result.delivered, result.attempts, result.status) == (False, 1, 400)
    assert result.error == "HTTP 400: bad card"
    assert len(receiver.requests) == 1 and sleep.waits == []


def test_persistent_500s_stop_after_the_attempts() -> None:
    sleep = RecordingSleep()
    with WebhookReceiver([500]) as receiver:
        result = webhooks.post_alert(
            receiver.url(), {"text": "x"}, timeout=2.0, attempts=4, backoff_seconds=0.1, sleep=sleep
        )
    assert (result.delivered, result.attempts, result.status) == (False, 4, 500)
    assert len(receiver.requests) == 4
    assert len(sleep.waits) == 3
    assert sleep.waits[0] < sleep.waits[1] < sleep.waits[2]  # exponential
    assert 0.4 <= sleep.waits[2] <= 0.42


def test_a_hanging_receiver_is_given_up_on_in_time() -> None:
    with HangingServer() as server:
        started = time.monotonic()
        result = webhooks.post_alert(server.url(), {"text": "x"}, timeout=0.5, attempts=1)
        elapsed = time.monotonic() - started
    assert not result.delivered
    assert (result.attempts, result.status) == (1, None)
    assert elapsed < 0.5 + 1.0


def test_retries_on_a_hanging_receiver_stay_within_the_budget() -> None:
    sleep = RecordingSleep()
    with HangingServer() as server:
        started = time.monotonic()
        result = webhooks.post_alert(server.url(), {"text": "x"}, timeout=0.3, attempts=3, sleep=sleep)
        elapsed = time.monotonic() - started
    assert not result.delivered
    assert result.attempts >= 2  # a timeout is retried
    assert elapsed <= 0.3 * 3 + webhooks.BUDGET_SLACK_SECONDS


def test_the_logs_and_the_result_never_contain_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    with caplog.at_level(logging.DEBUG, logger="pipeline.alerts"):
        # A refused connection answers at once; the timeout only bounds a machine too busy to schedule the
        # request thread in time (the test then saw "did not answer" instead of the connection error).
        refused = webhooks.post_alert(
            secret_url(port), {"text": "x"}, timeout=5.0, attempts=2, sleep=RecordingSleep()
        )
    assert not refused.delivered and refused.attempts == 2  # a refused connection is retried
    # urllib3 quotes the path and query of the URL in its error: those must be gone too
    assert "ConnectionError" in (refused.error or "")

    echo = Reply(500, body=f"no route for POST {SECRET_PATH}?{SECRET_SIG}")
    with WebhookReceiver([echo]) as receiver, caplog.at_level(logging.DEBUG, logger="pipeline.alerts"):
        echoed = webhooks.post_alert(secret_url(receiver.port), {"text": "x"}, timeout=1.0, attempts=1)
    assert not echoed.delivered and echoed.status == 500

    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "pipeline.alerts"]
    assert len(errors) == 2
    assert f"http://127.0.0.1:{port}/***" in errors[0].getMessage()
    for text in (caplog.text, refused.error or "", echoed.error or ""):
        assert "0a1b2c3d4e5f" not in text
        assert "TOPSECRETSIGNATURE" not in text


def test_a_body_that_is_not_json_is_reported_not_raised() -> None:
    with WebhookReceiver() as receiver:
        result = webhooks.post_alert(receiver.url(), {"when": object()}, timeout=1.0, sleep=RecordingSleep())
    assert not result.delivered
    assert result.attempts == 1  # not retried: it would fail the same way
    assert receiver.requests == []
