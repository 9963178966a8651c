"""bench/issue11.py at its smallest (--quick): the table carries each goal's figure beside its baseline,
and the run leaves no database behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import POSTGRES_ADMIN_URL, _postgres_unavailable_reason, _unavailable

from pipeline.warehouse.engine import postgres_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# | goal | figure | ours | baseline | ratio | target | verdict |, seconds in ours and baseline, a ratio.
FIGURE_ROW = re.compile(
    r"^\| (?P<goal>\d) \| (?P<figure>[^|]+) \| (?P<ours>[\d.]+) s \| [^|]*?[\d.]+ s \| [\d.]+x \|"
)


def bench_databases() -> set[str]:
    engine = sa.create_engine(postgres_url(POSTGRES_ADMIN_URL))
    with engine.connect() as connection:
        names = {row[0] for row in connection.exec_driver_sql("SELECT datname FROM pg_database")}
    engine.dispose()
    return {name for name in names if name.startswith("bench11_")}


@pytest.mark.postgres
@pytest.mark.slow
def test_quick_run_of_goals_3_4_5_prints_each_figure_beside_its_baseline() -> None:
    _unavailable(_postgres_unavailable_reason(), "PostgreSQL")
    before = bench_databases()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LUIGI_", "PEER_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "bench/issue11.py",
            "--quick",
            "--goals",
            "3,4,5",
            "--load-backends",
            "sqlite",
            "postgresql",
            "--postgres-url",
            POSTGRES_ADMIN_URL,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| goal | figure |") :]
    figures = [match.groupdict() for line in table.splitlines() if (match := FIGURE_ROW.match(line))]
    goals = [row["goal"] for row in figures]
    assert goals.count("3") == 2, table  # SQLite and PostgreSQL, beside .import and \copy
    assert goals.count("4") == 4 and goals.count("5") == 1, table  # a day; a late day (D+1 .. D+6)
    # Each merge of goal 4 is followed by the least any merge pays, against the same floor.
    merges = [row for row in figures if row["goal"] == "4"]
    assert [row["figure"].startswith("  least any") for row in merges] == [False, True, False, True], table
    assert any("sqlite" in row["figure"] for row in figures) and any(
        "postgresql" in row["figure"] for row in figures
    )
    assert all(float(row["ours"]) > 0 for row in figures), table
    assert "FAILED" not in table
    # Every database the run created is gone, and so is its working folder.
    assert bench_databases() == before
    work = re.search(r"work (\S+)", result.stdout)
    assert work and not Path(work.group(1)).exists()
