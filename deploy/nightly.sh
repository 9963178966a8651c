#!/usr/bin/env bash
# The nightly run, as cron and the systemd timer start it: CatchUp (yesterday in UTC plus any day missed
# in the last [pipeline] catch_up_days), under a lock, its output appended to var/log/nightly.log.
# Exit status: Luigi's ([retcode] in luigi.cfg: 30 = a task failed), or 75 when another run held the
# lock for longer than PIPELINE_LOCK_WAIT_SECONDS.
#
# Environment: PRODUCT_API_CLIENT_ID, PRODUCT_API_CLIENT_SECRET (and SMTP_PASSWORD, ... when used);
# optional PIPELINE_HOME (default: this script's project), PIPELINE_VENV (default: $PIPELINE_HOME/.venv),
# LUIGI_CONFIG_PATH, PIPELINE_LOCK_WAIT_SECONDS (default 3600).
set -uo pipefail

home="${PIPELINE_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
venv="${PIPELINE_VENV:-$home/.venv}"
wait_seconds="${PIPELINE_LOCK_WAIT_SECONDS:-3600}"
cd "$home" || exit 1
mkdir -p var/log
log=var/log/nightly.log

exec 9>var/nightly.lock
if ! flock --wait "$wait_seconds" 9; then
    echo "$(date -u +%FT%TZ) nightly: another run has held var/nightly.lock for ${wait_seconds}s; giving up" | tee -a "$log" >&2
    exit 75
fi

echo "$(date -u +%FT%TZ) nightly: CatchUp starting (pid $$)" >>"$log"
"$venv/bin/luigi" --module pipeline CatchUp "$@" >>"$log" 2>&1
status=$?
echo "$(date -u +%FT%TZ) nightly: CatchUp finished with exit status $status" >>"$log"
exit "$status"
