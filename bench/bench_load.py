"""Loading one day of 100,000 companies: our stages against the databases' own bulk loaders.

For the same generated CRM file (and the same day's usage rows) this measures, on SQLite, PostgreSQL and
MariaDB: landing the file, parsing it, staging it (`stg.crm_daily`), staging the usage rows, and the merge
of the day; and as baselines in the same run, `psql \\copy` of the same CSV into a bare PostgreSQL table,
the `sqlite3` shell's `.import` of it into a bare SQLite table and the `mariadb` client's own
`LOAD DATA LOCAL INFILE` of it into a bare MariaDB table.

    .venv/bin/python bench/bench_load.py [--companies 100000] [--postgres-url postgresql://...]
        [--mysql-url mysql://root@127.0.0.1:3306/] [--backends sqlite postgresql mariadb]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from devtools.sample_data import CompanyUniverse, write_crm_csv
from pipeline.sources import crm_location, crm_snapshot
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import (
    WarehouseSettings,
    close_engine,
    create_engine,
    mysql_url,
    open_warehouse,
    postgres_url,
)

DAY = dt.date(2026, 11, 20)


def timed(label: str, results: dict[str, float], action: Callable[[], object]) -> object:
    started = time.perf_counter()
    value = action()
    results[label] = time.perf_counter() - started
    return value


def our_load(warehouse: WarehouseSettings, csv_path: Path, usage_rows: list, work: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    engine = open_warehouse(warehouse)
    data_dir = work / f"data-{uuid.uuid4().hex[:6]}"
    template = str(csv_path.parent / "crm_{date}.csv")
    timed("land CRM file", results, lambda: crm_location.land_snapshot(template, data_dir, DAY))
    staged = timed(
        "parse + stage CRM rows (chunk by chunk)",
        results,
        lambda: staging.stage_landed_crm(engine, DAY, data_dir),
    )
    results[f"(parse CRM file by the precise parser; the {staged.reader} reader above)"] = timed_value(
        lambda: crm_snapshot.read_landed_snapshot(data_dir, DAY)
    )
    timed(
        "stage usage rows",
        results,
        lambda: staging.stage_usage(engine, DAY, usage_rows, "bench", "bench"),
    )
    timed("merge the day", results, lambda: merge.merge_day(engine, DAY))
    results["re-merge the day (idempotent)"] = timed_value(lambda: merge.merge_day(engine, DAY))
    return results


def timed_value(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


BASELINE_TABLE = (
    "company_id VARCHAR(64), company_name VARCHAR(512), country VARCHAR(64), "
    "industry_tag VARCHAR(128), last_contact_at VARCHAR(64)"
)


def psql_copy(
    admin_url: str,
    database: str,
    csv_path: Path,
    *,
    table: str = "bench_copy",
    columns: str = BASELINE_TABLE,
) -> float:
    """Seconds of ``psql``'s ``\\copy`` of ``csv_path`` (with its header line) into a new bare ``table``."""
    url = sa.make_url(admin_url).set(database=database)
    target = (
        f"postgresql://{url.username or 'postgres'}@{url.host or '127.0.0.1'}:{url.port or 5432}/{database}"
    )
    subprocess.run(["psql", target, "-q", "-c", f"CREATE TABLE {table} ({columns})"], check=True)
    started = time.perf_counter()
    subprocess.run(
        ["psql", target, "-q", "-c", f"\\copy {table} FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"],
        check=True,
    )
    return time.perf_counter() - started


def sqlite_import(work: Path, csv_path: Path) -> float:
    database = work / "baseline.db"
    subprocess.run(["sqlite3", str(database), f"CREATE TABLE bench_import ({BASELINE_TABLE})"], check=True)
    started = time.perf_counter()
    subprocess.run(
        ["sqlite3", str(database), "-cmd", ".mode csv", f".import --skip 1 {csv_path} bench_import"],
        check=True,
    )
    return time.perf_counter() - started


def mariadb_load_data(admin_url: str, csv_path: Path) -> float:
    """The `mariadb` client's own LOAD DATA LOCAL INFILE of the CSV into a bare table (one transaction)."""
    url = sa.make_url(admin_url)
    database = f"bench_load_{uuid.uuid4().hex[:8]}"
    client = [
        "mariadb",
        "--local-infile=1",
        "-h",
        url.host or "127.0.0.1",
        "-P",
        str(url.port or 3306),
        "-u",
        url.username or "root",
        "--default-character-set=utf8mb4",
    ]
    subprocess.run(
        [*client, "-e", f"CREATE DATABASE {database}; CREATE TABLE {database}.bench_load ({BASELINE_TABLE})"],
        check=True,
    )
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                *client,
                database,
                "-e",
                "SET autocommit = 0; "
                f"LOAD DATA LOCAL INFILE '{csv_path}' INTO TABLE bench_load CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                "LINES TERMINATED BY '\\r\\n' IGNORE 1 LINES; COMMIT;",
            ],
            check=True,
        )
        return time.perf_counter() - started
    finally:
        subprocess.run([*client, "-e", f"DROP DATABASE {database}"], check=True)


BASELINES = {
    "SQLite": "baseline: sqlite3 .import of the CSV",
    "PostgreSQL": "baseline: psql \\copy of the CSV",
    "MariaDB": "baseline: mariadb client LOAD DATA LOCAL INFILE of the CSV",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument(
        "--crm-file",
        type=Path,
        help="load this CRM CSV instead of a generated one (usage rows still generated)",
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["sqlite", "postgresql", "mariadb"],
        choices=["sqlite", "postgresql", "mariadb"],
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        universe = CompanyUniverse(args.companies, seed=42)
        csv_path = work / "crm" / f"crm_{DAY.isoformat()}.csv"
        if args.crm_file:
            csv_path.parent.mkdir(parents=True)
            shutil.copyfile(args.crm_file, csv_path)
        else:
            write_crm_csv(universe, DAY, csv_path)
        usage = [(row["company_id"], row["active_users"], row["events"]) for row in universe.usage_rows(DAY)]
        crm_rows = sum(1 for _ in csv_path.open()) - 1
        print(
            f"{args.companies} companies: CRM file {csv_path.stat().st_size / 1e6:.1f} MB, {crm_rows} rows; "
            f"{len(usage)} usage rows"
        )

        results: dict[str, dict[str, float]] = {}
        if "sqlite" in args.backends:
            results["SQLite"] = our_load(
                WarehouseSettings(f"sqlite:///{work / 'warehouse.db'}"), csv_path, usage, work
            )
            results["SQLite"][BASELINES["SQLite"]] = sqlite_import(work, csv_path)

        if "postgresql" in args.backends:
            database = f"bench_load_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(postgres_url(args.postgres_url), isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
            pg_url = (
                sa.make_url(args.postgres_url).set(database=database).render_as_string(hide_password=False)
            )
            try:
                results["PostgreSQL"] = our_load(WarehouseSettings(pg_url), csv_path, usage, work)
                results["PostgreSQL"][BASELINES["PostgreSQL"]] = psql_copy(
                    args.postgres_url, database, csv_path
                )
            finally:
                create_engine(WarehouseSettings(pg_url)).dispose()
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                admin.dispose()

        if "mariadb" in args.backends:
            # A throwaway warehouse on the server: two databases named by the schema keys.
            prefix = f"bench_{uuid.uuid4().hex[:8]}"
            warehouse = WarehouseSettings(args.mysql_url, f"{prefix}_stg", f"{prefix}_analytics")
            try:
                results["MariaDB"] = our_load(warehouse, csv_path, usage, work)
                results["MariaDB"][BASELINES["MariaDB"]] = mariadb_load_data(args.mysql_url, csv_path)
            finally:
                close_engine(warehouse)
                admin = sa.create_engine(mysql_url(args.mysql_url))
                with admin.connect() as connection:
                    for database in (warehouse.stg_schema, warehouse.analytics_schema):
                        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
                admin.dispose()

        print()
        print(f"| step | {' | '.join(f'{backend} (s)' for backend in results)} |")
        print(f"|---|{'---:|' * len(results)}")
        steps = list(dict.fromkeys(step for backend in results.values() for step in backend))
        for step in steps:
            cells = [
                f"{results[backend][step]:.2f}" if step in results[backend] else "" for backend in results
            ]
            print(f"| {step} | {' | '.join(cells)} |")
        for backend in results:
            baseline = BASELINES[backend]
            ours = sum(
                results[backend][step] for step in ("land CRM file", "parse CRM file", "stage CRM rows")
            )
            print(
                f"{backend}: land + parse + stage CRM = {ours:.2f} s, "
                f"{ours / results[backend][baseline]:.1f}x the baseline's "
                f"{results[backend][baseline]:.2f} s; "
                f"{crm_rows / ours:,.0f} rows/s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
