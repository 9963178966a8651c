"""`make demo`: two weeks of generated CRM files and the simulated API, backfilled through Luigi into SQLite.

Runs the same command line an operator types (``luigi --module pipeline RangeDaily --of RunDaily``), with
the project's ``luigi.cfg`` plus a config file of its own (``var/demo/demo.cfg``, named by
``LUIGI_CONFIG_PATH``) that puts everything it writes under ``var/demo/``: the generated CRM files, the
warehouse, the raw landings, validation results, reports and logs. The default paths of ``luigi.cfg``
(``var/warehouse.db``, ``var/data``) are never touched, so a production run with default settings
cannot pick up demo data. Only the API credentials are made up here, for the simulator, and passed
through the environment like real ones.

``--database-url`` (``make demo DATABASE_URL=...``) runs it against another warehouse. On MySQL / MariaDB
the schemas are databases of the whole server, so the demo names them after the URL's database:
``mysql://root@127.0.0.1:3306/company_activity`` loads ``company_activity_stg`` and
``company_activity_analytics`` (``demo_stg`` / ``demo_analytics`` without one), never ``stg`` and
``analytics`` themselves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import luigi.configuration
import sqlalchemy as sa

from devtools.sample_data import write_crm_snapshots
from devtools.simulator import SimulatorConfig, serve
from pipeline.clock import yesterday_utc
from pipeline.config import PipelineConfig
from pipeline.warehouse.engine import WarehouseSettings, create_engine
from pipeline.warehouse.sql import run_sql

DEMO_DIR = Path("var/demo")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--days", type=int, default=14, help="days to backfill, ending yesterday (UTC)")
    parser.add_argument("--companies", type=int, default=500, help="companies in the generated CRM")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--workers", type=int, default=None, help="Luigi workers (default: luigi.cfg's [core] workers)"
    )
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help="where the demo writes (default var/demo)")
    parser.add_argument(
        "--database-url", default="", help="the warehouse (default: sqlite:///<dir>/warehouse.db)"
    )
    return parser.parse_args(argv)


def demo_warehouse(database_url: str) -> dict[str, str]:
    """The demo's ``[pipeline]`` warehouse keys: on a MySQL server databases of its own, named after the
    URL's database (which the pipeline does not use there: its tables are in two databases); elsewhere the
    URL as given and the default schema names."""
    url = sa.make_url(database_url)
    if url.get_backend_name() not in ("mysql", "mariadb"):
        return {"database_url": database_url, "stg_schema": "stg", "analytics_schema": "analytics"}
    prefix = (url.database or "demo").lower()
    return {
        # URL.set() cannot clear a field; URL is a NamedTuple.
        "database_url": url._replace(database=None).render_as_string(hide_password=False),
        "stg_schema": f"{prefix}_stg",
        "analytics_schema": f"{prefix}_analytics",
    }


def write_demo_config(directory: Path, database_url: str, api_base_url: str) -> Path:
    """The demo's own configuration: every path under ``directory``, the simulator's URL."""
    warehouse = demo_warehouse(database_url)
    config = f"""# Written by `make demo` (devtools/demo.py): read after luigi.cfg through LUIGI_CONFIG_PATH.
[pipeline]
database_url = {warehouse["database_url"]}
stg_schema = {warehouse["stg_schema"]}
analytics_schema = {warehouse["analytics_schema"]}
data_dir = {directory / "data"}
log_dir = {directory / "log"}

[crm]
source = {directory / "crm"}/crm_{{date}}.csv

[product_api]
base_url = {api_base_url}
"""
    path = directory / "demo.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    last = yesterday_utc()
    first = last - dt.timedelta(days=args.days - 1)
    directory = args.dir
    database_url = args.database_url or f"sqlite:///{directory / 'warehouse.db'}"
    crm_dir = directory / "crm"
    print(f"demo: generating CRM snapshots {first} .. {last} for {args.companies} companies in {crm_dir}")
    write_crm_snapshots(crm_dir, first, last, args.companies, args.seed, template="crm_{date}.csv")

    client_id, client_secret = "demo-client", secrets.token_urlsafe(24)
    simulator = SimulatorConfig(
        client_id=client_id, client_secret=client_secret, companies=args.companies, seed=args.seed
    )
    with serve(simulator, port=0) as api:
        print(f"demo: simulated product-usage API listening on {api.base_url}")
        config_path = write_demo_config(directory, database_url, api.base_url)
        luigi.configuration.add_config_path(str(config_path))
        env = dict(
            os.environ,
            LUIGI_CONFIG_PATH=str(config_path),
            PRODUCT_API_CLIENT_ID=client_id,
            PRODUCT_API_CLIENT_SECRET=client_secret,
        )
        command = [
            shutil.which("luigi", path=str(Path(sys.executable).parent)) or "luigi",
            "--module",
            "pipeline",
            "RangeDaily",
            "--of",
            "RunDaily",
            "--start",
            first.isoformat(),
            "--stop",
            (last + dt.timedelta(days=1)).isoformat(),
            *(("--workers", str(args.workers)) if args.workers else ()),
        ]
        print("demo: luigi " + " ".join(command[1:]))
        code = subprocess.call(command, env=env)
    print("demo: simulated API stopped")
    if code != 0:
        print(f"demo: the backfill failed (exit code {code}); see the log above", file=sys.stderr)
        return code
    print_summary(first, last, config_path)
    return 0


def print_summary(first: dt.date, last: dt.date, config_path: Path) -> None:
    config = PipelineConfig()
    engine = create_engine(WarehouseSettings(**config.warehouse_settings()))
    with engine.connect() as connection:
        loaded = run_sql(
            connection, "marts/select_loaded_days_summary", first_date=first, last_date=last
        ).all()
        at_risk = run_sql(connection, "marts/select_churn_risk_count", activity_date=last).scalar()
    print()
    print("demo summary")
    print(f"  days loaded     {len(loaded)} ({first} .. {last})")
    print(f"  rows            {sum(day.output_rows for day in loaded)}")
    print(f"  churn risk      {at_risk} companies on {last}")
    orphans = loaded[-1].orphan_rows if loaded else 0
    print(f"  orphans         {orphans} usage rows without a CRM company on {last}")
    print(f"  database        {engine.url.render_as_string(hide_password=True)}")
    print(f"  schemas         {config.stg_schema}, {config.analytics_schema}")
    print(f"  raw landings    {config.data_path / 'raw'}")
    print(f"  configuration   luigi.cfg, then {config_path} (LUIGI_CONFIG_PATH)")
    reports = sorted(config.data_path.glob("reports/date=*/*.html"))
    if reports:
        print(f"  latest report   {reports[-1]}")


if __name__ == "__main__":
    luigi.configuration.get_config()  # luigi.cfg of the working directory, as for the luigi command
    sys.exit(main())
