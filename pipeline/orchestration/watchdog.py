"""Alerts that no Luigi task sends: a run that failed whatever the cause, and a day that was not loaded.

* ``python -m pipeline alert-run --exit-status N --log-file F``: what ``deploy/alert.sh`` runs when the
  nightly run exits non-zero (``deploy/nightly.sh``) or its systemd unit fails (``OnFailure=``): before
  any task ran (a scheduling error, a lock held too long, a crash), or after a task failed. The alert
  has the exit status, its meaning and the tail of the log, and goes to the webhook and to
  ``[email] receiver``. ``--once-per KEY`` sends it once per key (the systemd invocation id), so that
  the script and the unit's ``OnFailure=`` do not both alert for one failed run.
* ``python -m pipeline check-freshness [--date D]``: the dead-man's check, run a few hours after the
  nightly run (``deploy/company-activity-pipeline-freshness.timer``, 04:00 UTC): when D (default:
  yesterday in UTC) is not loaded, or failed its gates, or the warehouse cannot be read, it alerts the
  same way, so that a nightly run that never started (a stopped timer, a dead host that came back, a
  crontab lost in a migration) is noticed too. Its exit status says what it found, with the codes of
  ``python -m pipeline status``: 0 loaded and passed, 5 failed a gate, 4 not loaded, 3 loaded but the
  table is stale (a ``--date`` in the past), 1 the warehouse could not be read.

Both are plain functions behind thin ``main``s; the delivery is
:func:`pipeline.orchestration.alerts.send_alert`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import luigi.configuration

from pipeline import clock
from pipeline.config import FAILURE_EXIT_CODES
from pipeline.orchestration import alerts, status
from pipeline.redaction import redact_text
from pipeline.warehouse.engine import WarehouseSettings

LOG_TAIL_LINES = 60
LOG_TAIL_BYTES = 64 * 1024
SENT_LOG = "alerts-sent.jsonl"  # under [pipeline] log_dir: one line per alert of a run, for --once-per
LOCK_HELD = 75  # deploy/nightly.sh: another run held var/nightly.lock too long
# What the exit statuses of a nightly run mean, besides Luigi's [retcode] ones.
_OTHER_MEANINGS = {
    1: "the run crashed before Luigi could report (a configuration file that does not parse, a missing "
    "virtual environment, ...): see the log",
    2: "the command line was refused",
    LOCK_HELD: "another run held the nightly lock (var/nightly.lock) for too long",
}


# -- a failed run ---------------------------------------------------------------------------------------


def log_tail(path: Path | str | None, lines: int = LOG_TAIL_LINES) -> str | None:
    """The last ``lines`` lines of a log file, secrets masked; None when there is no such file."""
    if not path:
        return None
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return redact_text("\n".join(text.splitlines()[-lines:]))


def exit_status_meaning(exit_status: str) -> str:
    """What a run's exit status says, from ``[retcode]`` and the nightly script's own codes."""
    if not exit_status.isdigit():
        return f"it was stopped: {exit_status}"  # systemd's MONITOR_EXIT_STATUS for a signal, e.g. TERM
    code = int(exit_status)
    config = luigi.configuration.get_config()
    # Our defaults, then what the configuration sets (as the run applied them: ensure_failure_exit_codes).
    settings = {
        **FAILURE_EXIT_CODES,
        **(dict(config.items("retcode")) if config.has_section("retcode") else {}),
    }
    retcodes = {int(value): key for key, value in settings.items() if str(value).strip().isdigit()}
    if code in retcodes:
        return f"[retcode] {retcodes[code]}" + (
            " (before any task ran)" if retcodes[code] in ("scheduling_error", "unhandled_exception") else ""
        )
    return _OTHER_MEANINGS.get(code, "see the log")


def already_alerted(log_dir: Path, key: str) -> bool:
    path = Path(log_dir) / SENT_LOG
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        try:
            if json.loads(line).get("key") == key:
                return True
        except ValueError:
            continue
    return False


def _record_sent(log_dir: Path, entry: dict[str, Any]) -> None:
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    with (Path(log_dir) / SENT_LOG).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def alert_failed_run(
    what: str,
    exit_status: str,
    *,
    log_file: Path | str | None,
    log_dir: Path,
    once_per: str = "",
    detail: str = "",
) -> dict[str, Any]:
    """Alert that ``what`` exited with ``exit_status``; returns what happened (``skipped`` when
    ``once_per`` was alerted already)."""
    if once_per and already_alerted(log_dir, once_per):
        return {"skipped": True}
    meaning = exit_status_meaning(exit_status)
    error = f"{what} exited with status {exit_status}: {meaning}." + (f" {detail}" if detail else "")
    alert = alerts.run_alert(
        what,
        error,
        error_type="RunFailed",
        date=clock.yesterday_utc(),
        exit_code=int(exit_status) if exit_status.isdigit() else None,
        log_tail=log_tail(log_file),
    )
    outcome = alerts.send_alert(alert)
    _record_sent(
        log_dir,
        {
            "key": once_per or None,
            "what": what,
            "exit_status": exit_status,
            "at": clock.utc_iso_seconds(),
            "webhook": _delivered(outcome["webhook"]),
            "mail": outcome["mail"],
        },
    )
    return {"skipped": False, **outcome, "error": error}


def _delivered(result: Any) -> bool | None:
    return None if result is None else bool(result.delivered)


def _report(outcome: dict[str, Any]) -> int:
    """One line per channel on stdout; 0 when every configured channel took the alert, else 6."""
    webhook, mail = _delivered(outcome["webhook"]), outcome["mail"]
    print(f"webhook: {_said(webhook, 'PIPELINE_ALERT_WEBHOOK_URL is not set')}")
    print(f"e-mail: {_said(mail, '[email] receiver is empty, or the output is a terminal')}")
    if webhook is None and mail is None:
        print("warning: no alert channel is configured: nobody was told", file=sys.stderr)
    return 6 if False in (webhook, mail) else 0


def _said(delivered: bool | None, unconfigured: str) -> str:
    if delivered is None:
        return f"not sent ({unconfigured})"
    return "delivered" if delivered else "NOT delivered (see the log above)"


def alert_run_main(argv: Sequence[str]) -> int:
    """``python -m pipeline alert-run``: exit 0 when the alert went out (or was sent before for the
    key), 6 when a configured channel did not take it."""
    from pipeline.config import PipelineConfig

    parser = argparse.ArgumentParser(
        prog="python -m pipeline alert-run",
        description="Alert (webhook and e-mail) that a run exited non-zero, with the tail of its log.",
    )
    parser.add_argument("--exit-status", required=True, help="the run's exit status, or a signal name")
    parser.add_argument("--what", default="nightly CatchUp", help="what ran (default: nightly CatchUp)")
    parser.add_argument("--log-file", type=Path, default=None, help="the log whose tail goes with the alert")
    parser.add_argument("--once-per", default="", help="alert once per this key (a systemd invocation id)")
    parser.add_argument("--detail", default="", help="a sentence added to the alert (e.g. systemd's result)")
    arguments = parser.parse_args(list(argv))
    outcome = alert_failed_run(
        arguments.what,
        arguments.exit_status.strip(),
        log_file=arguments.log_file,
        log_dir=Path(PipelineConfig().log_dir),
        once_per=arguments.once_per.strip(),
        detail=arguments.detail.strip(),
    )
    if outcome["skipped"]:
        print(f"already alerted for {arguments.once_per.strip()}: not sent again")
        return 0
    print(outcome["error"])
    return _report(outcome)


# -- the dead-man's check -------------------------------------------------------------------------------


def freshness_problem(result: status.Status, day: dt.date) -> tuple[str, str] | None:
    """(error type, sentence) when ``day`` is not as it should be the morning after; None when it is."""
    [day_status] = result.days
    newest = (
        f"the newest loaded day is {result.newest_loaded_day.isoformat()}, {result.age_hours:.1f} h old"
        if result.newest_loaded_day
        else "no day is loaded at all"
    )
    failed = [
        f"{dataset} ({verdict['failed_checks']} failed check(s): {verdict['results'] or 'no results page'})"
        for dataset, verdict in day_status.validations.items()
        if verdict["verdict"] == "failed"
    ]
    hint = f"`python -m pipeline status` shows the window; `luigi --module pipeline RunDaily --date {day}`"
    if failed:
        return (
            "GateFailed",
            f"{day.isoformat()} failed validation: {'; '.join(failed)}; {newest}. {hint} "
            + ("runs it again once the data is fixed (or with --accept-row-drop for a real drop)."),
        )
    if not day_status.loaded:
        return "DayNotLoaded", (
            f"{day.isoformat()} is not loaded at {result.generated_at.isoformat(timespec='minutes')}: the "
            f"nightly run did not load it, or did not run; {newest}. {hint} loads it."
        )
    if not result.fresh:
        return "StaleTable", f"the table is stale: {newest} (limit {result.max_age_hours:g} h)."
    return None


# The check's exit status is the code `python -m pipeline status` uses for what it found.
_CHECK_EXIT_CODES = {
    "GateFailed": status.FAILED_GATE,
    "DayNotLoaded": status.MISSING_DAY,
    "StaleTable": status.STALE,
    "WarehouseUnreadable": status.CANNOT_READ,
}


def check_freshness(
    day: dt.date,
    *,
    warehouse: WarehouseSettings,
    data_dir: Path | str,
    max_age_hours: float,
    log_file: Path | str | None,
    send: bool = True,
) -> tuple[int, str, dict[str, Any] | None]:
    """Check that ``day`` is loaded and passed; alert when not. Returns (exit status, the sentence, what
    the alert channels did or None when nothing was sent)."""
    try:
        result = status.collect_status(warehouse, data_dir, last=day, days=1, max_age_hours=max_age_hours)
    except status.StatusError as error:
        problem = ("WarehouseUnreadable", f"the freshness check could not read the warehouse: {error}")
    else:
        problem = freshness_problem(result, day)
    if problem is None:
        return status.FRESH_AND_HEALTHY, f"{day.isoformat()} is loaded and passed its checks", None
    error_type, sentence = problem
    code = _CHECK_EXIT_CODES[error_type]
    if not send:
        return code, sentence, None
    alert = alerts.run_alert(
        "CheckFreshness",
        sentence,
        error_type=error_type,
        date=day,
        exit_code=code,
        log_tail=log_tail(log_file),
    )
    return code, sentence, alerts.send_alert(alert)


def check_freshness_main(argv: Sequence[str]) -> int:
    """``python -m pipeline check-freshness``: exit 0 when the day is loaded and passed, else the status
    code of ``python -m pipeline status`` (after alerting)."""
    from pipeline.config import MonitoringConfig, PipelineConfig

    config = PipelineConfig()
    parser = argparse.ArgumentParser(
        prog="python -m pipeline check-freshness",
        description="Alert (webhook and e-mail) when a day is not loaded the morning after: the dead-man's "
        "check of the nightly run. Reads only; exit status as `python -m pipeline status`.",
    )
    parser.add_argument(
        "--date", type=dt.date.fromisoformat, default=None, help="the day to check (default: yesterday UTC)"
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=Path(config.log_dir) / "nightly.log",
        help="the log whose tail goes with the alert (default: [pipeline] log_dir/nightly.log)",
    )
    parser.add_argument("--no-alert", action="store_true", help="only say what is wrong, send nothing")
    arguments = parser.parse_args(list(argv))
    day = arguments.date or clock.yesterday_utc()
    code, sentence, outcome = check_freshness(
        day,
        warehouse=WarehouseSettings(**config.warehouse_settings()),
        data_dir=config.data_dir,
        max_age_hours=MonitoringConfig().max_age_hours,
        log_file=arguments.log_file,
        send=not arguments.no_alert,
    )
    print(sentence)
    if outcome is not None:
        _report(outcome)
    return code
