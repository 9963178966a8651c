"""The report kernel reused by the reports of a run (pipeline.reporting.kernel): nothing of one day is
visible to the next, the report is the one a fresh kernel writes, a failed or dead kernel is replaced,
another warehouse gets its own, forked task processes take turns on the kernel their parent started for
them (and start their own when it fails), and none outlives its process.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import multiprocessing
import os
import re
import signal
import time
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from report_world import FIRST, broken_notebook, build_days

from pipeline.reporting import kernel
from pipeline.reporting import notebook as report_notebook
from pipeline.warehouse.engine import WarehouseSettings, absolute_database_url, open_warehouse

IN_MEMORY = WarehouseSettings("sqlite://")


@pytest.fixture(autouse=True)
def no_kernel_before_or_after():
    """Each test starts without a kernel in this process and leaves none."""
    kernel.shutdown()
    yield
    kernel.shutdown()


def run_cells(
    directory: Path, *sources: str, warehouse: WarehouseSettings = IN_MEMORY, timeout: int = 60
) -> nbformat.NotebookNode:
    directory.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    return report_notebook.execute_notebook(
        notebook, working_dir=directory, warehouse=warehouse, timeout=timeout, failed_path=directory / "x"
    )


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.outputs if output["output_type"] == "stream")


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead and not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_until_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


# -- reuse without leaks ----------------------------------------------------------------------------------


def test_the_next_days_report_reuses_the_kernel_and_sees_nothing_of_the_day_before(tmp_path: Path) -> None:
    run_cells(
        tmp_path / "day1",
        "secret_of_day_1 = 42\nimport json as json_of_day_1",
        "def helper_of_day_1():\n    return 1\nhelper_of_day_1()",
    )
    first_pid = kernel.kernel_pid()
    assert first_pid is not None

    day2 = run_cells(
        tmp_path / "day2",
        "names = ('secret_of_day_1', 'json_of_day_1', 'helper_of_day_1', '_', '_2', 'Out')\n"
        "print(sorted(name for name in names if name in globals() and globals()[name]))",
        "import os\nprint(os.getcwd())",
        "6 * 7",
    )

    assert kernel.kernel_pid() == first_pid  # the same kernel ...
    assert kernel.reports_served() == 2
    assert printed(day2.cells[0]).strip() == "[]"  # ... with nothing of day 1 in it, no output cache
    assert printed(day2.cells[1]).strip() == str(tmp_path / "day2")  # in day 2's folder
    # Counted from 1 as by a fresh kernel: the executed notebook is the same either way.
    assert [cell.execution_count for cell in day2.cells] == [1, 2, 3]
    assert day2.cells[2].outputs[0]["execution_count"] == 3


def _comparable(directory: Path) -> tuple[list, str]:
    """The executed notebook's cells and the HTML, without what differs from run to run anyway: the
    minute they were generated at, nbclient's timestamps, the injected cell's random id, the folder."""
    executed = json.loads((directory / report_notebook.EXECUTED_NOTEBOOK).read_text())
    page = (directory / report_notebook.REPORT_HTML).read_text()
    for index, cell in enumerate(executed["cells"]):
        cell["metadata"].pop("execution", None)
        page = page.replace(cell["id"], f"cell-{index}")
        cell["id"] = f"cell-{index}"
    generated = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    data_dir = str(directory.parent.parent)
    cells = generated.sub("Generated", json.dumps(executed["cells"])).replace(data_dir, "DATA")
    return json.loads(cells), generated.sub("Generated", page).replace(data_dir, "DATA")


def test_a_report_from_the_reused_kernel_is_the_one_a_fresh_kernel_writes(tmp_path: Path) -> None:
    warehouse = WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}")
    build_days(open_warehouse(warehouse), 10)
    day = FIRST + dt.timedelta(days=9)
    report_notebook.render_report(warehouse, tmp_path / "reused", day - dt.timedelta(days=1))
    reused_manifest = report_notebook.render_report(warehouse, tmp_path / "reused", day)
    assert kernel.reports_served() == 2
    kernel.shutdown()
    fresh_manifest = report_notebook.render_report(warehouse, tmp_path / "fresh", day)
    assert kernel.reports_served() == 1

    reused = report_notebook.report_dir(tmp_path / "reused", day)
    fresh = report_notebook.report_dir(tmp_path / "fresh", day)
    assert reused_manifest.keys() == fresh_manifest.keys()
    assert reused_manifest["files"] == fresh_manifest["files"]
    assert sorted(path.name for path in reused.iterdir()) == sorted(path.name for path in fresh.iterdir())
    reused_cells, reused_html = _comparable(reused)
    fresh_cells, fresh_html = _comparable(fresh)
    # The same cells, outputs (charts included) and execution counts; the same page.
    assert reused_cells == fresh_cells
    assert reused_html == fresh_html
    for name in reused_manifest["files"]["charts"]:
        assert (reused / name).read_bytes() == (fresh / name).read_bytes(), name


# -- failures replace the kernel --------------------------------------------------------------------------


def test_a_cell_error_fails_that_day_and_the_next_day_renders_in_a_new_kernel(tmp_path: Path) -> None:
    warehouse = WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}")
    build_days(open_warehouse(warehouse), 2)
    run_cells(tmp_path / "warm-up", "1", warehouse=warehouse)
    failed_pid = kernel.kernel_pid()

    with pytest.raises(report_notebook.ReportCellError) as raised:
        report_notebook.render_report(
            warehouse, tmp_path / "data", FIRST, notebook_path=broken_notebook(tmp_path / "broken.ipynb")
        )
    assert "raise ValueError" in str(raised.value) and "no usage table for 2026-09-01" in str(raised.value)
    assert (report_notebook.report_dir(tmp_path / "data", FIRST) / report_notebook.FAILED_NOTEBOOK).exists()
    assert kernel.kernel_pid() is None and wait_until_gone(failed_pid)  # not trusted again

    day = FIRST + dt.timedelta(days=1)
    manifest = report_notebook.render_report(warehouse, tmp_path / "data", day)
    assert manifest["date"] == day.isoformat()
    assert (report_notebook.report_dir(tmp_path / "data", day) / report_notebook.REPORT_HTML).exists()
    assert kernel.kernel_pid() not in (None, failed_pid)


def test_a_kernel_that_dies_in_a_cell_or_between_reports_is_replaced(tmp_path: Path) -> None:
    run_cells(tmp_path / "one", "1")
    first_pid = kernel.kernel_pid()
    with pytest.raises(DeadKernelError):
        run_cells(tmp_path / "dies", "import os\nos._exit(3)")
    assert kernel.kernel_pid() is None and wait_until_gone(first_pid)

    assert printed(run_cells(tmp_path / "two", "print('after a death')").cells[0]) == "after a death\n"
    second_pid = kernel.kernel_pid()
    assert second_pid not in (None, first_pid)
    os.kill(second_pid, signal.SIGKILL)  # e.g. the OOM killer, between two reports
    assert wait_until_gone(second_pid)

    assert printed(run_cells(tmp_path / "three", "print('after a kill')").cells[0]) == "after a kill\n"
    assert kernel.kernel_pid() not in (None, first_pid, second_pid)
    assert kernel.reports_served() == 1


def test_a_kernel_that_died_unnoticed_before_the_next_report_is_replaced_for_that_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cells(tmp_path / "one", "1")
    dead_pid = kernel.kernel_pid()
    os.kill(dead_pid, signal.SIGKILL)
    assert wait_until_gone(dead_pid)
    # The check before a report can race with a dying kernel: make it miss the death, as it may.
    monkeypatch.setattr(kernel._Kernel, "alive", lambda self: True)
    assert printed(run_cells(tmp_path / "two", "print('next day')").cells[0]) == "next day\n"
    monkeypatch.undo()
    assert kernel.kernel_pid() not in (None, dead_pid)


def test_a_cell_that_outlives_its_timeout_gets_its_kernel_replaced(tmp_path: Path) -> None:
    run_cells(tmp_path / "one", "1")
    hung_pid = kernel.kernel_pid()
    with pytest.raises(CellTimeoutError):
        run_cells(tmp_path / "hangs", "import time\ntime.sleep(120)", timeout=2)
    assert kernel.kernel_pid() is None and wait_until_gone(hung_pid)  # the sleeping cell went with it

    assert printed(run_cells(tmp_path / "two", "print('next day')").cells[0]) == "next day\n"
    assert kernel.kernel_pid() not in (None, hung_pid)


def test_another_warehouse_gets_a_kernel_with_its_environment(tmp_path: Path) -> None:
    url = "import os\nprint(os.environ['PIPELINE_DATABASE_URL'])"
    first, second = (WarehouseSettings(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    assert printed(run_cells(tmp_path / "a", url, warehouse=first).cells[0]).strip() == first.database_url
    first_pid = kernel.kernel_pid()
    assert printed(run_cells(tmp_path / "b", url, warehouse=second).cells[0]).strip() == second.database_url
    assert kernel.kernel_pid() not in (None, first_pid)
    assert wait_until_gone(first_pid)  # the other warehouse's kernel is shut down, not left behind


# -- processes ----------------------------------------------------------------------------------------------


def _task_process(directory: Path, results) -> None:
    """What a luigi task process (multiprocessing, fork) does: one report, then it returns."""
    notebook = run_cells(directory, "print('child')")
    results.send((kernel.kernel_pid(), printed(notebook.cells[0])))


def test_a_forked_task_process_starts_its_own_kernel_and_leaves_the_parents_alone(tmp_path: Path) -> None:
    run_cells(tmp_path / "parent", "parent_value = 1")
    parent_pid = kernel.kernel_pid()
    receiver, sender = multiprocessing.Pipe(duplex=False)
    # luigi --workers N runs each task in a process like this one (multiprocessing with fork).
    child = multiprocessing.get_context("fork").Process(
        target=_task_process, args=(tmp_path / "child", sender)
    )
    child.start()
    assert receiver.poll(60), "the forked task process's report hung"
    child_kernel, output = receiver.recv()
    child.join(60)
    assert child.exitcode == 0
    assert output == "child\n"
    assert child_kernel not in (None, parent_pid)
    # Shut down by the task process before it left (with os._exit, which skips atexit): gone at once, not
    # a second later when the orphaned kernel would notice that its parent is gone.
    assert not running(child_kernel)

    assert kernel.kernel_pid() == parent_pid  # the parent's kernel is untouched and still serves
    later = run_cells(tmp_path / "parent-again", "print('parent_value' in globals())")
    assert printed(later.cells[0]) == "False\n"
    assert kernel.kernel_pid() == parent_pid and kernel.reports_served() == 2


def _report_kernels_of(database_url: str) -> list[int]:
    """The running ipykernel processes whose environment names this warehouse."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"ipykernel" not in (proc / "cmdline").read_bytes():
                continue
            environment = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if f"{report_notebook.DATABASE_URL_ENV}={database_url}".encode() in environment:
            pids.append(int(proc.name))
    return [pid for pid in pids if running(pid)]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)  # the kernel does not depend on it
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_backfill_on_the_command_line_leaves_no_kernel_running(world, workers: str) -> None:
    days = [dt.date(2026, 10, 1), dt.date(2026, 10, 2)]
    world.write_crm(days[0], days[-1])
    world.settings["report"] = {"enabled": "true"}
    world.write_config()

    temporary = world.root / "tmp"  # where the run's kernels keep their sockets
    temporary.mkdir()

    result = world.run_cli(
        *("RangeDaily", "--of", "RunDaily", "--start", days[0].isoformat(), "--stop", "2026-10-03"),
        *("--days-back", "36500", "--workers", workers),
        timeout=300,
        env={"TMPDIR": str(temporary)},
    )

    assert result.returncode == 0, result.stderr[-4000:]
    for day in days:
        assert report_notebook.read_manifest(world.data_dir, day) is not None, day
    if workers == "1":  # one process renders both days: one kernel, and the log says so
        assert re.search(r"reusing the report kernel \(pid \d+\)", result.stderr), result.stderr[-4000:]
        assert re.search(r"the report kernel \(pid \d+\) served 2 reports", result.stderr), result.stderr[
            -4000:
        ]
    else:  # a process per task: the scheduling process started one kernel, both task processes used it
        started = re.findall(
            r"started the report kernel \(pid (\d+)\) for this run's task processes", result.stderr
        )
        assert len(started) == 1, result.stderr[-4000:]
        assert result.stderr.count(f"report executed on the kernel (pid {started[0]})") == 2, result.stderr[
            -4000:
        ]
        assert f"the report kernel (pid {started[0]}) served 2 report(s)" in result.stderr, result.stderr[
            -4000:
        ]
    assert _report_kernels_of(absolute_database_url(world.warehouse.database_url)) == []
    # Every kernel was shut down by its process, not left to notice its parent is gone (ipykernel polls
    # for that): the shutdown removes the socket directory, whoever started the kernel.
    assert list(temporary.glob("churn-report-kernel-*")) == []


# -- a kernel lent to the task processes (luigi --workers N) ------------------------------------------------

TURN_CELL = """\
import json, os, time
start = time.time()
time.sleep(0.5)
leftover = "mine" in globals()
print(json.dumps({"kernel": os.getpid(), "start": start, "end": time.time(), "leftover": leftover}))
mine = 1
"""


def _report_in_task_process(directory: Path, source: str, results, timeout: int) -> None:
    """What a luigi task process does for RenderReport: one report, then it leaves (os._exit)."""
    try:
        notebook = run_cells(directory, source, warehouse=_own_warehouse(directory.parent), timeout=timeout)
        results.send(("ok", printed(notebook.cells[0]), kernel.kernel_pid()))
    except Exception as error:
        results.send((type(error).__name__, str(error)[:500], kernel.kernel_pid()))


def _start_task_process(directory: Path, source: str, timeout: int = 60):
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=_report_in_task_process, args=(directory, source, sender, timeout)
    )
    process.start()
    return process, receiver


def _finish(process, receiver) -> tuple[str, str, int | None]:
    assert receiver.poll(90), "the task process's report hung"
    result = receiver.recv()
    process.join(60)
    assert process.exitcode == 0
    return result


def _own_warehouse(tmp_path: Path) -> WarehouseSettings:
    """A warehouse URL of this test only: its kernels are told from other tests' (running meanwhile)."""
    return WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}")


def _lend_kernel(tmp_path: Path) -> int:
    environment = report_notebook.kernel_environment(_own_warehouse(tmp_path))
    kernel.start_for_task_processes(environment, tmp_path / "start")
    lent = kernel.lent_kernel_pid()
    assert lent is not None
    return lent


def test_task_processes_take_turns_on_the_kernel_their_parent_started_and_see_nothing_of_each_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lent = _lend_kernel(tmp_path)
    started = [_start_task_process(tmp_path / f"day{k}", TURN_CELL) for k in range(3)]
    results = [_finish(*pair) for pair in started]

    assert all(status == "ok" for status, _, _ in results), results
    outputs = sorted((json.loads(text) for _, text, _ in results), key=lambda output: output["start"])
    assert {output["kernel"] for output in outputs} == {lent}  # every report ran on the lent kernel
    assert all(own is None for _, _, own in results)  # ... and no task process started a kernel of its own
    assert not any(output["leftover"] for output in outputs)  # each namespace cleared before its report
    assert _report_kernels_of(absolute_database_url(_own_warehouse(tmp_path).database_url)) == [lent]

    with caplog.at_level("INFO", logger="pipeline.report"):
        kernel.shutdown()
    assert f"the report kernel (pid {lent}) served 3 report(s)" in caplog.text
    assert wait_until_gone(lent)


def test_a_report_that_fails_on_the_lent_kernel_kills_it_and_the_next_ones_start_their_own(
    tmp_path: Path,
) -> None:
    lent = _lend_kernel(tmp_path)
    status, message, _ = _finish(*_start_task_process(tmp_path / "fails", "raise ValueError('bad day')"))
    assert status == "ReportCellError" and "bad day" in message
    assert wait_until_gone(lent)  # not trusted again, and nothing of it keeps running

    status, text, own = _finish(*_start_task_process(tmp_path / "next", "import os\nprint(os.getpid())"))
    assert status == "ok"
    assert own is not None and int(text) == own != lent  # its own kernel, shut down when it left
    assert wait_until_gone(own)


def test_a_task_process_killed_mid_report_does_not_leave_the_next_report_waiting_on_its_cell(
    tmp_path: Path,
) -> None:
    lent = _lend_kernel(tmp_path)
    running_mark = tmp_path / "cell-running"
    process, _ = _start_task_process(
        tmp_path / "killed", f"open({str(running_mark)!r}, 'w').close()\nimport time\ntime.sleep(300)"
    )
    deadline = time.monotonic() + 60
    while not running_mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_mark.exists(), "the cell never started"
    os.kill(process.pid, signal.SIGKILL)  # kill -9 of the task process, its report half done
    process.join(10)

    started = time.monotonic()
    status, text, own = _finish(*_start_task_process(tmp_path / "next", "import os\nprint(os.getpid())"))
    assert status == "ok" and own is not None and int(text) == own != lent
    assert time.monotonic() - started < 30  # did not wait for the killed report's 300 s cell
    assert wait_until_gone(lent)  # the sleeping cell's kernel was killed, not left running


def _holding_the_turn(tmp_path: Path):
    """The lent kernel's turn, taken as a task process rendering a report takes it."""
    handle = open(kernel._lent.sockets / "turn.lock", "a")  # noqa: SIM115 (released by the caller)
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def test_a_report_waits_for_the_turn_of_the_report_on_the_lent_kernel(tmp_path: Path) -> None:
    lent = _lend_kernel(tmp_path)
    turn = _holding_the_turn(tmp_path)
    process, receiver = _start_task_process(tmp_path / "waits", "import os\nprint(os.getpid())")
    assert not receiver.poll(2), "the report ran while another held the lent kernel"
    fcntl.flock(turn, fcntl.LOCK_UN)
    turn.close()
    status, text, own = _finish(process, receiver)
    assert status == "ok" and int(text) == lent and own is None  # then it ran there


def test_a_report_that_cannot_get_its_turn_within_its_timeout_starts_its_own_kernel(tmp_path: Path) -> None:
    lent = _lend_kernel(tmp_path)
    turn = _holding_the_turn(tmp_path)  # e.g. a report whose cell hangs
    try:
        status, text, own = _finish(
            *_start_task_process(tmp_path / "own", "import os\nprint(os.getpid())", 2)
        )
    finally:
        turn.close()
    assert status == "ok" and own is not None and int(text) == own != lent
    assert kernel.lent_kernel_pid() == lent  # not spoiled: the report holding it may be fine


def test_a_lent_kernel_stalled_for_seconds_mid_cell_is_not_taken_for_dead(tmp_path: Path) -> None:
    """A loaded machine can leave the kernel unscheduled for a while; only a kernel gone is dead."""
    lent = _lend_kernel(tmp_path)
    running_mark = tmp_path / "cell-running"
    process, receiver = _start_task_process(
        tmp_path / "stalls",
        f"open({str(running_mark)!r}, 'w').close()\nimport time\ntime.sleep(1)\nprint('done')",
    )
    deadline = time.monotonic() + 60
    while not running_mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running_mark.exists(), "the cell never started"
    os.kill(lent, signal.SIGSTOP)  # no heartbeat for 3 s
    time.sleep(3)
    os.kill(lent, signal.SIGCONT)
    status, text, own = _finish(process, receiver)
    assert (status, text, own) == ("ok", "done\n", None)
    assert kernel.lent_kernel_pid() == lent


def test_the_process_that_lent_a_kernel_uses_it_for_reports_it_runs_itself(tmp_path: Path) -> None:
    # luigi.build(..., workers=1) from a folder whose luigi.cfg says workers = 2: the lent kernel was
    # started while scheduling, and the reports then run in this very process.
    lent = _lend_kernel(tmp_path)
    notebook = run_cells(
        tmp_path / "day", "import os\nprint(os.getpid())", warehouse=_own_warehouse(tmp_path)
    )
    assert int(printed(notebook.cells[0])) == lent == kernel.kernel_pid()
    assert kernel.lent_kernel_pid() is None  # it is this process's own kernel now
