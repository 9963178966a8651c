#!/usr/bin/env bash
# Alert that a run of the pipeline failed, whatever the cause: the webhook (PIPELINE_ALERT_WEBHOOK_URL) and
# [email] receiver get the exit status, what it means and the tail of the log.
#
#   deploy/alert.sh <exit status> [what]   nightly.sh, when CatchUp (or the lock) exits non-zero
#   deploy/alert.sh --systemd              company-activity-pipeline-alert.service: OnFailure= of the nightly
#                                          and freshness services, with systemd's MONITOR_* variables
#
# Once per systemd invocation: nightly.sh under systemd alerts with its INVOCATION_ID, and the OnFailure=
# unit that follows for the same run (MONITOR_INVOCATION_ID) finds it sent and stays quiet; it alerts on its
# own when nightly.sh could not (killed by TimeoutStartSec=, a crash of the script) and for the freshness
# check. When the pipeline cannot even be imported (a luigi.cfg that does not parse breaks Luigi's import),
# the webhook still gets the alert from pipeline/reporting/webhooks.py run as a plain script.
#
# Environment: PIPELINE_HOME (default: this script's project), PIPELINE_VENV (default: $PIPELINE_HOME/.venv),
# PIPELINE_ALERT_WEBHOOK_URL, LUIGI_CONFIG_PATH; exit status 0 when the alert went out.
set -uo pipefail

code="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${PIPELINE_HOME:-$code}"
venv="${PIPELINE_VENV:-$home/.venv}"
python="$venv/bin/python"
[ -x "$python" ] || python="$(command -v python3 || echo python3)"
cd "$home" || exit 1
log=var/log/nightly.log

if [ "${1:-}" = "--systemd" ]; then
    status="${MONITOR_EXIT_STATUS:-unknown}"
    what="${MONITOR_UNIT:-company-activity-pipeline.service}"
    once="${MONITOR_INVOCATION_ID:-}"
    detail="systemd: ${what} ended with result ${MONITOR_SERVICE_RESULT:-?} (${MONITOR_EXIT_CODE:-?} ${MONITOR_EXIT_STATUS:-?})."
    # The failed unit's own output, when this user may read the journal (groups systemd-journal or adm).
    if [ -n "$once" ] && command -v journalctl >/dev/null; then
        journal="$(mktemp)"
        trap 'rm -f "$journal"' EXIT
        if journalctl --quiet --no-pager -o short-iso -n 60 "_SYSTEMD_INVOCATION_ID=$once" >"$journal" 2>/dev/null \
            && [ -s "$journal" ]; then
            log="$journal"
        fi
    fi
else
    status="${1:?usage: deploy/alert.sh <exit status> [what] | --systemd}"
    what="${2:-nightly CatchUp}"
    once="${INVOCATION_ID:-}"  # set by systemd for the service nightly.sh runs in
    detail=""
fi

if "$python" -c "import pipeline" >/dev/null 2>&1; then
    exec "$python" -m pipeline alert-run --exit-status "$status" --what "$what" --log-file "$log" \
        --once-per "$once" --detail "$detail"
fi
echo "alert: the pipeline cannot be imported (see the log); the webhook alone gets the alert" >&2
exec "$python" "$code/pipeline/reporting/webhooks.py" --exit-status "$status" --what "$what" \
    --log-file "$log" --detail "$detail"
