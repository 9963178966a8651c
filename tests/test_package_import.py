"""Importing the package has no side effects: no socket, no file written, no configuration changed.

Every module of ``pipeline`` is imported in a fresh interpreter, with no luigid listening and the
working directory a fresh folder, under a Python audit hook that records what the imports do. The
``luigi`` command line's own process is the only place where a run is set up
(``pipeline.orchestration.run_start``), and that is tested with the command line elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import ast, importlib, json, pkgutil, sys
from pathlib import Path

# The libraries the package imports at module level are imported first, without the hook: what they do
# on import (Luigi reads its config files and the host name, urllib3 checks for IPv6) is theirs, not ours.
root = Path(sys.argv[1]) / "pipeline"
for source in root.rglob("*.py"):
    for node in ast.parse(source.read_text()).body:
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for name in names:
            if not name.startswith("pipeline") and name != "__future__":
                importlib.import_module(name)

events = []
WATCHED = ("socket.", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.chmod", "os.truncate",
           "shutil.", "subprocess.Popen", "os.system", "os.fork", "os.register_at_fork")

def hook(event, args):
    if event.startswith(WATCHED):
        events.append([event, repr(args)[:200]])
    elif event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        events.append([event, repr(args)[:200]])
    elif event == "open" and isinstance(args[0], str) and args[0].endswith(".cfg"):
        events.append(["read config", args[0]])

sys.addaudithook(hook)
import pipeline
names = ["pipeline"]
for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    importlib.import_module(info.name)
    names.append(info.name)

import luigi.configuration
from luigi.task_register import Register
config = luigi.configuration.get_config()
HEAVY = ("great_expectations", "pandas", "matplotlib", "numpy", "nbclient")
print(json.dumps({
    "modules": names,
    "events": events,
    "retcode_section": config.has_section("retcode"),
    "local_scheduler": config.has_option("core", "local_scheduler"),
    "heavy": sorted(m for m in HEAVY if m in sys.modules),
    "registered": sorted(n for n in Register.task_names() if n in ("RunDaily", "RangeDaily", "CatchUp")),
}))
"""


def test_importing_every_module_opens_no_socket_writes_nothing_and_changes_no_config(tmp_path: Path) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LUIGI_", "PIPELINE_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(PROJECT_ROOT)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 30  # every layer was imported, not just the package
    assert report["events"] == []
    assert report["retcode_section"] is False
    assert report["local_scheduler"] is False
    assert report["heavy"] == []  # Great Expectations, pandas, numpy and matplotlib load when used
    assert report["registered"] == ["CatchUp", "RangeDaily", "RunDaily"]
    assert list(workdir.iterdir()) == []
