"""`make demo` keeps to its own folder: a production run with default paths never sees demo data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_writes_only_under_its_own_folder_and_loads_every_day(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "luigi.cfg", tmp_path / "luigi.cfg")  # what `make demo` reads from its cwd
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LUIGI_", "PIPELINE_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--days", "3", "--companies", "40"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "days loaded     3" in result.stdout
    # Nothing but var/demo/: not the default warehouse (var/warehouse.db), data_dir (var/data) or CRM path.
    assert sorted(path.name for path in (tmp_path / "var").iterdir()) == ["demo"]
    demo = tmp_path / "var" / "demo"
    assert {"crm", "data", "log", "demo.cfg", "warehouse.db"} <= {path.name for path in demo.iterdir()}
    engine = sa.create_engine(f"sqlite:///{demo / 'warehouse.analytics.db'}")
    with engine.connect() as connection:
        days = connection.exec_driver_sql("SELECT COUNT(*) FROM loaded_days").scalar()
    engine.dispose()
    assert days == 3


def test_on_a_mysql_server_the_demo_uses_databases_of_its_own() -> None:
    from devtools.demo import demo_warehouse

    assert demo_warehouse("mysql://root@127.0.0.1:3306/company_activity") == {
        "database_url": "mysql://root@127.0.0.1:3306",
        "stg_schema": "company_activity_stg",
        "analytics_schema": "company_activity_analytics",
    }
    assert demo_warehouse("mariadb://root@db/")["stg_schema"] == "demo_stg"
    assert demo_warehouse("sqlite:///var/demo/warehouse.db") == {
        "database_url": "sqlite:///var/demo/warehouse.db",
        "stg_schema": "stg",
        "analytics_schema": "analytics",
    }
