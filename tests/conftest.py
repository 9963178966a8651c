"""Shared fixtures: every warehouse backend, the simulated API on loopback, sample CRM files.

PostgreSQL and MariaDB tests run against real servers (PIPELINE_TEST_POSTGRES_URL and
PIPELINE_TEST_MYSQL_URL, default the local ones). In CI (CI=true) a missing server fails the run loudly;
elsewhere those tests are skipped with the reason.

Each test's warehouse has schema names of its own (``[pipeline] stg_schema``, ``analytics_schema``), so
tests never share tables; the schemas are dropped when the test ends.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from devtools.sample_data import write_crm_snapshots
from devtools.simulator import SimulatorConfig, serve
from pipeline.sources.crm_snapshot import CrmCompany, CrmSnapshot
from pipeline.warehouse import merge, staging
from pipeline.warehouse.engine import (
    WarehouseSettings,
    close_engine,
    mysql_url,
    open_warehouse,
    postgres_url,
)
from pipeline.warehouse.sql import normalise_value, with_schema_names

POSTGRES_ADMIN_URL = os.environ.get(
    "PIPELINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("PIPELINE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
IN_CI = os.environ.get("CI", "").lower() == "true"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _unavailable(reason: str | None, what: str) -> None:
    """Fail in CI (a server's tests must never be skipped there), skip with the reason elsewhere."""
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}: {what} tests must not be skipped in CI", pytrace=False)
        pytest.skip(reason)


@functools.cache
def _mysql_unavailable_reason() -> str | None:
    engine = sa.create_engine(mysql_url(MYSQL_ADMIN_URL))
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as error:
        return f"MariaDB is not reachable at {MYSQL_ADMIN_URL}: {str(error).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = sa.create_engine(postgres_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
    except sa.exc.OperationalError as error:
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {str(error).splitlines()[0]}"
    return None


@contextlib.contextmanager
def throwaway_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new database on the test server, dropped afterwards. Fails in CI when the server is
    down (PostgreSQL tests must never be skipped there); skips with the reason elsewhere."""
    _unavailable(_postgres_unavailable_reason(), "PostgreSQL")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with throwaway_postgres_database("pipeline_test") as url:
        yield url


def unique_schema_names(prefix: str = "t") -> dict[str, str]:
    """``stg_schema`` / ``analytics_schema`` that no other test (or xdist worker) uses."""
    tag = f"{prefix}{uuid.uuid4().hex[:10]}"
    return {"stg_schema": f"{tag}_stg", "analytics_schema": f"{tag}_analytics"}


def drop_warehouse(warehouse: WarehouseSettings) -> None:
    """Drop the schemas (databases on MySQL) of a test warehouse and close its engine; SQLite's files go
    with tmp_path."""
    close_engine(warehouse)
    backend = sa.make_url(warehouse.database_url).get_backend_name()
    if backend == "sqlite":
        return
    schemas = (warehouse.stg_schema, warehouse.analytics_schema)
    if backend == "postgresql":
        admin = sa.create_engine(postgres_url(warehouse.database_url), isolation_level="AUTOCOMMIT")
        statements = [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE' for schema in schemas]
    else:
        admin = sa.create_engine(mysql_url(warehouse.database_url))
        # DROP DATABASE waits for other sessions' open transactions on its tables: not forever.
        statements = ["SET SESSION lock_wait_timeout = 60"]
        statements += [f"DROP DATABASE IF EXISTS `{schema}`" for schema in schemas]
    try:
        with admin.connect() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        admin.dispose()


BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@contextlib.contextmanager
def make_warehouse(backend: str, request: pytest.FixtureRequest, root: Path) -> Iterator[WarehouseSettings]:
    """An empty warehouse on ``backend`` with schema names of its own, dropped afterwards."""
    names = unique_schema_names()
    if backend == "sqlite":
        warehouse = WarehouseSettings(f"sqlite:///{root / 'warehouse.db'}", **names)
    elif backend == "postgres":
        warehouse = WarehouseSettings(request.getfixturevalue("postgres_server_url"), **names)
    else:
        _unavailable(_mysql_unavailable_reason(), "MariaDB")
        warehouse = WarehouseSettings(MYSQL_ADMIN_URL, **names)
    try:
        yield warehouse
    finally:
        drop_warehouse(warehouse)


@pytest.fixture(params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSettings]:
    """A warehouse on each backend, empty at the start of the test."""
    with make_warehouse(request.param, request, tmp_path) as settings:
        yield settings


@pytest.fixture
def engine(warehouse: WarehouseSettings) -> sa.Engine:
    return open_warehouse(warehouse)


def query(bind: sa.Engine | sa.Connection, sql: str) -> str:
    """Ad-hoc test SQL (``SELECT ... FROM {analytics}.company_daily_activity``) with the warehouse's
    schema names."""
    return with_schema_names(bind, sql)


# -- building days by hand -----------------------------------------------------------------------------


def company(
    company_id: str,
    name: str | None = None,
    country: str | None = "DE",
    industry: str | None = "saas",
    last_contact_at: dt.datetime | None = None,
) -> CrmCompany:
    return CrmCompany(company_id, name or f"Company {company_id}", country, industry, last_contact_at)


def load_day(
    engine: sa.Engine,
    day: dt.date,
    companies: list[CrmCompany],
    usage: list[tuple[str, int, int]],
    tag: str = "",
) -> merge.MergeResult:
    """Stage a CRM snapshot and usage for ``day`` and merge it, as the pipeline does."""
    landing_id = f"test-{day.isoformat()}-{tag}"
    staging.stage_crm(engine, day, CrmSnapshot(source="test", companies=companies), landing_id)
    staging.stage_usage(engine, day, usage, "test", landing_id)
    return merge.merge_day(engine, day)


def table_rows(engine: sa.Engine, *, with_loaded_at: bool = False) -> list[tuple]:
    """The whole mart, normalised so both backends compare equal (record_loaded_at left out)."""
    columns = (
        "activity_date, company_id, company_name, country, industry_tag, last_contact_at, active_users, "
        'events, "7d_active_users", is_churn_risk'
    ) + (", record_loaded_at" if with_loaded_at else "")
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query(
                connection,
                f"SELECT {columns} FROM {{analytics}}.company_daily_activity "
                "ORDER BY activity_date, company_id",
            )
        ).all()
    return [tuple(_normalise(value) for value in row) for row in rows]


def _normalise(value):
    if isinstance(value, bool):
        return int(value)
    return normalise_value(value)


def row_for(engine: sa.Engine, day: dt.date, company_id: str) -> dict:
    with engine.connect() as connection:
        row = connection.execute(
            sa.text(
                query(
                    connection,
                    "SELECT company_name, country, industry_tag, last_contact_at, active_users, events, "
                    '"7d_active_users" AS active_users_7d, is_churn_risk '
                    "FROM {analytics}.company_daily_activity "
                    "WHERE activity_date = :day AND company_id = :company_id",
                )
            ).bindparams(sa.bindparam("day", day, type_=sa.Date()), company_id=company_id)
        ).one()
    result = {key: _normalise(value) for key, value in row._mapping.items()}
    if result["is_churn_risk"] is not None:
        result["is_churn_risk"] = bool(result["is_churn_risk"])
    return result


# -- running the whole graph -----------------------------------------------------------------------------

API_CLIENT_ID, API_CLIENT_SECRET = "pipeline-test-client", "pipeline-test-secret-9f2c"
WORLD_COMPANIES, WORLD_SEED = 120, 11


@pytest.fixture(scope="session")
def usage_api() -> Iterator:
    """The simulated product-usage API on loopback, fault-free, every test day published."""

    config = SimulatorConfig(
        client_id=API_CLIENT_ID,
        client_secret=API_CLIENT_SECRET,
        companies=WORLD_COMPANIES,
        seed=WORLD_SEED,
        ready_through=dt.date(2030, 12, 31),
    )
    with serve(config) as server:
        yield server


class PipelineWorld:
    """A sandbox for whole-graph runs: its own data_dir, CRM folder and warehouse, the simulated API.

    ``configure()`` points Luigi's configuration at the sandbox for in-process runs (``run``), and
    ``config_file`` holds the same settings for runs of the real command line (``run_cli``).
    """

    def __init__(self, root: Path, warehouse: WarehouseSettings, api_base_url: str) -> None:
        self.root, self.warehouse, self.api_base_url = root, warehouse, api_base_url
        self.data_dir = root / "data"
        self.crm_dir = root / "crm"
        self.settings = {
            "pipeline": {**warehouse_config(warehouse), "data_dir": str(self.data_dir)},
            "crm": {"source": str(self.crm_dir / "crm_{date}.csv")},
            "product_api": {
                "base_url": api_base_url,
                "page_size": "50",
                "backoff_base_seconds": "0.05",
                "backoff_max_seconds": "0.2",
            },
            # The report costs a notebook kernel per day: tests of the report turn it on where they need it.
            "report": {"enabled": "false"},
            "core": {"local_scheduler": "true", "no_lock": "true"},
        }
        self.config_file = root / "luigi.cfg"
        self.write_config()

    def write_config(self) -> None:
        lines = []
        for section, values in self.settings.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in values.items())
        self.config_file.write_text("\n".join(lines) + "\n")

    def write_crm(self, start: dt.date, end: dt.date) -> None:

        write_crm_snapshots(self.crm_dir, start, end, WORLD_COMPANIES, WORLD_SEED)

    @property
    def backend(self) -> str:
        return sa.make_url(self.warehouse.database_url).get_backend_name()

    @property
    def engine(self) -> sa.Engine:
        return open_warehouse(self.warehouse)

    def run(self, *tasks) -> bool:
        """Build tasks in-process with the local scheduler, with the failure alerts a command-line run
        installs when it starts; True when everything succeeded."""
        import luigi

        from pipeline.orchestration import alerts

        alerts.install()
        return luigi.build(list(tasks), local_scheduler=True, log_level="WARNING")

    def cli_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LUIGI_CONFIG_PATH=str(self.config_file),
            PRODUCT_API_CLIENT_ID=API_CLIENT_ID,
            PRODUCT_API_CLIENT_SECRET=API_CLIENT_SECRET,
        )
        return env

    def run_cli(self, *arguments: str, timeout: float = 120, env: dict[str, str] | None = None):
        """Run the `luigi` command line the README documents; returns the CompletedProcess."""
        import subprocess
        import sys

        luigi_cli = Path(sys.executable).with_name("luigi")
        return subprocess.run(
            [str(luigi_cli), "--module", "pipeline", *arguments],
            cwd=self.root,
            env={**self.cli_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def warehouse_config(warehouse: WarehouseSettings) -> dict[str, str]:
    """The ``[pipeline]`` keys of a warehouse, as a config file or Luigi's configuration holds them."""
    return {
        "database_url": warehouse.database_url,
        "stg_schema": warehouse.stg_schema,
        "analytics_schema": warehouse.analytics_schema,
    }


@pytest.fixture(autouse=True, scope="session")
def one_luigi_worker_in_process() -> None:
    """``luigi.build`` in a test runs its tasks in the test's own process, whatever luigi.cfg's default
    (``[core] workers = 2``): the test sees its monkeypatches and fault points. Tests of several workers
    ask for them; command-line runs in a test read the test's own config file."""
    import luigi.configuration

    config = luigi.configuration.get_config()
    if not config.has_section("core"):
        config.add_section("core")
    config.set("core", "workers", "1")


@contextlib.contextmanager
def luigi_settings(settings: dict[str, dict[str, str]]) -> Iterator[None]:
    """Set Luigi configuration options for the duration, then put back each named section as it was."""
    import luigi.configuration
    from luigi.task_register import Register

    config = luigi.configuration.get_config()
    saved = {
        section: dict(config.items(section)) if config.has_section(section) else None for section in settings
    }
    for section, values in settings.items():
        if not config.has_section(section):
            config.add_section(section)
        for key, value in values.items():
            config.set(section, key, value)
    Register.clear_instance_cache()  # Config objects are cached with the values they were built with
    try:
        yield
    finally:
        for section, values in saved.items():
            config.remove_section(section)
            if values is not None:
                config.add_section(section)
                for key, value in values.items():
                    config.set(section, key, value)
        Register.clear_instance_cache()


@pytest.fixture
def world(
    tmp_path: Path, warehouse: WarehouseSettings, usage_api, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PipelineWorld]:
    """A PipelineWorld on each backend, with Luigi's configuration pointed at it for this test."""
    world = PipelineWorld(tmp_path, warehouse, usage_api.base_url)
    monkeypatch.setenv("PRODUCT_API_CLIENT_ID", API_CLIENT_ID)
    monkeypatch.setenv("PRODUCT_API_CLIENT_SECRET", API_CLIENT_SECRET)
    with luigi_settings(world.settings):
        yield world
