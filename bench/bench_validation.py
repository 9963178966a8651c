"""Validation time against the staging load time of the same rows, 100,000 and 1,000,000 rows a dataset.

For each size and backend (SQLite, PostgreSQL) this stages one day exactly as the tasks do, then runs the
day's three gates the way the graph runs them, and times:

* CRM snapshot: parse the CSV + stage it (``StageCrm``) against ``validate_crm`` (``ValidateCrm``), split
  into reading the staged rows into pandas and the Great Expectations checks (plus saving the results);
* product usage: stage the rows (``StageProductUsage``) against ``validate_product_usage``;
* output: the merge alone against the output checks inside it (``MergeDay``'s ``before_commit``);
* for comparison, the CRM and usage suites on Great Expectations' SQL datasource (the checks run as SQL
  in the database instead of pandas), and the CRM checks with GE's per-batch data fingerprint left on.

    .venv/bin/python bench/bench_validation.py [--sizes 100000 1000000] [--postgres-url postgresql://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from devtools.sample_data import CompanyUniverse, write_crm_csv
from pipeline import datasets
from pipeline.quality import gates, runner
from pipeline.sources import crm_snapshot
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import (
    WarehouseSettings,
    create_engine,
    open_warehouse,
    postgres_url,
    sqlite_schema_path,
)

# Every company of the universe has signed up by then, so the snapshot has exactly N rows.
DAY = dt.date(2028, 1, 15)


def timed(results: dict[str, float], label: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = action()
    results[label] = time.perf_counter() - started
    return value


def usage_rows(count: int) -> list[tuple[str, int, int]]:
    """Exactly ``count`` usage rows for CRM companies (ids C0000001 ...), realistic counts."""
    rng = np.random.default_rng(7)
    users = rng.poisson(6.0, count)
    events = users * 25 + rng.poisson(4.0, count)
    width = 7 if count >= 900_000 else 6
    return [
        (f"C{number:0{width}d}", int(u), int(e))
        for number, u, e in zip(range(1, count + 1), users.tolist(), events.tolist(), strict=True)
    ]


def ge_sql_checks(warehouse: WarehouseSettings, dataset: str) -> float:
    """The same suite on GE's SQL datasource over the staged table: seconds for the checks."""
    _, context, _ = runner._gx()
    url = sa.make_url(warehouse.database_url)
    if url.get_backend_name() == "sqlite":
        stg_file = sqlite_schema_path(url.database or "", warehouse.stg_schema)
        connection_string, prefix = f"sqlite:///{stg_file}", ""
    else:
        connection_string = postgres_url(url).render_as_string(hide_password=False)
        prefix = f"{warehouse.stg_schema}."
    if dataset == datasets.CRM:
        query = (
            "SELECT company_id, company_name, country, industry_tag, last_contact_at, "
            f"CAST(NULL AS VARCHAR(64)) AS last_contact_at_unparseable FROM {prefix}crm_daily "
            f"WHERE snapshot_date = '{DAY.isoformat()}'"
        )
        parameters = {"min_row_count": 0, "last_contact_at_max": f"{DAY + dt.timedelta(days=2)}T00:00:00"}
    else:
        query = (
            f"SELECT company_id, active_users, events FROM {prefix}product_usage_daily "
            f"WHERE activity_date = '{DAY.isoformat()}'"
        )
        parameters = {"min_row_count": 0}
    name = f"bench_{uuid.uuid4().hex[:8]}"
    datasource = context.data_sources.add_sql(name=name, connection_string=connection_string)
    batch_definition = datasource.add_query_asset(name=dataset, query=query).add_batch_definition_whole_table(
        dataset
    )
    suite = runner.load_suite(dataset)
    started = time.perf_counter()
    result = batch_definition.get_batch().validate(
        suite,
        expectation_parameters=parameters,
        result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["company_id"]},
    )
    seconds = time.perf_counter() - started
    failed = [item.expectation_config.meta.get("check") for item in result.results if not item.success]
    if failed:
        print(f"    (GE SQL datasource, {dataset}: checks that did not pass there: {', '.join(failed)})")
    return seconds


def crm_checks_with_fingerprint(engine: sa.Engine, work: Path) -> float:
    """The CRM checks with GE's pandas batch fingerprint (an MD5 over every value) left on, as shipped."""
    import great_expectations.execution_engine.pandas_execution_engine as pandas_engine

    with engine.connect() as connection:
        frame = gates.crm_frame(connection, DAY)
    pandas_engine.HASH_THRESHOLD = 1e9  # GE's default
    try:
        started = time.perf_counter()
        runner.run_suite(
            datasets.CRM,
            DAY,
            frame,
            parameters={"last_contact_at_max": f"{DAY + dt.timedelta(days=2)}T00:00:00"},
            previous=None,
            max_row_drop=0.1,
            accept_row_drop=False,
            data_dir=work / "fingerprint",
        )
        return time.perf_counter() - started
    finally:
        pandas_engine.HASH_THRESHOLD = 0


def bench_backend(database_url: str, csv_path: Path, usage: list, work: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    warehouse = WarehouseSettings(database_url)
    engine = open_warehouse(warehouse)
    data_dir = work / f"data-{uuid.uuid4().hex[:6]}"

    snapshot = timed(results, "CRM: parse the CSV", lambda: crm_snapshot.parse_snapshot(csv_path))
    timed(results, "CRM: stage", lambda: staging.stage_crm(engine, DAY, snapshot, "bench"))
    with engine.connect() as connection:
        timed(results, "CRM: read staged rows into pandas", lambda: gates.crm_frame(connection, DAY))
    outcome = timed(
        results,
        "CRM: validate (ValidateCrm: read + checks + results)",
        lambda: gates.validate_crm(engine, DAY, data_dir, landing_id="bench"),
    )
    results["CRM: checks + results (in the validate)"] = outcome.seconds

    timed(results, "usage: stage", lambda: staging.stage_usage(engine, DAY, usage, "bench", "bench"))
    outcome = timed(
        results,
        "usage: validate (ValidateProductUsage)",
        lambda: gates.validate_product_usage(engine, DAY, data_dir, landing_id="bench"),
    )
    results["usage: checks + results (in the validate)"] = outcome.seconds

    timed(results, "output: merge without checks", lambda: merge.merge_day(engine, DAY))
    validator = gates.output_validator(data_dir)

    def timed_validator(connection, result) -> None:
        timed(
            results,
            "output: checks inside the merge (read + checks + results)",
            lambda: validator(connection, result),
        )

    timed(
        results,
        "output: merge with checks (MergeDay)",
        lambda: merge.merge_day(engine, DAY, before_commit=timed_validator),
    )

    try:
        results["CRM: checks on GE's SQL datasource instead"] = ge_sql_checks(warehouse, datasets.CRM)
        results["usage: checks on GE's SQL datasource instead"] = ge_sql_checks(warehouse, datasets.USAGE)
    except Exception as error:  # a comparison only: report, don't fail the benchmark
        print(f"    GE SQL datasource failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    results["CRM: checks with GE's data fingerprint on"] = crm_checks_with_fingerprint(engine, work)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    started = time.perf_counter()
    runner._gx()
    print(
        "Great Expectations import + ephemeral context, once per process: "
        f"{time.perf_counter() - started:.2f} s"
    )

    admin = sa.create_engine(postgres_url(args.postgres_url), isolation_level="AUTOCOMMIT")
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="bench-validation-"))
        database = f"bench_validation_{uuid.uuid4().hex[:8]}"
        pg_url = sa.make_url(args.postgres_url).set(database=database).render_as_string(hide_password=False)
        try:
            csv_path = write_crm_csv(CompanyUniverse(size, seed=42), DAY, work / "crm" / f"crm_{DAY}.csv")
            usage = usage_rows(size)
            print(f"\n{size:,} rows a dataset: CRM file {csv_path.stat().st_size / 1e6:.1f} MB")
            results = {"SQLite": bench_backend(f"sqlite:///{work / 'warehouse.db'}", csv_path, usage, work)}
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
            results["PostgreSQL"] = bench_backend(pg_url, csv_path, usage, work)
        finally:
            create_engine(WarehouseSettings(pg_url)).dispose()
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            shutil.rmtree(work, ignore_errors=True)

        print("\n| step | SQLite (s) | PostgreSQL (s) |\n|---|---:|---:|")
        for step in dict.fromkeys([*results["SQLite"], *results["PostgreSQL"]]):
            cells = [
                f"{results[backend][step]:.2f}" if step in results[backend] else "" for backend in results
            ]
            print(f"| {step} | {' | '.join(cells)} |")
        for backend, figures in results.items():
            load = figures["CRM: parse the CSV"] + figures["CRM: stage"] + figures["usage: stage"]
            load += figures["output: merge without checks"]
            checks = (
                figures["CRM: validate (ValidateCrm: read + checks + results)"]
                + figures["usage: validate (ValidateProductUsage)"]
                + figures["output: checks inside the merge (read + checks + results)"]
            )
            print(
                f"{backend}: the three gates take {checks:.2f} s against {load:.2f} s to parse, stage and "
                f"merge the same rows ({checks / (checks + load):.0%} of the day's run without fetching)"
            )
    admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
