"""The central scheduler: `make scheduler`'s luigid, a `RunDaily` run through it, its JSON API and visualiser.

luigid is started from the command line `make scheduler` runs (on a free port, state and logs in a temp
folder), and `luigi --module pipeline RunDaily` runs as a subprocess that finds it through `[core]`. The
run is checked through luigid's JSON API and by loading the visualiser in headless Chromium (Debian's
`chromium`; skipped with the reason when it is missing, a failure in CI). One backend (SQLite) is
enough here: what luigid sees does not depend on the warehouse.

Set PIPELINE_UPDATE_SCREENSHOT=1 to also refresh docs/luigid_visualiser.png from the graph view.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import luigi
import luigi.configuration
import pytest
from conftest import (
    IN_CI,
    PROJECT_ROOT,
    WORLD_COMPANIES,
    WORLD_SEED,
    PipelineWorld,
    luigi_settings,
    table_rows,
)
from luigi.task import flatten

from devtools.sample_data import CompanyUniverse
from pipeline import RunDaily
from pipeline.orchestration import scheduler
from pipeline.warehouse.engine import WarehouseSettings

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 10, 5)
# The tasks that report progress to luigid (status message and percentage).
LONG_TASKS = ("FetchCrmSnapshot", "FetchProductUsage", "StageCrm", "StageProductUsage", "MergeDay")
SCREENSHOT = PROJECT_ROOT / "docs" / "luigid_visualiser.png"
VENV = Path(sys.executable).parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_scheduler_commands(port: int) -> list[list[str]]:
    """The commands `make scheduler` runs (its venv prerequisite taken as built), as argument lists."""
    if shutil.which("make") is None:
        if IN_CI:
            pytest.fail("CI=true and `make` is not installed: the luigid tests must not be skipped in CI")
        pytest.skip("`make` is not installed: cannot read the `make scheduler` command line")
    stamp = VENV / ".installed"
    listing = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-o",
            str(stamp),
            "scheduler",
            f"VENV={VENV}",
            f"LUIGID_PORT={port}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line) for line in listing.replace("\\\n", " ").splitlines() if line.strip()]


@dataclass
class Luigid:
    port: int
    root: Path
    process: subprocess.Popen

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, **data: object):
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        with urllib.request.urlopen(f"{self.base_url}/api/{method}?{query}", timeout=10) as response:
            return json.load(response)["response"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # luigid saves its state on SIGTERM
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_luigid(root: Path) -> Iterator[Luigid]:
    """luigid as `make scheduler` starts it, run in ``root`` (so var/luigid/ is under it)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    *preparations, command = make_scheduler_commands(port)
    # env LUIGI_CONFIG_PATH=<project>/luigid.cfg <venv>/bin/python -m pipeline luigid <luigid's options>
    assert command[:2] == ["env", f"LUIGI_CONFIG_PATH={PROJECT_ROOT / 'luigid.cfg'}"], command
    assert command[3:6] == ["-m", "pipeline", "luigid"], command
    if not Path(command[2]).exists() and not IN_CI:
        pytest.skip(f"{command[2]} is missing: run the tests with the project's venv (make test)")
    for preparation in preparations:
        subprocess.run(preparation, cwd=root, check=True)
    env = {key: value for key, value in os.environ.items() if key != "LUIGI_CONFIG_PATH"}
    output = (root / "luigid.out").open("wb")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT)
    luigid = Luigid(port, root, process)
    try:
        deadline = time.monotonic() + 30
        while not scheduler.luigid_is_listening("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"luigid did not start: {(root / 'luigid.out').read_text()[-2000:]}")
            time.sleep(0.1)
        yield luigid
    finally:
        luigid.stop()
        output.close()


def project_core_settings(port: int) -> dict[str, str]:
    """The project luigi.cfg's ``[core]``, with the scheduler host and port it names pointed at ``port``."""
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / "luigi.cfg")
    core = dict(parser["core"])
    hosts = [key for key in core if key.replace("-", "_").endswith("scheduler_host")]
    ports = [key for key in core if key.replace("-", "_").endswith("scheduler_port")]
    assert hosts and ports, f"luigi.cfg [core] names no scheduler host and port: {core}"
    core.update(dict.fromkeys(hosts, "127.0.0.1"), **dict.fromkeys(ports, str(port)))
    core["no_lock"] = "true"
    return core


def task_graph(task: luigi.Task) -> dict[str, luigi.Task]:
    """Every task ``task`` depends on, and itself, by task id."""
    graph = {task.task_id: task}
    for dependency in flatten(task.deps()):
        graph.update(task_graph(dependency))
    return graph


@dataclass
class ScheduledRun:
    world: PipelineWorld
    luigid: Luigid
    result: subprocess.CompletedProcess
    seconds: float
    root_id: str
    # The graph of RunDaily(DAY) by task id, built from deps() in this process.
    expected: dict[str, luigi.Task]

    def day_task_ids(self) -> dict[str, str]:
        """Task id by family, for the tasks of DAY in the graph."""
        return {
            task.get_task_family(): task_id
            for task_id, task in self.expected.items()
            if getattr(task, "date", None) == DAY
        }


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory: pytest.TempPathFactory, usage_api) -> Iterator[ScheduledRun]:
    """`RunDaily --date DAY` run once through a luigid that stays up for the tests of this module."""
    root = tmp_path_factory.mktemp("scheduled")
    (root / "world").mkdir()
    world = PipelineWorld(
        root / "world", WarehouseSettings(f"sqlite:///{root / 'warehouse.db'}"), usage_api.base_url
    )
    world.write_crm(DAY, DAY)
    with running_luigid(root / "luigid") as luigid:
        # The run finds luigid as a user's run does: no local_scheduler, no --local-scheduler.
        world.settings["core"] = project_core_settings(luigid.port)
        world.settings["report"] = {"enabled": "true"}  # the whole graph, the report included
        world.write_config()
        with luigi_settings(world.settings):
            run_daily = RunDaily(date=DAY)
            expected = task_graph(run_daily)
        started = time.monotonic()
        result = world.run_cli("RunDaily", "--date", DAY.isoformat())
        yield ScheduledRun(world, luigid, result, time.monotonic() - started, run_daily.task_id, expected)


def test_run_daily_without_local_scheduler_uses_luigid(scheduled_run: ScheduledRun) -> None:
    result, port = scheduled_run.result, scheduled_run.luigid.port

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"scheduler: luigid at 127.0.0.1:{port}" in result.stderr
    assert "local scheduler" not in result.stderr
    assert any(row[0] == DAY.isoformat() for row in table_rows(scheduled_run.world.engine))


def test_every_task_of_the_graph_is_done_in_luigid(scheduled_run: ScheduledRun) -> None:
    luigid, expected = scheduled_run.luigid, scheduled_run.expected
    assert {task.get_task_family() for task in expected.values()} >= {
        "FetchCrmSnapshot",
        "FetchProductUsage",
        "StageCrm",
        "StageProductUsage",
        "ValidateCrm",
        "ValidateProductUsage",
        "MergeDay",
        "RenderReport",
        "SendReport",
        "RunDaily",
    }

    done = luigid.api("task_list", status="DONE")
    assert set(expected) <= set(done), set(expected) - set(done)
    for task_id, task in expected.items():
        assert done[task_id]["name"] == task.get_task_family()
    for status in ("PENDING", "RUNNING", "FAILED", "DISABLED"):
        assert luigid.api("task_list", status=status) == {}, status

    graph = luigid.api("dep_graph", task_id=scheduled_run.root_id)
    assert set(expected) <= set(graph), set(expected) - set(graph)
    assert {task_id: task["status"] for task_id, task in graph.items() if task["status"] != "DONE"} == {}
    for task_id, task in expected.items():
        assert {dep.task_id for dep in flatten(task.deps())} <= set(graph[task_id]["deps"]), task_id


def test_progress_of_long_tasks_is_visible_in_luigid(scheduled_run: ScheduledRun) -> None:
    luigid = scheduled_run.luigid
    done = luigid.api("task_list", status="DONE")
    by_family = {family: (task_id, done[task_id]) for family, task_id in scheduled_run.day_task_ids().items()}
    universe = CompanyUniverse(WORLD_COMPANIES, WORLD_SEED)
    crm_rows, usage_rows = len(universe.crm_rows(DAY)), len(universe.usage_rows(DAY))
    merged_rows = sum(1 for row in table_rows(scheduled_run.world.engine) if row[0] == DAY.isoformat())
    expected_messages: dict[str, str] = {
        "FetchCrmSnapshot": r"landed the CRM snapshot: \d+ bytes from .*crm_2026-10-05\.csv",
        "FetchProductUsage": rf"landed \d+ pages, {usage_rows} rows",
        "StageCrm": rf"staged {crm_rows} CRM rows \(read by the columnar reader\)",
        "StageProductUsage": rf"staged {usage_rows} usage rows",
        "MergeDay": rf"merged {merged_rows} rows",
    }

    assert set(expected_messages) == set(LONG_TASKS)
    for family, pattern in expected_messages.items():
        task_id, task = by_family[family]
        assert re.fullmatch(pattern, task["status_message"] or ""), (family, task["status_message"])
        assert task["progress_percentage"] == 100, family
        # The same through the calls the visualiser's task view makes.
        message = luigid.api("get_task_status_message", task_id=task_id)
        assert message == {"taskId": task_id, "statusMessage": task["status_message"]}
        progress = luigid.api("get_task_progress_percentage", task_id=task_id)
        assert progress == {"taskId": task_id, "progressPercentage": 100}


# -- the visualiser in headless Chromium ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    reason = "headless Chromium is not installed (Debian: apt-get install chromium)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: the visualiser test must not be skipped in CI", pytrace=False)
    pytest.skip(reason)


def chromium_command(chromium: str, profile: Path, url: str, *output: str) -> list[str]:
    """Headless Chromium loading ``url``; luigid serves all of the visualiser's JS and CSS itself."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",  # the tests may run as root
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",  # never share a profile with another Chromium
        # Offline, as in CI: every host but luigid's fails to resolve (AdminLTE's CSS imports a web font
        # from fonts.googleapis.com; the page must not need it).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=10000",  # let the page's API calls and rendering finish
        *output,
        url,
    ]


def visualiser_url(luigid: Luigid, fragment: dict[str, str]) -> str:
    return f"{luigid.base_url}{scheduler.VISUALISER_PATH}#{urllib.parse.urlencode(fragment)}"


def render(chromium: str, profile: Path, url: str, *output: str) -> str:
    result = subprocess.run(
        chromium_command(chromium, profile, url, *output), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


D3_NODE = re.compile(
    r'<div class="taskNode" data-task-id="([^"]+)"><span class="status"></span>'
    r'<span class="name">([^<]+)</span><span class="queue"><span class="counter">([A-Z_]+)</span>'
)


def test_visualiser_graph_shows_every_task_of_the_run_done(
    chromium: str, scheduled_run: ScheduledRun, tmp_path: Path
) -> None:
    """The D3 dependency graph (the README's screenshot): one node per task, with its family and status."""
    graph_view = visualiser_url(
        scheduled_run.luigid, {"tab": "graph", "taskId": scheduled_run.root_id, "visType": "d3"}
    )

    dom = render(chromium, tmp_path / "profile", graph_view, "--dump-dom")

    nodes = {task_id: (family, status) for task_id, family, status in D3_NODE.findall(dom)}
    expected = {task_id: (task.get_task_family(), "DONE") for task_id, task in scheduled_run.expected.items()}
    assert nodes == expected, dom[-3000:]
    title = re.search(r'<h4 id="dependencyTitle">([^<]*)</h4>', dom)
    assert title and re.fullmatch(rf"RunDaily\(.*date={DAY.isoformat()}.*\)", title.group(1)), dom[-3000:]

    screenshot = tmp_path / "visualiser.png"
    render(chromium, tmp_path / "profile", graph_view, f"--screenshot={screenshot}", "--window-size=1600,800")
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if os.environ.get("PIPELINE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)


def test_visualiser_default_graph_view_and_task_list_name_every_task(
    chromium: str, scheduled_run: ScheduledRun, tmp_path: Path
) -> None:
    luigid = scheduled_run.luigid
    families = {task.get_task_family() for task in scheduled_run.expected.values()}

    graph_view = visualiser_url(luigid, {"tab": "graph", "taskId": scheduled_run.root_id})
    graph_dom = render(chromium, tmp_path / "profile", graph_view, "--dump-dom")
    # graph.js (the default SVG view) draws one <text> with the family name per task node.
    node_names = set(re.findall(r"<text[^>]*>([A-Za-z]+)</text>", graph_dom))
    assert families <= node_names, (families - node_names, graph_dom[-3000:])

    task_list = visualiser_url(luigid, {"tab": "tasks", "length": "100"})
    list_dom = render(chromium, tmp_path / "profile", task_list, "--dump-dom")
    sidebar = set(re.findall(r'<li data-task="([^"]+)"', list_dom))
    assert families <= sidebar, (families - sidebar, list_dom[-3000:])
    # A task with a status message or progress gets the button that opens them, in its row.
    with_messages = set(
        re.findall(r'statusMessage" title="Status message" [^>]*data-task-id="(\w+)"', list_dom)
    )
    long_tasks = {scheduled_run.day_task_ids()[family] for family in LONG_TASKS}
    assert long_tasks <= with_messages, (long_tasks - with_messages, list_dom[-3000:])


# -- finding the scheduler, and the local one ----------------------------------------------------------


def test_make_scheduler_keeps_state_logs_and_history_under_var_luigid(tmp_path: Path) -> None:
    with running_luigid(tmp_path) as luigid:
        assert luigid.api("task_list", status="DONE") == {}
        with urllib.request.urlopen(f"{luigid.base_url}{scheduler.VISUALISER_PATH}", timeout=10) as page:
            assert b"Luigi Task Status" in page.read()
        with urllib.request.urlopen(f"{luigid.base_url}/history", timeout=10) as page:
            assert b"Luigi Task History" in page.read()
        luigid.stop()
        assert luigid.process.returncode == 0

    assert (tmp_path / "var/luigid/state.pickle").is_file()
    assert "Scheduler starting up" in (tmp_path / "var/luigid/log/luigi-server.log").read_text()
    assert (tmp_path / "var/luigid/task-history.db").is_file()


def test_the_task_history_keeps_every_task_of_the_run(scheduled_run: ScheduledRun) -> None:
    history = scheduled_run.luigid.root / "var/luigid/task-history.db"
    with sqlite3.connect(history) as connection:
        recorded = connection.execute(
            "SELECT tasks.task_id, task_events.event_name FROM tasks JOIN task_events "
            "ON task_events.task_id = tasks.id"
        ).fetchall()
    events: dict[str, set[str]] = {}
    for task_id, event in recorded:
        events.setdefault(task_id, set()).add(event)
    assert set(scheduled_run.expected) <= set(events), set(scheduled_run.expected) - set(events)
    for task_id in scheduled_run.expected:
        assert {"PENDING", "RUNNING", "DONE"} <= events[task_id], (task_id, events[task_id])


def history_rows(dom: str) -> list[tuple[str, str, str, dict[str, str]]]:
    """(record id, task family, last status, parameters) per row of luigid's Task History table."""
    from bs4 import BeautifulSoup

    table = BeautifulSoup(dom, "html.parser").find("h2", string="Luigi Task History").find_next("table")
    rows = []
    for row in table.find("tbody").find_all("tr", recursive=False):
        name, _host, _last, status, parameters = row.find_all("td", recursive=False)
        link = name.find("a")
        values = dict(
            tuple(cell.get_text() for cell in pair.find_all("td")) for pair in parameters.find_all("tr")
        )
        rows.append((link["href"].rsplit("/", 1)[-1], link.get_text(), status.get_text(), values))
    return rows


def test_the_history_page_lists_the_days_tasks_in_chromium(
    chromium: str, scheduled_run: ScheduledRun, tmp_path: Path
) -> None:
    """luigid's /history (its Task History page), rendered in headless Chromium: the day's tasks, done."""
    dom = render(chromium, tmp_path / "profile", f"{scheduled_run.luigid.base_url}/history", "--dump-dom")

    assert "Luigi Task History" in dom
    rows = history_rows(dom)
    day_rows = {name: status for _id, name, status, parameters in rows if parameters.get("date") == str(DAY)}
    families = {task.get_task_family() for task in scheduled_run.expected.values()}
    assert families <= set(day_rows), (families - set(day_rows), dom[-3000:])
    assert {day_rows[family] for family in families} == {"DONE"}
    # each row links to that run's page, which luigid serves
    merge_id = next(record for record, name, _status, parameters in rows if name == "MergeDay")
    with urllib.request.urlopen(
        f"{scheduled_run.luigid.base_url}/history/by_id/{merge_id}", timeout=10
    ) as page:
        assert b"MergeDay" in page.read()


def test_local_scheduler_flag_bypasses_a_running_luigid(scheduled_run: ScheduledRun) -> None:
    world, luigid = scheduled_run.world, scheduled_run.luigid
    other_day = DAY + dt.timedelta(days=1)
    world.write_crm(other_day, other_day)

    result = world.run_cli("RunDaily", "--date", other_day.isoformat(), "--local-scheduler")

    assert result.returncode == 0, result.stderr[-3000:]
    # An explicit choice: no probe, no scheduler line, and luigid never hears of the run.
    assert "scheduler: luigid at" not in result.stderr
    assert "scheduler: no luigid" not in result.stderr
    assert any(row[0] == other_day.isoformat() for row in table_rows(world.engine))
    with luigi_settings(world.settings):
        other_id = RunDaily(date=other_day).task_id
    assert luigid.api("dep_graph", task_id=other_id) == {}


def test_a_run_falls_back_to_the_local_scheduler_when_no_luigid_listens(tmp_path: Path, usage_api) -> None:
    world = PipelineWorld(
        tmp_path, WarehouseSettings(f"sqlite:///{tmp_path / 'warehouse.db'}"), usage_api.base_url
    )
    world.write_crm(DAY, DAY)
    dead_port = free_port()
    world.settings["core"] = project_core_settings(dead_port)
    world.write_config()

    result = world.run_cli("RunDaily", "--date", DAY.isoformat())

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"no luigid listening on 127.0.0.1:{dead_port}" in result.stderr
    assert "uses the local scheduler" in result.stderr
    assert any(row[0] == DAY.isoformat() for row in table_rows(world.engine))


LEGACY = {"default_scheduler_host": "127.0.0.1", "default_scheduler_port": "8082"}


@pytest.mark.parametrize(
    ("core", "argv", "expected"),
    [
        (LEGACY, [], ("127.0.0.1", 8082)),
        ({**LEGACY, "scheduler_host": "10.0.0.4", "scheduler_port": "9000"}, [], ("10.0.0.4", 9000)),
        ({**LEGACY, "scheduler_url": "http://10.0.0.3:9001/"}, [], ("10.0.0.3", 9001)),
        (LEGACY, ["RunDaily", "--scheduler-port", "9100"], ("127.0.0.1", 9100)),
        (
            LEGACY,
            ["RunDaily", "--scheduler-host=10.0.0.5", "--core-scheduler-port", "9101"],
            ("10.0.0.5", 9101),
        ),
        (LEGACY, ["RunDaily", "--scheduler-url", "https://luigid.example:8443/"], ("luigid.example", 8443)),
        (LEGACY, ["RunDaily", "--scheduler-url", "https://luigid.example/"], ("luigid.example", 443)),
    ],
)
def test_the_probe_checks_the_scheduler_the_run_will_use(
    core: dict[str, str], argv: list[str], expected: tuple[str, int]
) -> None:
    config = luigi.configuration.get_config()
    with luigi_settings({"core": core}):
        for option in {"scheduler_host", "scheduler_port", "scheduler_url"} - set(core):
            config.remove_option("core", option)
        assert scheduler.scheduler_address(argv) == expected


def test_the_fallback_respects_an_explicit_choice_and_a_listening_luigid() -> None:
    dead = str(free_port())
    with luigi_settings({"core": {"scheduler_host": "127.0.0.1", "scheduler_port": dead}}):
        config = luigi.configuration.get_config()
        config.remove_option("core", "local_scheduler")
        try:
            assert not scheduler.fall_back_to_local_scheduler_when_luigid_is_down(["--local-scheduler"])
            assert not config.has_option("core", "local_scheduler")
            with socket.socket() as listening:
                listening.bind(("127.0.0.1", 0))
                listening.listen()
                port = str(listening.getsockname()[1])
                assert not scheduler.fall_back_to_local_scheduler_when_luigid_is_down(
                    ["--scheduler-port", port]
                )
            assert not config.has_option("core", "local_scheduler")
            assert scheduler.fall_back_to_local_scheduler_when_luigid_is_down([])
            assert config.get("core", "local_scheduler") == "true"
        finally:
            config.remove_option("core", "local_scheduler")
