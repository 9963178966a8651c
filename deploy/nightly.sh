#!/usr/bin/env bash
# The nightly run, as cron and the systemd timer start it: CatchUp (yesterday in UTC plus any day missed
# in the last [pipeline] catch_up_days), under a lock, its output appended to var/log/nightly.log.
# Exit status: Luigi's ([retcode] in luigi.cfg: 30 = a task failed, 35 = a scheduling error, 40 = an
# unhandled exception), 1 when it crashed before Luigi could report (a luigi.cfg that does not parse), or
# 75 when another run held the lock for longer than PIPELINE_LOCK_WAIT_SECONDS.
# Any non-zero exit alerts (deploy/alert.sh: webhook and e-mail, with the exit status and the log's tail),
# also when no task ran; a failed task has alerted on its own already.
#
# Environment: PRODUCT_API_CLIENT_ID, PRODUCT_API_CLIENT_SECRET (and SMTP_PASSWORD,
# PIPELINE_ALERT_WEBHOOK_URL, ... when used); optional PIPELINE_HOME (default: this script's project),
# PIPELINE_VENV (default: $PIPELINE_HOME/.venv), LUIGI_CONFIG_PATH, PIPELINE_LOCK_WAIT_SECONDS (default 3600).
set -uo pipefail

code="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${PIPELINE_HOME:-$code}"
venv="${PIPELINE_VENV:-$home/.venv}"
wait_seconds="${PIPELINE_LOCK_WAIT_SECONDS:-3600}"
cd "$home" || exit 1
mkdir -p var/log
log=var/log/nightly.log

alert() {  # <exit status>: never changes the exit status of the run
    "$code/deploy/alert.sh" "$1" "nightly CatchUp" >>"$log" 2>&1 \
        || echo "$(date -u +%FT%TZ) nightly: the alert for exit status $1 was not delivered (see above)" >>"$log"
}

exec 9>var/nightly.lock
if ! flock --wait "$wait_seconds" 9; then
    echo "$(date -u +%FT%TZ) nightly: another run has held var/nightly.lock for ${wait_seconds}s; giving up" | tee -a "$log" >&2
    alert 75
    exit 75
fi

echo "$(date -u +%FT%TZ) nightly: CatchUp starting (pid $$)" >>"$log"
"$venv/bin/luigi" --module pipeline CatchUp "$@" >>"$log" 2>&1
status=$?
echo "$(date -u +%FT%TZ) nightly: CatchUp finished with exit status $status" >>"$log"
if [ "$status" -ne 0 ]; then
    alert "$status"
fi
exit "$status"
