"""Reading a day back for the quality gates: the cursor read against the bulk read, and GE's fixed cost.

For each backend (SQLite, PostgreSQL, MariaDB) this generates one staged CRM day, one staged usage day and
one day of the mart (``--rows`` each, 1,000,000 by default) in SQL, then reads each back as the gates do,
every read in a fresh process (so that its peak RSS is its own):

* ``old``: the cursor read as it was before (``cursor.fetchall()`` into a DataFrame), kept here verbatim;
* ``new``: :mod:`pipeline.quality.frames` as it is (COPY + pyarrow on PostgreSQL, the cursor elsewhere);
* ``raw``, ``read_sql`` and ``columns`` (SQLite and MariaDB, CRM and usage, the frame as read, before the
  typing of the gates): the cursor read, ``pandas.read_sql`` on the DBAPI connection, and the rows fetched
  then split into columns, as candidates for those backends;
* ``check``: old and new both, asserting that the frames are identical (dtypes and values).

Then Great Expectations' time per suite on a small day (1,000 rows), the median of ``--repeat`` runs of
``runner.run_suite`` with the results as they were serialised before and as they are now, interleaved.

    .venv/bin/python bench/bench_readback.py [--rows 1000000] [--backends sqlite postgres mariadb]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.quality import frames
from pipeline.warehouse.engine import WarehouseSettings, close_engine, mysql_url, open_warehouse, postgres_url
from pipeline.warehouse.sql import rendered_sql, run_sql, sql_context, with_schema_names

DAY = dt.date(2028, 1, 15)
KINDS = ("crm", "usage", "output")
QUERIES = {
    "crm": ("staging/select_staged_crm_day", "snapshot_date"),
    "usage": ("staging/select_staged_usage_day", "activity_date"),
    "output": ("quality/select_company_daily_activity_day_for_validation", "activity_date"),
}

# -- the read-back as it was (the reference) ---------------------------------------------------------------


def old_frame(result: Any) -> Any:
    import pandas as pd

    columns = list(result.keys())
    cursor = getattr(result, "cursor", None)
    rows = cursor.fetchall() if cursor is not None else [tuple(row) for row in result.fetchall()]
    result.close()
    return pd.DataFrame(rows, columns=columns)


def old_crm_frame(connection: sa.Connection, snapshot_date: dt.date) -> Any:
    import pandas as pd

    frame = old_frame(run_sql(connection, "staging/select_staged_crm_day", snapshot_date=snapshot_date))
    loaded = frame["last_contact_at"]
    parsed = pd.to_datetime(loaded, errors="coerce", format="ISO8601").astype("datetime64[ns]")
    unparseable = parsed.isna() & loaded.notna()
    frame["last_contact_at"] = parsed
    frame["last_contact_at_unparseable"] = loaded.astype(object).where(unparseable, None)
    return frame


def old_usage_frame(connection: sa.Connection, activity_date: dt.date) -> Any:
    frame = old_frame(run_sql(connection, "staging/select_staged_usage_day", activity_date=activity_date))
    if frame.empty:
        frame = frame.astype({"company_id": object, "active_users": "int64", "events": "int64"})
    return frame


def old_output_frame(connection: sa.Connection, activity_date: dt.date) -> Any:
    import pandas as pd

    frame = old_frame(
        run_sql(
            connection,
            "quality/select_company_daily_activity_day_for_validation",
            activity_date=activity_date,
        )
    )
    raw = frame["is_churn_risk"]
    known = raw.notna()
    flags = pd.Series(None, index=frame.index, dtype=object)
    flags[known] = raw[known].astype(bool)
    frame["is_churn_risk"] = flags
    return frame


OLD = {"crm": old_crm_frame, "usage": old_usage_frame, "output": old_output_frame}
NEW = {"crm": frames.crm_frame, "usage": frames.usage_frame, "output": frames.output_frame}


def _raw_statement(connection: sa.Connection, kind: str) -> tuple[str, Any]:
    """The kind's query for the DBAPI itself: rendered, in the driver's paramstyle, with its values."""
    name, parameter = QUERIES[kind]
    compiled = sa.text(rendered_sql(name, sql_context(connection))).compile(dialect=connection.dialect)
    values = {parameter: DAY.isoformat()}
    if compiled.positiontup:
        return compiled.string, [values[key] for key in compiled.positiontup]
    return compiled.string, values


def read_sql_frame(connection: sa.Connection, kind: str) -> Any:
    import warnings

    import pandas as pd

    statement, params = _raw_statement(connection, kind)
    with warnings.catch_warnings():  # pandas warns about DBAPI connections other than sqlite3
        warnings.simplefilter("ignore", UserWarning)
        return pd.read_sql(statement, connection.connection.dbapi_connection, params=params)


def columns_frame(connection: sa.Connection, kind: str) -> Any:
    import pandas as pd

    statement, params = _raw_statement(connection, kind)
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement, params)
        names = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    finally:
        cursor.close()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    del rows
    return pd.DataFrame(dict(zip(names, (list(column) for column in columns), strict=True)))


# -- generating a day in SQL ---------------------------------------------------------------------------


def _series(family: str, rows: int) -> tuple[str, str, str]:
    """(prefix, FROM source, the row number) of a row generator on ``family``."""
    if family == "postgresql":
        return "", f"generate_series(1, {rows}) AS s(g)", "g"
    if family == "mysql":
        return "", f"{{stg}}.seq_1_to_{rows}", "seq"
    return f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {rows}) ", "s", "g"


def generate_day(engine: sa.Engine, rows: int) -> None:
    family = sql_context(engine).family
    prefix, source, g = _series(family, rows)
    if family == "postgresql":
        company_id = f"'C' || lpad({g}::text, 7, '0')"
        name = f"'Company ' || {g} || CASE WHEN {g} % 7 = 0 THEN ', Inc. \"x\"' ELSE '' END"
        contact = (
            f"TIMESTAMP '2028-01-14 00:00:00' + {g} * INTERVAL '1 millisecond' + ({g} % 1000) * INTERVAL '1 "
            "microsecond'"
        )
    elif family == "mysql":
        company_id = f"CONCAT('C', LPAD({g}, 7, '0'))"
        name = f"CONCAT('Company ', {g}, CASE WHEN {g} % 7 = 0 THEN ', Inc. \"x\"' ELSE '' END)"
        contact = f"TIMESTAMP'2028-01-14 00:00:00' + INTERVAL ({g} * 1000 + {g} % 1000) MICROSECOND"
    else:
        company_id = f"printf('C%07d', {g})"
        name = f"'Company ' || {g} || CASE WHEN {g} % 7 = 0 THEN ', Inc. \"x\"' ELSE '' END"
        contact = f"strftime('%Y-%m-%d %H:%M:%S', '2028-01-14', '+' || ({g} % 86400) || ' seconds')"
    statements = [
        f"{prefix}INSERT INTO {{stg}}.crm_daily (snapshot_date, company_id, company_name, country, "
        f"industry_tag, last_contact_at) SELECT :day, {company_id}, {name}, "
        f"CASE WHEN {g} % 11 = 0 THEN NULL ELSE 'DE' END, "
        f"CASE {g} % 3 WHEN 0 THEN 'saas' WHEN 1 THEN 'retail' ELSE NULL END, "
        f"CASE WHEN {g} % 13 = 0 THEN NULL ELSE {contact} END FROM {source}",
        f"{prefix}INSERT INTO {{stg}}.product_usage_daily (activity_date, company_id, active_users, events) "
        f"SELECT :day, {company_id}, {g} % 50, ({g} % 50) * 25 + {g} % 7 FROM {source}",
        "INSERT INTO {analytics}.company_daily_activity (activity_date, company_id, company_name, country, "
        'industry_tag, last_contact_at, active_users, events, "7d_active_users", is_churn_risk, '
        "record_loaded_at) SELECT c.snapshot_date, c.company_id, c.company_name, c.country, c.industry_tag, "
        "c.last_contact_at, u.active_users, u.events, "
        "CASE WHEN u.events % 17 = 0 THEN NULL ELSE u.active_users * 3 END, "
        "CASE WHEN u.events % 5 = 0 THEN NULL WHEN u.active_users = 0 THEN TRUE ELSE FALSE END, :at "
        "FROM {stg}.crm_daily c JOIN {stg}.product_usage_daily u "
        "ON u.company_id = c.company_id AND u.activity_date = c.snapshot_date",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(
                sa.text(with_schema_names(connection, statement)),
                {"day": DAY, "at": dt.datetime(2028, 1, 16, 1, 2, 3)},
            )


def drop_warehouse(warehouse: WarehouseSettings) -> None:
    close_engine(warehouse)
    backend = sa.make_url(warehouse.database_url).get_backend_name()
    schemas = (warehouse.stg_schema, warehouse.analytics_schema)
    if backend == "postgresql":
        admin = sa.create_engine(postgres_url(warehouse.database_url), isolation_level="AUTOCOMMIT")
        statements = [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE' for schema in schemas]
    elif backend in ("mysql", "mariadb"):
        admin = sa.create_engine(mysql_url(warehouse.database_url))
        statements = [f"DROP DATABASE IF EXISTS `{schema}`" for schema in schemas]
    else:
        return
    with admin.connect() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    admin.dispose()


# -- one measurement, in its own process -------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure(warehouse: WarehouseSettings, kind: str, impl: str) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.csv  # noqa: F401 - imported before the clock starts, whichever the read

    engine = open_warehouse(warehouse)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        if impl == "check":
            new, old = NEW[kind](connection, DAY), OLD[kind](connection, DAY)
            pd.testing.assert_frame_equal(new, old, check_exact=True)
            return {"rows": len(new), "identical": True}
        read = {
            "old": lambda: OLD[kind](connection, DAY),
            "new": lambda: NEW[kind](connection, DAY),
            "raw": lambda: old_frame(run_sql(connection, QUERIES[kind][0], **{QUERIES[kind][1]: DAY})),
            "read_sql": lambda: read_sql_frame(connection, kind),
            "columns": lambda: columns_frame(connection, kind),
        }[impl]
        before = _rss_bytes()
        started = time.perf_counter()
        frame = read()
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "rows": len(frame),
        "seconds": round(seconds, 3),
        "peak_rss_growth_mb": round((peak - before) / 1e6, 1),
        "frame_mb": round(frame.memory_usage(deep=True).sum() / 1e6, 1),
    }


def in_child(warehouse: WarehouseSettings, kind: str, impl: str) -> dict[str, Any]:
    arguments = [warehouse.database_url, warehouse.stg_schema, warehouse.analytics_schema, kind, impl]
    completed = subprocess.run(
        [sys.executable, __file__, "--child", *arguments], capture_output=True, text=True, check=False
    )
    if completed.returncode:
        return {"error": (completed.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- Great Expectations' time per suite -------------------------------------------------------------------


def ge_per_suite(repeat: int) -> dict[str, dict[str, float]]:
    import pandas as pd

    from pipeline.datasets import CRM, OUTPUT, USAGE
    from pipeline.quality import runner

    def before_summary(result: Any, ge_results: list[dict[str, Any]]) -> dict[str, Any]:
        document = result.to_json_dict()  # as it was: the results serialised twice
        document["results"] = ge_results
        return document

    after_summary = runner._ge_summary
    n = 1000
    ids = [f"C{i:07d}" for i in range(n)]
    cases = {
        CRM: (
            pd.DataFrame(
                {
                    "company_id": ids,
                    "company_name": ["Acme"] * n,
                    "country": ["DE"] * n,
                    "industry_tag": ["saas"] * n,
                    "last_contact_at": pd.Series(pd.Timestamp("2028-01-14 08:00"), index=range(n)).astype(
                        "datetime64[ns]"
                    ),
                    "last_contact_at_unparseable": pd.Series([None] * n, dtype=object),
                }
            ),
            {"last_contact_at_max": "2028-01-17T00:00:00"},
        ),
        USAGE: (pd.DataFrame({"company_id": ids, "active_users": [3] * n, "events": [70] * n}), {}),
        OUTPUT: (
            pd.DataFrame(
                {
                    "company_id": ids,
                    "active_users": [3] * n,
                    "events": [70] * n,
                    "7d_active_users": [9] * n,
                    "is_churn_risk": pd.Series([False] * n, dtype=object),
                }
            ),
            {"expected_row_count": n},
        ),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="bench-readback-ge-"))
    started = time.perf_counter()
    runner._gx()
    print(f"Great Expectations import + context, once per process: {time.perf_counter() - started:.2f} s")
    times: dict[str, dict[str, list[float]]] = {dataset: {"before": [], "after": []} for dataset in cases}
    for round_ in range(repeat + 1):
        for dataset, (frame, parameters) in cases.items():
            for label, summary in (("before", before_summary), ("after", after_summary)):
                runner._ge_summary = summary
                started = time.perf_counter()
                runner.run_suite(
                    dataset,
                    DAY,
                    frame,
                    parameters=parameters,
                    previous=None,
                    max_row_drop=0.1,
                    accept_row_drop=False,
                    data_dir=data_dir,
                )
                if round_:  # the first round warms GE's caches up
                    times[dataset][label].append(time.perf_counter() - started)
    runner._ge_summary = after_summary
    return {
        dataset: {label: statistics.median(values) for label, values in by_label.items()}
        for dataset, by_label in times.items()
    }


# -- main -------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "mariadb"])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--repeat", type=int, default=15, help="GE runs per suite and variant")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        url, stg, analytics, kind, impl = args.child
        print(json.dumps(measure(WarehouseSettings(url, stg, analytics), kind, impl)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-readback-"))
    urls = {
        "sqlite": f"sqlite:///{work / 'warehouse.db'}",
        "postgres": args.postgres_url,
        "mariadb": args.mysql_url,
    }
    for backend in args.backends:
        tag = f"bench{uuid.uuid4().hex[:8]}"
        warehouse = WarehouseSettings(
            urls[backend], stg_schema=f"{tag}_stg", analytics_schema=f"{tag}_analytics"
        )
        try:
            started = time.perf_counter()
            generate_day(open_warehouse(warehouse), args.rows)
            close_engine(warehouse)
            print(f"\n{backend}: {args.rows:,} rows a day generated in {time.perf_counter() - started:.1f} s")
            candidates = [] if backend == "postgres" else ["raw", "read_sql", "columns"]
            for kind in args.kinds:
                for impl in ["old", "new", *(candidates if kind in ("crm", "usage") else [])]:
                    print(f"  {kind:6} {impl:8} {json.dumps(in_child(warehouse, kind, impl))}", flush=True)
                print(f"  {kind:6} {'check':8} {json.dumps(in_child(warehouse, kind, 'check'))}", flush=True)
        finally:
            drop_warehouse(warehouse)

    print(f"\nGreat Expectations per suite, {args.repeat} runs each on 1,000 rows, median seconds:")
    for dataset, by_label in ge_per_suite(args.repeat).items():
        print(f"  {dataset:24} before {by_label['before']:.4f}  after {by_label['after']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
