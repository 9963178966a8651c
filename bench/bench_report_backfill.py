"""A backfill's reports: 5 consecutive days rendered with one kernel per day, then with the reused kernel.

The warehouse is the report tests' world (``tests/report_world.py``: its hand-made days, a few companies,
here 14 of them so that every rendered day has 7+ loaded days and draws its charts), so the figures are
the kernel's fixed cost and the report's per-day work, not SQL. Both
ways run in the same process, on the same days, one after the other (``--rounds`` times, alternating
which goes first):

* **one kernel per day**: what a backfill paid before: the kernel is shut down after each report
  (``pipeline.reporting.kernel.shutdown``), so every day starts one, as ``execute_notebook`` used to;
* **reused kernel**: what ``RenderReport`` does now: the first day starts the kernel, the next days reset
  its namespace and reuse it.

Each day's summary.json must be the same both ways (the numbers of the report).

    .venv/bin/python bench/bench_report_backfill.py [--days 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from report_world import FIRST, build_days  # the report tests' hand-made days

from pipeline import files
from pipeline.reporting import kernel
from pipeline.reporting import notebook as report_notebook
from pipeline.warehouse.engine import WarehouseSettings, open_warehouse

LOADED_DAYS = 14


def backfill(warehouse: WarehouseSettings, data_dir: Path, days: list[dt.date], *, reuse: bool) -> list[dict]:
    """Render the report of each day in turn; per day: wall seconds and the manifest's split."""
    kernel.shutdown()  # each way starts without a kernel
    rows = []
    for day in days:
        started = time.perf_counter()
        manifest = report_notebook.render_report(warehouse, data_dir, day)
        if not reuse:
            kernel.shutdown()  # part of the old per-day cost: the kernel was shut down after each report
        rows.append(
            {
                "day": day,
                "seconds": time.perf_counter() - started,
                "execute": manifest["seconds"]["execute"],
                "render": manifest["seconds"]["render"],
                "summary": files.read_json(
                    report_notebook.report_dir(data_dir, day) / report_notebook.SUMMARY
                ),
            }
        )
    kernel.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days",
        type=int,
        default=5,
        help="consecutive days rendered, the last of the 14 loaded (at most 8: all with charts)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="each way this many times, alternating")
    args = parser.parse_args()
    days = [FIRST + dt.timedelta(days=LOADED_DAYS - args.days + index) for index in range(args.days)]

    with tempfile.TemporaryDirectory(prefix="bench-report-backfill-") as tmp:
        work = Path(tmp)
        warehouse = WarehouseSettings(f"sqlite:///{work / 'warehouse.db'}")
        build_days(open_warehouse(warehouse), LOADED_DAYS)
        runs: dict[str, list[list[dict]]] = {"one kernel per day": [], "reused kernel": []}
        for round_ in range(args.rounds):
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for reuse in order:
                name = "reused kernel" if reuse else "one kernel per day"
                rows = backfill(
                    warehouse, work / f"data-{round_}-{name.replace(' ', '-')}", days, reuse=reuse
                )
                runs[name].append(rows)
                total = sum(row["seconds"] for row in rows)
                per_day = " ".join(f"{row['seconds']:.2f}" for row in rows)
                print(f"round {round_ + 1}, {name}: {total:.2f}s for {len(rows)} days (per day: {per_day})")

    # The same reports both ways: every day's numbers are equal.
    first = runs["one kernel per day"][0]
    for rows in [*runs["one kernel per day"], *runs["reused kernel"]]:
        for expected, row in zip(first, rows, strict=True):
            assert row["summary"] == expected["summary"], f"{row['day']}: the reports differ"

    print()
    print(f"| {args.days} consecutive days (median of {args.rounds} rounds), seconds | "
          f"{' | '.join(runs)} |")  # fmt: skip
    print("|---|" + "---:|" * len(runs))
    for index, day in enumerate(days):
        cells = [f"{statistics.median(rows[index]['seconds'] for rows in runs[name]):.2f}" for name in runs]
        print(f"| day {index + 1} ({day}) | {' | '.join(cells)} |")
    for key, label in (
        ("execute", "of which execute (kernel + cells), per day"),
        ("render", "of which render, per day"),
    ):
        cells = [
            f"{statistics.median(statistics.mean(row[key] for row in rows) for rows in runs[name]):.2f}"
            for name in runs
        ]
        print(f"| {label} | {' | '.join(cells)} |")
    totals = {
        name: statistics.median(sum(row["seconds"] for row in rows) for rows in runs[name]) for name in runs
    }
    print(f"| total for {args.days} days | {' | '.join(f'{totals[name]:.2f}' for name in runs)} |")
    later = {
        name: statistics.median(statistics.mean(row["seconds"] for row in rows[1:]) for rows in runs[name])
        for name in runs
    }
    print(f"| mean of days 2..{args.days} | {' | '.join(f'{later[name]:.2f}' for name in runs)} |")
    print(f"\nreused / one per day, total: {totals['reused kernel'] / totals['one kernel per day']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
