"""``python -m pipeline <command>``: the pipeline's own tools beside the Luigi command line.

python -m pipeline suites --check      # do expectations/*.json match the rules in code? (exit 1: no)
python -m pipeline suites --write      # regenerate them
python -m pipeline status [--json] [--days N] [--date D]   # is the table fresh and healthy? (exit 0: yes)
python -m pipeline check-freshness [--date D]              # alert when yesterday is not loaded (dead man)
python -m pipeline alert-run --exit-status N --log-file F  # alert that a run failed (deploy/alert.sh)
python -m pipeline luigid --port 8082 ...                  # luigid with task history (make scheduler)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from pipeline.orchestration import luigid, status, watchdog
from pipeline.quality import suites

COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "suites": (suites.main, "check (--check) or regenerate (--write) the Great Expectations suite files"),
    "status": (status.main, "is the table fresh and healthy? each day of a window, read-only (--help)"),
    "check-freshness": (
        watchdog.check_freshness_main,
        "alert when yesterday is not loaded (the dead-man's check)",
    ),
    "alert-run": (watchdog.alert_run_main, "alert that a run exited non-zero, with its log's tail"),
    "luigid": (
        luigid.main,
        "luigid (same options) with its task history working: what `make scheduler` runs",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in COMMANDS:
        print("usage: python -m pipeline <command> [options]\n\ncommands:", file=sys.stderr)
        for name, (_run, summary) in COMMANDS.items():
            print(f"  {name:<16} {summary}", file=sys.stderr)
        return 0 if arguments[:1] in (["-h"], ["--help"]) else 2
    run, _summary = COMMANDS[arguments[0]]
    return run(arguments[1:])


if __name__ == "__main__":
    sys.exit(main())
