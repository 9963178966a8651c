"""The daily churn report for 1,000 and 100,000 companies: execute + render + send, on both backends.

For each size, 30 days of the generated universe are staged and merged (the report's trend window;
no landing or validation, which the report does not read), then the report of the last day is
executed (nbclient, a fresh kernel), rendered (nbconvert HTML and the e-mail body) and mailed to an
aiosmtpd server on loopback, ``--runs`` times (the median is reported). As baselines in the same run:
the report's SQL alone (``load_report_data``, what the notebook's first cell does) and a kernel running
an empty notebook (the fixed cost of a kernel).

    .venv/bin/python bench/bench_report.py [--companies 1000 100000] [--runs 3] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback_servers import SmtpSink  # the tests' aiosmtpd sink

from devtools.sample_data import CompanyUniverse
from pipeline import files
from pipeline.reporting import data, mailer
from pipeline.reporting import notebook as report_notebook
from pipeline.sources.crm_snapshot import CrmCompany, CrmSnapshot, parse_timestamp
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import WarehouseSettings, create_engine, open_warehouse, postgres_url

LAST_DAY = dt.date(2026, 11, 20)
DAYS = 30


def load_history(database_url: str, companies: int) -> float:
    """Stage and merge the 30 days ending LAST_DAY; returns the seconds it took."""
    engine = open_warehouse(WarehouseSettings(database_url))
    universe = CompanyUniverse(companies, seed=42)
    started = time.perf_counter()
    for back in range(DAYS - 1, -1, -1):
        day = LAST_DAY - dt.timedelta(days=back)
        crm = [
            CrmCompany(
                row["company_id"],
                row["company_name"],
                row["country"] or None,
                row["industry_tag"] or None,
                parse_timestamp(row["last_contact_at"]),
            )
            for row in universe.crm_rows(day)
        ]
        usage = [(row["company_id"], row["active_users"], row["events"]) for row in universe.usage_rows(day)]
        staging.stage_crm(engine, day, CrmSnapshot(source="bench", companies=crm), f"bench-{day}")
        staging.stage_usage(engine, day, usage, "bench", f"bench-{day}")
        merge.merge_day(engine, day)
    return time.perf_counter() - started


def empty_kernel_seconds(work: Path) -> float:
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    started = time.perf_counter()
    report_notebook.execute_notebook(
        notebook,
        working_dir=work,
        warehouse=WarehouseSettings("sqlite://"),
        timeout=60,
        failed_path=work / "x.ipynb",
    )
    return time.perf_counter() - started


def measure(database_url: str, work: Path, runs: int, sink: SmtpSink) -> dict[str, float]:
    data_dir = work / f"data-{uuid.uuid4().hex[:6]}"
    samples: dict[str, list[float]] = {}

    def sample(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    settings = mailer.SmtpSettings("127.0.0.1", sink.port, no_tls=True)
    for _ in range(runs):
        started = time.perf_counter()
        data.load_report_data(create_engine(WarehouseSettings(database_url)), LAST_DAY, data_dir)
        sample("report SQL alone (load_report_data)", time.perf_counter() - started)

        started = time.perf_counter()
        manifest = report_notebook.render_report(WarehouseSettings(database_url), data_dir, LAST_DAY)
        rendered = time.perf_counter()
        mailer.send_log_path(data_dir, LAST_DAY).unlink(missing_ok=True)  # so that every run mails
        entry = mailer.deliver(
            data_dir,
            LAST_DAY,
            recipients=["bench@example.test"],
            sender="pipeline@example.test",
            settings=settings,
        )
        sent = time.perf_counter()
        assert entry["status"] == "sent", entry
        sample("execute (kernel + notebook cells)", manifest["seconds"]["execute"])
        sample("render (nbconvert HTML + e-mail body)", manifest["seconds"]["render"])
        sample("send (MIME + SMTP on loopback)", sent - rendered)
        sample("total: execute + render + send", sent - started)
        sample("e-mail HTML (KB)", manifest["email_html_bytes"] / 1000)
        sample("browser HTML (KB)", manifest["html_bytes"] / 1000)
        sample("whole message (KB)", len(sink.messages[-1][0].as_bytes()) / 1000)
    summary = files.read_json(report_notebook.report_dir(data_dir, LAST_DAY) / report_notebook.SUMMARY)
    results = {key: statistics.median(values) for key, values in samples.items()}
    results["companies on D (rows)"] = summary["headline"][0]["value"]
    results["newly at risk on D"] = summary["newly_at_risk"]["count"]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--companies", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp, SmtpSink() as sink:
        work = Path(tmp)
        print(f"empty-notebook kernel (baseline): {empty_kernel_seconds(work):.2f}s", flush=True)
        table: dict[str, dict[str, float]] = {}
        for companies in args.companies:
            backends = {"SQLite": f"sqlite:///{work / f'warehouse-{companies}.db'}"}
            admin = None
            if not args.no_postgres:
                name = f"bench_report_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(postgres_url(args.postgres_url), isolation_level="AUTOCOMMIT")
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                backends["PostgreSQL"] = (
                    sa.make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
                )
            try:
                for backend, url in backends.items():
                    seconds = load_history(url, companies)
                    print(f"{companies:,} companies, {backend}: 30 days loaded in {seconds:.1f}s", flush=True)
                    table[f"{companies:,} / {backend}"] = measure(url, work, args.runs, sink)
                    print(f"  {table[f'{companies:,} / {backend}']}", flush=True)
            finally:
                if admin is not None:
                    create_engine(WarehouseSettings(backends["PostgreSQL"])).dispose()
                    with admin.connect() as connection:
                        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    admin.dispose()

    columns = list(table)
    print()
    print(f"| measure (median of {args.runs} runs) | {' | '.join(columns)} |")
    print("|---|" + "---:|" * len(columns))
    for key in next(iter(table.values())):
        cells = []
        for column in columns:
            value = table[column][key]
            cells.append(f"{value:,.0f}" if key.startswith(("companies", "newly")) else f"{value:.2f}")
        print(f"| {key} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
