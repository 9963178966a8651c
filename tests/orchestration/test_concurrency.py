"""Runs at the same time (docs/contract.md sections 4 and 7, issue 6): two RunDaily of one day at once,
with and without luigid, and a backfill with two workers. The work happens once, the table is the oracle's.

Without luigid nothing coordinates two `luigi --module pipeline` processes but the locks of
pipeline/orchestration/locks.py: a task lock per task and day (flock under data_dir/locks/), after which the
task asks ``complete()`` again, and the warehouse write lock (SQLite's BEGIN IMMEDIATE, a PostgreSQL
advisory lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PipelineWorld, query, table_rows
from test_tasks import expected_table

from pipeline.datasets import CRM, USAGE
from pipeline.orchestration import locks
from pipeline.sources.crm_snapshot import CrmSnapshot
from pipeline.warehouse import engine as warehouse_engine
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import WarehouseSettings, create_engine

START = dt.date(2026, 10, 1)
NOT_RUN, NOT_RUN_TEXT = 25, "not granted run permission by the scheduler"  # luigi.cfg [retcode]
ALREADY_RUNNING, ALREADY_RUNNING_TEXT = 10, "were being run by another worker"  # luigi.cfg [retcode]
DAY_TASKS = ("FetchCrmSnapshot", "FetchProductUsage", "StageCrm", "StageProductUsage", "MergeDay")


def luigi_command(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", *arguments]


def backfill_arguments(days: list[dt.date]) -> list[str]:
    """RangeDaily over ``days`` (consecutive), report off, however old they are."""
    first, stop = days[0].isoformat(), (days[-1] + dt.timedelta(days=1)).isoformat()
    arguments = ["RangeDaily", "--of", "RunDaily", "--start", first, "--stop", stop, "--days-back", "36500"]
    return [*arguments, "--report-enabled", "false"]


def run_at_once(
    world: PipelineWorld, *commands: list[str], hold: tuple[Path, ...] = (), timeout: float = 180
) -> list[tuple[int, str]]:
    """Start every command at the same moment; (exit code, stderr) of each.

    With ``hold``, the test holds those lock files until every run logs that it waits for one of them:
    the runs then certainly overlap inside the same task.
    """
    logs = [world.root / f"run-{index}.stderr" for index in range(len(commands))]
    processes = []
    try:
        with contextlib.ExitStack() as held:
            for path in hold:
                held.enter_context(locks.file_lock(path, timeout=0))
            for command, log in zip(commands, logs, strict=True):
                with log.open("w") as stderr:
                    processes.append(
                        subprocess.Popen(
                            command,
                            cwd=world.root,
                            env=world.cli_env(),
                            stdout=subprocess.DEVNULL,
                            stderr=stderr,
                            text=True,
                        )
                    )
            deadline = time.monotonic() + 60
            while hold and not all("is locked by" in log.read_text() for log in logs):
                assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
                assert all(process.poll() is None for process in processes)
                time.sleep(0.05)
        for process in processes:
            process.wait(timeout=timeout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(process.returncode, log.read_text()) for process, log in zip(processes, logs, strict=True)]


def done_counts(stderrs: list[str]) -> Counter:
    """How many times each task of the day did its work, over all the runs' logs."""
    return Counter(
        match.group(1)
        for stderr in stderrs
        for match in re.finditer(r"^INFO: (\w+) done for \d{4}-\d\d-\d\d in ", stderr, re.M)
    )


def check_one_landing_each(world: PipelineWorld) -> None:
    for directory in sorted((world.data_dir / "raw").glob("*/date=*")):
        names = sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*"))
        assert [name for name in names if name.endswith("manifest.json")] == ["manifest.json"], names
        assert not [name for name in names if name.endswith(".part") or ".rejected-" in name], names
        assert not [name for name in names if "/" in name], f"{directory}: a prior version: {names}"


def check_no_duplicates(world: PipelineWorld) -> None:
    with world.engine.connect() as connection:
        total, distinct = connection.exec_driver_sql(
            query(
                connection,
                "SELECT (SELECT COUNT(*) FROM {analytics}.company_daily_activity), "
                "(SELECT COUNT(*) FROM (SELECT DISTINCT activity_date, company_id "
                "FROM {analytics}.company_daily_activity) AS day_keys)",
            )
        ).one()
    assert total == distinct


def assert_same_day_once(
    world: PipelineWorld, usage_api, results: list[tuple[int, str]], served: int, codes=(0,)
) -> None:
    for code, stderr in results:
        assert code in codes, stderr[-4000:]
        assert not re.search(r"^\* \d+ failed", stderr, re.M), stderr[-4000:]
    assert table_rows(world.engine) == expected_table([START])
    check_no_duplicates(world)
    check_one_landing_each(world)
    manifest = json.loads((world.data_dir / f"raw/product_usage/date={START}/manifest.json").read_text())
    assert usage_api.stats()["pages_served"] - served == manifest["page_count"], "the API was read twice"
    counts = done_counts([stderr for _, stderr in results])
    assert {task: counts[task] for task in DAY_TASKS} == dict.fromkeys(DAY_TASKS, 1), counts


@pytest.mark.slow
def test_two_run_daily_of_one_day_at_once_without_a_scheduler(world: PipelineWorld, usage_api) -> None:
    world.write_crm(START, START)
    world.settings["report"] = {"enabled": "true"}  # the report too: rendered and mailed once
    world.write_config()
    served = usage_api.stats()["pages_served"]
    command = luigi_command("RunDaily", "--date", START.isoformat())
    # Whichever fetch a run starts with, it waits for the test to let go: both runs start it together.
    first_tasks = [
        locks.locks_dir(world.data_dir) / family / f"date={START.isoformat()}.lock"
        for family in ("FetchCrmSnapshot", "FetchProductUsage")
    ]

    results = run_at_once(world, command, command, hold=tuple(first_tasks))

    assert_same_day_once(world, usage_api, results, served)
    counts = done_counts([stderr for _, stderr in results])
    assert counts["RenderReport"] == counts["SendReport"] == 1, counts  # one report, mailed at most once
    skipped = "is already done (another run did it while this one waited): skipped"
    assert any(skipped in stderr for _, stderr in results)


@pytest.mark.slow
def test_two_refreshes_of_one_day_at_once_keep_one_prior_version(world: PipelineWorld) -> None:
    world.write_crm(START, START)
    assert world.run_cli("RunDaily", "--date", START.isoformat()).returncode == 0
    command = luigi_command("RunDaily", "--date", START.isoformat(), "--refresh")
    first_tasks = [
        locks.locks_dir(world.data_dir) / family / f"date={START.isoformat()}.lock"
        for family in ("FetchCrmSnapshot", "FetchProductUsage")
    ]

    results = run_at_once(world, command, command, hold=tuple(first_tasks))

    for code, stderr in results:
        assert code == 0, stderr[-4000:]
    # Both refreshes were asked for before either fetched: one fetch answers both, one prior version.
    counts = done_counts([stderr for _, stderr in results])
    assert {task: counts[task] for task in DAY_TASKS} == dict.fromkeys(DAY_TASKS, 1), counts
    for dataset in ("crm", "product_usage"):
        directory = world.data_dir / f"raw/{dataset}/date={START.isoformat()}"
        assert sorted(path.name for path in directory.glob("v*")) == ["v1"]
        assert (directory / "v1/manifest.json").exists() and (directory / "manifest.json").exists()
    assert table_rows(world.engine) == expected_table([START])
    check_no_duplicates(world)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[int]:
    """A central scheduler on a free loopback port, for this test only; yields its port."""
    port = free_port()
    state = tmp_path / "luigid"
    state.mkdir()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("luigid")),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-path",
            str(state / "state.pickle"),
            "--logdir",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert process.poll() is None, "luigid exited"
            assert time.monotonic() < deadline, "luigid did not listen within 30s"
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_two_run_daily_of_one_day_at_once_through_luigid(
    world: PipelineWorld, usage_api, luigid: int
) -> None:
    world.write_crm(START, START)
    del world.settings["core"]["local_scheduler"]
    world.write_config()
    served = usage_api.stats()["pages_served"]
    command = luigi_command(
        "RunDaily",
        "--date",
        START.isoformat(),
        "--scheduler-host",
        "127.0.0.1",
        "--scheduler-port",
        str(luigid),
    )

    results = run_at_once(world, command, command)

    # luigid hands each task to one of the two workers: they share the day's work. Luigi reports the run
    # that was refused a task another worker held as 25, [retcode] not_run ("not granted run permission"),
    # or, when it ran out of work while the other still ran the day's last tasks, as 10, [retcode]
    # already_running ("were being run by another worker"; seen on a loaded machine), even though the day
    # completed: a clean exit, not a failure (docs/operations_concurrency.md).
    assert_same_day_once(world, usage_api, results, served, codes=(0, NOT_RUN, ALREADY_RUNNING))
    for code, stderr in results:
        explained = {0: "", NOT_RUN: NOT_RUN_TEXT, ALREADY_RUNNING: ALREADY_RUNNING_TEXT}[code]
        assert explained in stderr and not re.search(r"^\* \d+ failed", stderr, re.M), stderr[-4000:]


@pytest.mark.slow
def test_a_two_week_backfill_with_two_workers_gives_the_one_worker_table(world: PipelineWorld) -> None:
    # Two weeks: days with full 7-day windows on both sides of a week boundary, 84 task processes. (It
    # was 30 days, 180 processes and 36-47 s a backend: the suite's time budget went to one property.)
    days = [START + dt.timedelta(days=offset) for offset in range(14)]
    world.write_crm(days[0], days[-1])
    started = time.monotonic()

    result = world.run_cli(*backfill_arguments(days), "--workers", "2", timeout=400)  # a deadlock fails here

    assert result.returncode == 0, result.stderr[-4000:]
    # The oracle is what one worker loading the days in order gives (tests/test_tasks.py).
    assert table_rows(world.engine) == expected_table(days)
    check_no_duplicates(world)
    check_one_landing_each(world)
    counts = done_counts([result.stderr])
    assert {task: counts[task] for task in DAY_TASKS} == dict.fromkeys(DAY_TASKS, len(days)), counts
    print(f"{len(days)}-day backfill, 2 workers: {time.monotonic() - started:.1f}s")


# -- the locks on their own ------------------------------------------------------------------------------


def test_a_file_lock_makes_another_process_wait_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "MergeDay" / "date=2026-10-01.lock"
    ready = tmp_path / "ready"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the lock until it is killed
        try:
            with locks.file_lock(path, timeout=5):
                ready.write_text("locked")
                time.sleep(60)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with (
            pytest.raises(locks.LockTimeoutError, match=f"pid {pid} on "),
            locks.file_lock(path, timeout=0.3),
        ):
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    started = time.monotonic()
    with locks.file_lock(path, timeout=5), locks.file_lock(path, timeout=0):  # re-entrant
        assert time.monotonic() - started < 1, "kill -9 of the holder must release the lock"


@pytest.mark.postgres
def test_the_postgres_warehouse_write_lock_serialises_transactions(postgres_server_url: str) -> None:
    engine = create_engine(WarehouseSettings(postgres_server_url))
    with engine.begin() as holder:
        warehouse_engine.lock_warehouse_for_writing(holder)
        with engine.connect() as other, other.begin():
            other.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                warehouse_engine.lock_warehouse_for_writing(other)
    with engine.begin() as after:  # released by the commit
        warehouse_engine.lock_warehouse_for_writing(after)


def test_staging_and_merge_take_their_locks_before_reading_staged_rows(
    engine: sa.Engine, monkeypatch
) -> None:
    taken: list[tuple] = []

    def spy(name: str, real):
        def take(connection, *key) -> None:
            taken.append((name, *key))
            real(connection, *key)

        return take

    monkeypatch.setattr(staging, "lock_for_staging", spy("staging", staging.lock_for_staging))
    monkeypatch.setattr(merge, "lock_warehouse_for_writing", spy("write", merge.lock_warehouse_for_writing))
    monkeypatch.setattr(merge, "lock_staged_day", spy("staged day", merge.lock_staged_day))
    from conftest import company

    staging.stage_crm(engine, START, CrmSnapshot("test", [company("C1")]), "l1")
    staging.stage_usage(engine, START, [("C1", 1, 2)], "test", "l1")
    with pytest.raises(merge.MergeError, match="not staged"):  # the snapshot in effect is START's
        merge.merge_day(engine, START + dt.timedelta(days=1))
    merge.merge_day(engine, START)
    assert taken == [
        ("staging", CRM, START),
        ("staging", USAGE, START),
        ("write",),
        ("staged day", CRM, START),
        ("staged day", USAGE, START + dt.timedelta(days=1)),
        ("write",),
        ("staged day", CRM, START),
        ("staged day", USAGE, START),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_two_worker_processes_share_a_10_day_backfill_through_one_luigid(
    world: PipelineWorld, usage_api, luigid: int
) -> None:
    """Luigi's own distribution (docs/scaling.md): two `luigi` processes, as on two hosts, one luigid and
    one PostgreSQL. luigid hands each task to one of them: every day is loaded once, no work is done
    twice, and the table is what one worker gives."""
    days = [START + dt.timedelta(days=offset) for offset in range(10)]
    world.write_crm(days[0], days[-1])
    del world.settings["core"]["local_scheduler"]
    world.write_config()
    served = usage_api.stats()["pages_served"]
    command = luigi_command(
        *backfill_arguments(days), "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)
    )

    results = run_at_once(world, command, command, timeout=400)

    for code, stderr in results:
        assert code in (0, NOT_RUN, ALREADY_RUNNING), stderr[-4000:]  # see the test above
        assert not re.search(r"^\* \d+ failed", stderr, re.M), stderr[-4000:]
    assert table_rows(world.engine) == expected_table(days)
    check_no_duplicates(world)
    check_one_landing_each(world)
    counts = done_counts([stderr for _, stderr in results])
    assert {task: counts[task] for task in DAY_TASKS} == dict.fromkeys(DAY_TASKS, 10), counts
    per_process = [done_counts([stderr]) for _, stderr in results]
    assert all(sum(count.values()) > 0 for count in per_process), "one process did all the work"
    pages = sum(
        json.loads((world.data_dir / f"raw/product_usage/date={day}/manifest.json").read_text())["page_count"]
        for day in days
    )
    assert usage_api.stats()["pages_served"] - served == pages, "a page was fetched twice"
