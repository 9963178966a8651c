"""`make demo`: two weeks of generated CRM files and the simulated API, backfilled through Luigi into SQLite.

Runs the same command line an operator types (``luigi --module pipeline RangeDaily --of RunDaily``), with
the project's ``luigi.cfg``; only the API credentials are made up here, for the simulator, and passed
through the environment like real ones.
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

from pipeline.config import CrmConfig, PipelineConfig, ProductApiConfig
from pipeline.sample_data import write_crm_snapshots
from pipeline.simulator import SimulatorConfig, serve
from pipeline.tasks import yesterday_utc
from pipeline.warehouse import create_engine, run_sql


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__)
    parser.add_argument("--days", type=int, default=14, help="days to backfill, ending yesterday (UTC)")
    parser.add_argument("--companies", type=int, default=500, help="companies in the generated CRM")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    last = yesterday_utc()
    first = last - dt.timedelta(days=args.days - 1)
    crm_template = CrmConfig().source
    crm_dir = Path(crm_template).parent
    print(f"demo: generating CRM snapshots {first} .. {last} for {args.companies} companies in {crm_dir}")
    write_crm_snapshots(crm_dir, first, last, args.companies, args.seed, template=Path(crm_template).name)

    client_id, client_secret = "demo-client", secrets.token_urlsafe(24)
    port = int(ProductApiConfig().base_url.rsplit(":", 1)[-1].split("/")[0])
    simulator = SimulatorConfig(
        client_id=client_id, client_secret=client_secret, companies=args.companies, seed=args.seed
    )
    with serve(simulator, port=port) as api:
        print(f"demo: simulated product-usage API listening on {api.base_url}")
        env = dict(os.environ, PRODUCT_API_CLIENT_ID=client_id, PRODUCT_API_CLIENT_SECRET=client_secret)
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
            "--workers",
            str(args.workers),
        ]
        print("demo: luigi " + " ".join(command[1:]))
        code = subprocess.call(command, env=env)
    print("demo: simulated API stopped")
    if code != 0:
        print(f"demo: the backfill failed (exit code {code}); see the log above", file=sys.stderr)
        return code
    print_summary(first, last)
    return 0


def print_summary(first: dt.date, last: dt.date) -> None:
    config = PipelineConfig()
    engine = create_engine(config.database_url)
    with engine.connect() as connection:
        loaded = run_sql(connection, "select_loaded_days_summary", first_date=first, last_date=last).all()
        at_risk = run_sql(connection, "select_churn_risk_count", activity_date=last).scalar()
    print()
    print("demo summary")
    print(f"  days loaded     {len(loaded)} ({first} .. {last})")
    print(f"  rows            {sum(day.output_rows for day in loaded)}")
    print(f"  churn risk      {at_risk} companies on {last}")
    orphans = loaded[-1].orphan_rows if loaded else 0
    print(f"  orphans         {orphans} usage rows without a CRM company on {last}")
    print(f"  database        {engine.url.render_as_string(hide_password=True)}")
    print(f"  raw landings    {config.data_path / 'raw'}")
    reports = sorted(config.data_path.glob("reports/date=*/*.html"))
    if reports:
        print(f"  latest report   {reports[-1]}")


if __name__ == "__main__":
    luigi.configuration.get_config()  # luigi.cfg of the working directory, as for the luigi command
    sys.exit(main())
