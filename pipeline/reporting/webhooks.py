"""Failure alerts for a webhook: the payload formats, and a delivery that retries but never holds a run.

Everything comes in as arguments: this module reads no environment and no configuration (the caller
reads the secret URL from ``PIPELINE_ALERT_WEBHOOK_URL`` and ``[alerts] webhook_format``), and it imports
nothing from Luigi or the rest of the pipeline, so any caller can alert: a failed task, a nightly run that
failed before any task ran, a freshness check that found no run.

Which format to choose (``[alerts] webhook_format``):

* ``adaptive_card``: Microsoft Teams **Workflows** (Power Automate) webhooks, the ones made with the
  "Post to a channel when a webhook request is received" template. They take only an Adaptive Card
  wrapped in a ``message`` envelope and answer 202; a malformed card is refused with 400.
* ``message_card``: the legacy Office 365 connector (Teams "Incoming Webhook") MessageCard, with the
  facts repeated as plain keys. Microsoft has retired those connectors; keep this only for a receiver
  that still expects MessageCards.
* ``json``: a plain object, ``text`` (a one-paragraph summary) plus every fact as its own key. Slack
  incoming webhooks show ``text``; Mattermost, Zulip's Slack-compatible endpoint and home-made receivers
  read the keys.
* ``auto`` (the default): ``adaptive_card`` when the URL's host is a Teams Workflows / Power Automate
  host, or a legacy ``*.webhook.office.com`` connector host (those URLs now have to be replaced by
  Workflows, which take only Adaptive Cards); ``json`` otherwise.

Why one module of about 470 lines: the three payload formats and the delivery are one contract with
the receivers, and the module also runs on its own (``python pipeline/reporting/webhooks.py``) when a
broken configuration keeps the package from importing (deploy/alert.sh), so it imports nothing of it.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger("pipeline.alerts")

FORMATS = ("auto", "adaptive_card", "message_card", "json")

# A hostname that is one of these, or ends with "." + one of these, gets an Adaptive Card under "auto".
ADAPTIVE_CARD_HOST_SUFFIXES = (
    "logic.azure.com",
    "powerautomate.com",
    "powerplatform.com",
    "environment.api.powerplatform.com",
    "webhook.office.com",
)

# Teams refuses messages over about 28 KB, and only the end of a log says why a run failed.
LOG_TAIL_CHARS = 3000
# Headroom above timeout * attempts for the backoff waits and thread hand-offs.
BUDGET_SLACK_SECONDS = 2.0
# A receiver's answer quoted in DeliveryResult.error: enough for Teams' reason, not a whole HTML page.
RESPONSE_EXCERPT_CHARS = 300

_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Alert:
    """What a failure alert says. ``exit_code`` and ``log_tail`` are for alerts that do not come from a
    task (a nightly run that failed before any task ran, a freshness check)."""

    task: str
    task_family: str
    date: str | None
    error: str
    error_type: str
    host: str
    failed_at: str
    luigid_url: str | None
    exit_code: int | None = None
    log_tail: str | None = None

    def as_facts(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def title(self) -> str:
        return f"Pipeline failure: {self.task_family}" + (f" for {self.date}" if self.date else "")


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None


# -- formats ------------------------------------------------------------------------------------------


def resolve_format(configured: str, url: str) -> str:
    """The concrete format for ``url``: ``configured`` itself, or for ``auto`` what the host takes."""
    fmt = configured.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown webhook format {configured!r}: expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    host = (urllib.parse.urlsplit(url.strip()).hostname or "").rstrip(".")
    if any(host == suffix or host.endswith("." + suffix) for suffix in ADAPTIVE_CARD_HOST_SUFFIXES):
        return "adaptive_card"
    return "json"


def payload(alert: Alert, fmt: str) -> dict[str, Any]:
    """The JSON body of ``alert`` in ``fmt`` (a concrete format: resolve ``auto`` first)."""
    builders: dict[str, Callable[[Alert], dict[str, Any]]] = {
        "adaptive_card": adaptive_card,
        "message_card": message_card,
        "json": json_body,
    }
    if fmt == "auto":
        raise ValueError("payload() needs a concrete format: resolve 'auto' with resolve_format(fmt, url)")
    if fmt not in builders:
        raise ValueError(f"unknown webhook format {fmt!r}: expected one of {', '.join(builders)}")
    return builders[fmt](alert)


def adaptive_card(alert: Alert) -> dict[str, Any]:
    """The Teams Workflows envelope: nothing at the top level but ``type`` and ``attachments``."""
    facts = [
        {"title": "Task", "value": alert.task},
        {"title": "Date", "value": alert.date or "-"},
        {"title": "Host", "value": alert.host},
        {"title": "Failed at", "value": alert.failed_at},
    ]
    if alert.exit_code is not None:
        facts.append({"title": "Exit code", "value": str(alert.exit_code)})
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": alert.title,
            "weight": "Bolder",
            "size": "Medium",
            "color": "Attention",
            "wrap": True,
        },
        {"type": "FactSet", "facts": facts},
        {"type": "TextBlock", "text": _card_lines(alert.error) or "-", "wrap": True},
    ]
    tail = log_tail_excerpt(alert)
    if tail:
        body.append({"type": "TextBlock", "text": _card_lines(tail), "fontType": "Monospace", "wrap": True})
    actions = []
    if alert.luigid_url:
        actions.append({"type": "Action.OpenUrl", "title": "Open in luigid", "url": alert.luigid_url})
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    # 1.4, not 1.5: the newest version every Teams client (mobile included) renders.
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": body,
                    "actions": actions,
                },
            }
        ],
    }


def message_card(alert: Alert) -> dict[str, Any]:
    """The legacy connector MessageCard, with the facts also as plain keys for non-Teams receivers."""
    facts = {**alert.as_facts(), "log_tail": log_tail_excerpt(alert)}
    card_facts = [
        {"name": "Task", "value": alert.task},
        {"name": "Date", "value": alert.date or "-"},
        {"name": "Host", "value": alert.host},
        {"name": "Failed at", "value": alert.failed_at},
    ]
    if alert.exit_code is not None:
        card_facts.append({"name": "Exit code", "value": str(alert.exit_code)})
    sections: list[dict[str, Any]] = [{"facts": card_facts}]
    if facts["log_tail"]:
        sections.append({"title": "Log tail", "text": facts["log_tail"].replace("\n", "  \n")})
    body: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": "B91C1C",
        "summary": alert.title,
        "title": alert.title,
        "text": alert.error.replace("\n", "  \n"),  # a Markdown line break in a connector card
        "sections": sections,
        **facts,
    }
    if alert.luigid_url:
        body["potentialAction"] = [
            {
                "@type": "OpenUri",
                "name": "Open in luigid",
                "targets": [{"os": "default", "uri": alert.luigid_url}],
            }
        ]
    return body


def json_body(alert: Alert) -> dict[str, Any]:
    """A plain object: ``text`` for chat tools that show one field, and every fact as its own key."""
    return {"text": summary_text(alert), **alert.as_facts(), "log_tail": log_tail_excerpt(alert)}


def summary_text(alert: Alert) -> str:
    """One paragraph, escaped the way Slack requires (``&``, ``<`` and ``>`` are its markup)."""
    parts = [f"{alert.title} on {alert.host} at {alert.failed_at}: {' '.join(alert.error.split())}"]
    if alert.exit_code is not None:
        parts.append(f"Exit code {alert.exit_code}.")
    parts.append(f"Task {alert.task}.")
    if alert.luigid_url:
        parts.append(f"luigid: {alert.luigid_url}")
    text = " ".join(parts)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def log_tail_excerpt(alert: Alert) -> str | None:
    """The end of the alert's log, at most LOG_TAIL_CHARS: the last lines say why a run failed."""
    if not alert.log_tail:
        return None
    tail = alert.log_tail.rstrip()
    if len(tail) <= LOG_TAIL_CHARS:
        return tail
    return "..." + tail[-(LOG_TAIL_CHARS - 3) :]


def _card_lines(text: str) -> str:
    # A TextBlock is Markdown: a single newline is a soft break that Teams joins into one line.
    return "\n\n".join(line.rstrip() for line in text.splitlines())


# -- delivery -----------------------------------------------------------------------------------------


def post_alert(
    url: str,
    body: dict[str, Any],
    *,
    timeout: float,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """POST ``body`` as JSON to ``url`` until a 2xx answer, at most ``attempts`` times. Never raises.

    429, 5xx, connection errors and timeouts are retried with exponential backoff; 429 and 503 may set
    the wait with ``Retry-After``. Other answers are final. The whole delivery stays within
    ``timeout * attempts + BUDGET_SLACK_SECONDS`` seconds, whatever the receiver does.
    """
    try:
        return _deliver(url, body, timeout, max(1, attempts), backoff_seconds, sleep)
    except Exception as error:  # an alert must never fail the run it reports on
        text = _scrub(f"{type(error).__name__}: {error}", url)
        log.error("alert webhook %s: delivery failed: %s", redact_url(url), text)
        return DeliveryResult(delivered=False, attempts=0, error=text)


def _deliver(
    url: str,
    body: dict[str, Any],
    timeout: float,
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None],
) -> DeliveryResult:
    target = redact_url(url)
    deadline = time.monotonic() + timeout * attempts + BUDGET_SLACK_SECONDS
    status: int | None = None
    error: str | None = None
    made = 0
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        if attempt > 1 and remaining < timeout:
            break
        made = attempt
        outcome = _attempt(url, body, timeout, wait_at_most=min(timeout + 0.5, remaining))
        status, error = outcome.status, outcome.error
        if status is not None and 200 <= status < 300:
            log.info("alert webhook %s accepted the alert (HTTP %s, attempt %d)", target, status, attempt)
            return DeliveryResult(delivered=True, attempts=attempt, status=status)
        error = _scrub(error, url) if error else None
        if not outcome.retryable or attempt == attempts:
            break
        wait = backoff_seconds * 2 ** (attempt - 1)
        if outcome.retry_after is not None:
            wait = outcome.retry_after
        wait += random.uniform(0, 0.1 * max(backoff_seconds, 0.0))  # so that many runs do not retry in step
        # Leave the next attempt its whole window, or the budget would be overrun.
        wait = max(0.0, min(wait, deadline - time.monotonic() - (timeout + 0.5)))
        log.warning(
            "alert webhook %s: attempt %d of %d failed (%s); retrying in %.1fs",
            target,
            attempt,
            attempts,
            error,
            wait,
        )
        sleep(wait)
    log.error("alert webhook %s: the alert was not delivered after %d attempt(s): %s", target, made, error)
    return DeliveryResult(delivered=False, attempts=made, status=status, error=error)


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    error: str | None
    retryable: bool
    retry_after: float | None = None


def _attempt(url: str, body: dict[str, Any], timeout: float, wait_at_most: float) -> _Outcome:
    """One POST on a daemon thread: a receiver that hangs (or drips bytes, which the socket timeout
    does not catch) is abandoned after ``wait_at_most`` seconds instead of holding the run."""
    result: dict[str, Any] = {}

    def send() -> None:
        try:
            response = requests.post(url, json=body, timeout=(min(timeout, 3.0), timeout))
            result["response"] = response
        except (requests.ConnectionError, requests.Timeout) as error:
            result["error"], result["retryable"] = f"{type(error).__name__}: {error}", True
        except Exception as error:  # a malformed URL, say: trying again would not help
            result["error"], result["retryable"] = f"{type(error).__name__}: {error}", False

    worker = threading.Thread(target=send, name="alert-webhook", daemon=True)
    worker.start()
    worker.join(max(0.0, wait_at_most))
    if worker.is_alive() or not result:
        return _Outcome(None, f"no answer within {wait_at_most:.1f}s", retryable=True)
    if "error" in result:
        return _Outcome(None, result["error"], retryable=result["retryable"])
    response: requests.Response = result["response"]
    status = response.status_code
    if 200 <= status < 300:
        return _Outcome(status, None, retryable=False)
    excerpt = " ".join(response.text[:RESPONSE_EXCERPT_CHARS].split())
    error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    retry_after = (
        _retry_after(response.headers.get("Retry-After")) if status in _RETRY_AFTER_STATUSES else None
    )
    return _Outcome(status, error, retryable=status == 429 or status >= 500, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, from delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# -- keeping the secret out of logs -------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``scheme://host[:port]/***``: the path and query of a webhook URL are its secret."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "<unparseable URL>/***"
    return f"{parts.scheme}://{parts.hostname or ''}{f':{port}' if port else ''}/***"


def _scrub(text: str, url: str) -> str:
    """``text`` without any piece of the URL's secret: urllib3 quotes only the path and query, and
    requests may have re-quoted them."""
    url = url.strip()
    pieces = {url}
    try:
        parts = urllib.parse.urlsplit(url)
        prepared = requests.Request("POST", url).prepare().url or ""
        for candidate in (parts, urllib.parse.urlsplit(prepared)):
            pieces.update({candidate.path, candidate.query, f"{candidate.path}?{candidate.query}"})
        pieces.add(prepared)
    except Exception:  # an unparseable URL: scrub what we have
        pass
    # The longest first, so that a full URL is replaced as a whole, not around its path.
    for piece in sorted((p for p in pieces if len(p.strip("/?")) > 0), key=len, reverse=True):
        text = text.replace(piece, "/***" if not piece.startswith(("http:", "https:")) else redact_url(url))
    return text


# -- the last resort: a run that failed before the pipeline could even be imported --------------------------

# The environment variables whose values never leave the host: pipeline.redaction.LOGGED_SECRET_ENV_VARS,
# repeated because this module imports nothing of the pipeline (a test keeps the two lists equal).
SECRET_ENV_VARS = (
    "PRODUCT_API_CLIENT_ID", "PRODUCT_API_CLIENT_SECRET", "SMTP_PASSWORD", "PIPELINE_ALERT_WEBHOOK_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "PGPASSWORD", "MYSQL_PWD",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python pipeline/reporting/webhooks.py --exit-status N --log-file F [--what W]``.

    ``deploy/alert.sh`` runs this file directly, as a script, when ``import pipeline`` itself fails (a
    configuration file that does not parse breaks Luigi's import): the webhook still hears of the failed
    run, in the ``auto`` format with the default timeout and attempts, the log's tail with the secret
    environment values masked. Exit 0 when delivered, 6 when not, 0 with a warning when no
    ``PIPELINE_ALERT_WEBHOOK_URL`` is set.
    """
    import argparse
    import datetime as dt
    import os
    import re
    import socket
    import sys

    parser = argparse.ArgumentParser(description="Post a run-failure alert without importing the pipeline.")
    parser.add_argument("--exit-status", required=True)
    parser.add_argument("--what", default="nightly CatchUp")
    parser.add_argument("--log-file", default="")
    parser.add_argument("--detail", default="")
    arguments = parser.parse_args(argv)
    url = os.environ.get("PIPELINE_ALERT_WEBHOOK_URL", "").strip()
    if not url:
        print("warning: PIPELINE_ALERT_WEBHOOK_URL is not set: nobody was told", file=sys.stderr)
        return 0
    tail = None
    if arguments.log_file:
        try:
            with open(arguments.log_file, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                tail = "\n".join(handle.read().decode("utf-8", errors="replace").splitlines()[-60:])
        except OSError:
            tail = None
    if tail:
        tail = re.sub(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", r"\1***", tail)
        secrets = sorted((os.environ.get(name, "") for name in SECRET_ENV_VARS), key=len, reverse=True)
        for secret in (value for value in secrets if len(value) >= 4):
            tail = tail.replace(secret, "***")
    status = arguments.exit_status.strip()
    alert = Alert(
        task=arguments.what,
        task_family=arguments.what,
        date=None,
        error=f"{arguments.what} exited with status {status}, and the pipeline could not be imported to "
        "report it (see the log: a configuration file that does not parse?). "
        + (arguments.detail.strip() + " " if arguments.detail.strip() else "")
        + "This alert comes from the fallback, in the default format.",
        error_type="RunFailed",
        host=socket.gethostname(),
        failed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        luigid_url=None,
        exit_code=int(status) if status.isdigit() else None,
        log_tail=tail,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    result = post_alert(url, payload(alert, resolve_format("auto", url)), timeout=5.0, attempts=3)
    print(f"webhook: {'delivered' if result.delivered else 'NOT delivered: ' + str(result.error)}")
    return 0 if result.delivered else 6


if __name__ == "__main__":
    raise SystemExit(main())
