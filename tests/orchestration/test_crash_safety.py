"""Kill tests (docs/contract.md section 7, issue 6): ``kill -9`` a RunDaily at many points, then a plain
re-run must finish the day and the table must be what a clean run gives (``record_loaded_at`` aside).

Each kill point is one day: RunDaily(D) runs in a child process that dies by SIGKILL, either at a named
fault point (``PIPELINE_TEST_KILL_AT``, see pipeline/faultpoints.py), in the middle of the CRM download
(an HTTP source that sends half the file and stalls), or after a random delay. Then:

* right after the kill, nothing is half done: a landing has a manifest only when every file it lists
  is there with its checksum, every staged load has all its rows, the table holds exactly the loaded
  days, each complete and equal to the oracle's rows for those days;
* a plain re-run of RunDaily(D) exits 0, the table equals the oracle for every day loaded so far,
  ``analytics.loaded_days`` agrees with it, each landing has exactly one manifest and no temporary file.

Speed: Great Expectations costs ~4 s to import, more than a whole day of work here. The children are
forked from this (warm) test process and run Luigi's own command-line entry point
(``luigi.retcodes.run_with_retcodes``, as ``luigi --module pipeline`` does), so each kill costs only the
work up to the kill; ``test_kill_the_luigi_command_line`` kills the real ``luigi`` executable too.

The points come from a seed: ``PIPELINE_KILL_SEED`` (printed on failure) and ``PIPELINE_KILL_POINTS``
(per backend, at least 20).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import luigi.configuration
import pytest
from conftest import PipelineWorld, query, table_rows
from luigi.task_register import Register
from test_tasks import expected_table

from pipeline import MergeDay, RunDaily
from pipeline.faultpoints import ENV_VAR
from pipeline.quality import runner
from pipeline.warehouse.engine import create_engine
from pipeline.warehouse.sql import normalise_value

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("PIPELINE_KILL_SEED", "20261127"))
KILL_POINTS = max(20, int(os.environ.get("PIPELINE_KILL_POINTS", "20")))
START = dt.date(2026, 10, 1)

# Named fault points that every RunDaily of a new day passes (see pipeline/faultpoints.py), with how many
# times; ``<point>:<n>`` kills on the n-th hit. The report tasks run too (RunDaily requires them).
TARGETED = [
    ("crm-download", 1),  # not a fault point: the HTTP source stalls half way through the file
    ("run:FetchCrmSnapshot", 1),
    ("done:FetchCrmSnapshot", 1),
    ("run:FetchProductUsage", 1),
    ("progress:FetchProductUsage", 3),  # each usage page landed, then the last report
    ("done:FetchProductUsage", 1),
    ("run:StageCrm", 1),
    ("run:StageProductUsage", 1),
    ("stage:deleted", 2),  # both staging transactions, in whichever order Luigi runs them
    ("stage:inserted", 2),
    ("done:StageProductUsage", 1),
    ("run:ValidateCrm", 1),
    ("done:ValidateCrm", 1),
    ("run:ValidateProductUsage", 1),
    ("done:ValidateProductUsage", 1),
    ("merge:deleted", 1),
    ("merge:populated", 1),
    ("merge:recomputed", 1),
    ("merge:validated", 1),
    ("done:MergeDay", 1),
    ("run:RenderReport", 1),
    ("progress:RenderReport", 2),
    ("done:RenderReport", 1),
    ("run:SendReport", 1),
    ("done:SendReport", 1),
]


# -- a CRM source over HTTP that can stall half way --------------------------------------------------------


class CrmHttpSource:
    """Serves the world's CRM files; ``stall_next()`` makes the next download stop half way (and hang)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = source.directory / Path(self.path).name
                if not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if source.stall.is_set():
                    source.stall.clear()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    source.stalled.set()
                    source.release.wait(30)
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def template(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/crm_{{date}}.csv"

    def stall_next(self) -> None:
        self.stalled.clear()
        self.release.clear()
        self.stall.set()

    def __enter__(self) -> CrmHttpSource:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# -- running RunDaily in a child process -------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    pid: int
    returncode: int
    seconds: float
    log: Path

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


def _child(argv: list[str], env: dict[str, str], log_path: Path) -> None:
    """In the forked child: run Luigi's command line as the `luigi` executable does, then _exit."""
    code = 70
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        os.environ.update(env)
        Register.clear_instance_cache()
        from luigi.retcodes import run_with_retcodes

        run_with_retcodes(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run_forked(
    world: PipelineWorld,
    argv: list[str],
    log_path: Path,
    *,
    kill_at: str | None = None,
    kill_after: float | None = None,
    kill_when: threading.Event | None = None,
    timeout: float = 120.0,
) -> Outcome:
    """RunDaily in a forked child; SIGKILL it after ``kill_after`` seconds or once ``kill_when`` is set."""
    # No pooled PostgreSQL connection may cross the fork: the child would share its socket.
    create_engine(world.warehouse).dispose()
    sys.stdout.flush()
    sys.stderr.flush()
    env = {ENV_VAR: kill_at} if kill_at else {}
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        _child(argv, env, log_path)
    try:
        status = None
        if kill_after is not None:
            status = _wait(pid, kill_after)  # the run may end before the delay
            if status is None:
                os.kill(pid, signal.SIGKILL)
        if kill_when is not None and kill_when.wait(timeout):
            os.kill(pid, signal.SIGKILL)
        if status is None:
            status = _wait(pid, timeout)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{' '.join(argv)} did not finish in {timeout}s; log {log_path}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    return Outcome(pid, os.waitstatus_to_exitcode(status), time.monotonic() - started, log_path)


def _wait(pid: int, seconds: float) -> int | None:
    """The child's wait status once it ends within ``seconds``; None while it runs (it stays unreaped)."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


# -- what must hold after a kill and after the re-run ------------------------------------------------------


def landing_dirs(world: PipelineWorld) -> list[Path]:
    return sorted((world.data_dir / "raw").glob("*/date=*"))


def check_landings(world: PipelineWorld, *, finished: bool) -> None:
    """A manifest only for a complete landing; after a finished run, one manifest and no temporary file."""
    for directory in landing_dirs(world):
        manifests = list(directory.rglob("manifest.json"))
        manifest_path = directory / "manifest.json"
        if finished:
            assert manifests == [manifest_path], f"{directory}: {manifests}"
            strays = [path.name for path in directory.rglob("*.part")]
            assert strays == [], f"{directory}: temporary files left: {strays}"
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        files = (
            [(manifest["file"], manifest["sha256"])]
            if "file" in manifest
            else [(page["file"], page["sha256"]) for page in manifest["pages"]]
        )
        for name, sha256 in files:
            path = directory / name
            assert path.exists(), f"{manifest_path} lists {name}, which is missing: a partial landing"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, (
                f"{path} differs from its manifest"
            )


def loaded_days(world: PipelineWorld) -> dict[dt.date, int]:
    with world.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query(
                connection,
                "SELECT activity_date, output_rows FROM {analytics}.loaded_days ORDER BY activity_date",
            )
        ).all()
    return {dt.date.fromisoformat(normalise_value(day)): int(count) for day, count in rows}


def check_warehouse(world: PipelineWorld) -> list[dt.date]:
    """No half-written day or staged load; the table is the oracle's for exactly the loaded days."""
    loaded = loaded_days(world)
    with world.engine.connect() as connection:
        per_day = {
            dt.date.fromisoformat(normalise_value(day)): int(count)
            for day, count in connection.exec_driver_sql(
                query(
                    connection,
                    "SELECT activity_date, COUNT(*) FROM {analytics}.company_daily_activity "
                    "GROUP BY activity_date",
                )
            ).all()
        }
        loads = connection.exec_driver_sql(
            query(connection, "SELECT dataset, load_date, row_count FROM {stg}.loads")
        ).all()
        staged = {
            ("crm", normalise_value(day)): int(count)
            for day, count in connection.exec_driver_sql(
                query(
                    connection, "SELECT snapshot_date, COUNT(*) FROM {stg}.crm_daily GROUP BY snapshot_date"
                )
            ).all()
        }
        staged.update(
            {
                ("product_usage", normalise_value(day)): int(count)
                for day, count in connection.exec_driver_sql(
                    query(
                        connection,
                        "SELECT activity_date, COUNT(*) FROM {stg}.product_usage_daily "
                        "GROUP BY activity_date",
                    )
                ).all()
            }
        )
    assert per_day == loaded, "analytics.loaded_days disagrees with the table"
    recorded = {(dataset, normalise_value(day)): int(count) for dataset, day, count in loads}
    assert staged == {key: count for key, count in recorded.items() if count}, "a half-staged load"
    assert table_rows(world.engine) == expected_table(sorted(loaded))
    return sorted(loaded)


# -- the kill plan -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KillPoint:
    kind: str  # "point", "crm-download" or "delay"
    point: str = ""  # PIPELINE_TEST_KILL_AT for kind "point"
    delay: float = 0.0
    report: bool = False  # run the report tasks too (they cost a notebook kernel: only when needed)

    def __str__(self) -> str:
        text = {
            "point": f"kill at {self.point}",
            "delay": f"kill after {self.delay:.2f}s",
            "crm-download": "kill during the CRM download",
        }[self.kind]
        return text + (" (with the report)" if self.report else "")

    def argv(self, day: dt.date) -> list[str]:
        return ["RunDaily", "--date", day.isoformat(), "--report-enabled", "true" if self.report else "false"]


def is_report_point(point: str) -> bool:
    return point.endswith(("RenderReport", "SendReport"))


def kill_plan(rng: random.Random, count: int, seconds: float, report_seconds: float) -> list[KillPoint]:
    """Targeted points (a seeded choice and order, each with a seeded hit count) and, for a quarter of
    the kills at least, random delays within a clean run's duration (``seconds`` without the report,
    ``report_seconds`` with it: every other delayed kill runs the report too)."""
    targeted = []
    for point, hits in TARGETED:
        if point == "crm-download":
            targeted.append(KillPoint("crm-download"))
        else:
            chosen = f"{point}:{rng.randint(1, hits)}"
            targeted.append(KillPoint("point", chosen, report=is_report_point(point)))
    rng.shuffle(targeted)
    delays = max(count // 4, count - len(targeted))
    plan = targeted[: count - delays]
    for index in range(delays):
        report = index % 2 == 1
        plan.append(
            KillPoint("delay", delay=rng.uniform(0.0, report_seconds if report else seconds), report=report)
        )
    rng.shuffle(plan)
    return plan


def kernels_of(pid: int) -> list[int]:
    """Notebook kernels started by process ``pid`` that are still alive (found by JPY_PARENT_PID)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if f"JPY_PARENT_PID={pid}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


@pytest.fixture
def http_crm(world: PipelineWorld) -> Iterator[CrmHttpSource]:
    """The world's CRM files over HTTP (the download can then be interrupted half way)."""
    with CrmHttpSource(world.crm_dir) as source:
        world.settings["crm"]["source"] = source.template
        world.write_config()
        luigi.configuration.get_config().set("crm", "source", source.template)
        Register.clear_instance_cache()
        yield source


def test_kill_minus_nine_at_many_points_then_a_plain_rerun_repairs_the_day(
    world: PipelineWorld, http_crm: CrmHttpSource, tmp_path: Path
) -> None:
    rng = random.Random(f"{SEED}-{world.warehouse.database_url.split(':')[0]}")
    days = [START + dt.timedelta(days=offset) for offset in range(KILL_POINTS + 1)]
    world.write_crm(days[0], days[-1])
    runner._gx()  # import Great Expectations once, before the forks (see the module docstring)
    logs = tmp_path / "logs"
    logs.mkdir()

    # Clean runs of the first day measure how long a run takes (the range of the random delays).
    clean = run_forked(world, KillPoint("").argv(days[0]), logs / "clean.log")
    assert clean.returncode == 0, clean.tail()
    with_report = run_forked(world, KillPoint("", report=True).argv(days[0]), logs / "clean-report.log")
    assert with_report.returncode == 0, with_report.tail()
    assert check_warehouse(world) == [days[0]]
    check_landings(world, finished=True)

    plan = kill_plan(rng, KILL_POINTS, clean.seconds, clean.seconds + with_report.seconds)
    order = days[1:]
    rng.shuffle(order)  # out of order: a merge also recomputes the loaded days after it
    loaded = [days[0]]
    report = [f"seed {SEED}, clean run {clean.seconds:.2f}s, the report {with_report.seconds:.2f}s"]
    for index, (day, kill) in enumerate(zip(order, plan, strict=True)):
        context = f"#{index} {day} {kill} (PIPELINE_KILL_SEED={SEED})"
        argv = kill.argv(day)
        log = logs / f"{index:02d}-{day}.log"
        if kill.kind == "point":
            killed = run_forked(world, argv, log, kill_at=kill.point)
            assert killed.killed, (
                f"{context}: the point was never reached ({killed.returncode})\n{killed.tail()}"
            )
        elif kill.kind == "crm-download":
            http_crm.stall_next()
            killed = run_forked(world, argv, log, kill_when=http_crm.stalled)
            http_crm.release.set()
            assert killed.killed, f"{context}: {killed.returncode}\n{killed.tail()}"
            partial = list((world.data_dir / f"raw/crm/date={day}").glob(".*.part"))
            assert partial, f"{context}: the download should have left its temporary file"
        else:
            killed = run_forked(world, argv, log, kill_after=kill.delay)
        report.append(f"{context}: exit {killed.returncode} after {killed.seconds:.2f}s")
        if killed.killed and kill.report:
            deadline = time.monotonic() + 10
            while kernels_of(killed.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert kernels_of(killed.pid) == [], f"{context}: the notebook kernel outlived its run"

        check_landings(world, finished=False)
        after_kill = check_warehouse(world)
        assert set(after_kill) <= {*loaded, day}, context

        rerun = run_forked(world, argv, logs / f"{index:02d}-{day}-rerun.log")
        assert rerun.returncode == 0, f"{context}: the re-run failed\n{rerun.tail()}"
        loaded.append(day)
        assert check_warehouse(world) == sorted(loaded), context
        check_landings(world, finished=True)
        assert (RunDaily if kill.report else MergeDay)(date=day).complete(), context
        report.append(f"{context}: re-run {rerun.seconds:.2f}s")
    print("\n".join(report))


def test_kill_the_luigi_command_line_during_a_run_then_rerun(world: PipelineWorld) -> None:
    """The real `luigi --module pipeline` executable, killed by SIGKILL mid-merge and after a random delay."""
    rng = random.Random(SEED)
    days = [START, START + dt.timedelta(days=1)]
    world.write_crm(days[0], days[-1])
    luigi_cli = Path(sys.executable).with_name("luigi")
    for day, env in (
        (days[0], {ENV_VAR: "merge:populated"}),
        (days[1], {ENV_VAR: f"progress:FetchProductUsage:{rng.randint(1, 2)}"}),
    ):
        process = subprocess.run(
            [str(luigi_cli), "--module", "pipeline", "RunDaily", "--date", day.isoformat()],
            cwd=world.root,
            env={**world.cli_env(), **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
        check_landings(world, finished=False)
        check_warehouse(world)
        result = world.run_cli("RunDaily", "--date", day.isoformat())
        assert result.returncode == 0, result.stderr[-3000:]
    assert check_warehouse(world) == days
    check_landings(world, finished=True)
