"""Shared fixtures: both warehouse backends, the simulated API on loopback, sample CRM files.

PostgreSQL tests run against the real server (PIPELINE_TEST_POSTGRES_URL, default the local one). In CI
(CI=true) a missing server fails the run loudly; elsewhere those tests are skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline import staging, transform
from pipeline.crm import CrmCompany, CrmSnapshot
from pipeline.targets import warehouse
from pipeline.warehouse import create_engine, normalise_value, postgres_url

POSTGRES_ADMIN_URL = os.environ.get(
    "PIPELINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = sa.create_engine(postgres_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
    except sa.exc.OperationalError as error:
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {str(error).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    reason = _postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}: PostgreSQL tests must not be skipped in CI", pytrace=False)
        pytest.skip(reason)
    name = f"pipeline_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    create_engine(url).dispose()
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA IF EXISTS stg CASCADE")
        connection.exec_driver_sql("DROP SCHEMA IF EXISTS analytics CASCADE")
    from pipeline import targets

    targets._schema_ready.discard(engine)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A warehouse URL for each backend, empty at the start of the test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    url = request.getfixturevalue("postgres_server_url")
    reset_postgres(url)
    return url


@pytest.fixture
def engine(database_url: str) -> sa.Engine:
    return warehouse(database_url)


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
) -> transform.MergeResult:
    """Stage a CRM snapshot and usage for ``day`` and merge it, as the pipeline does."""
    landing_id = f"test-{day.isoformat()}-{tag}"
    staging.stage_crm(engine, day, CrmSnapshot(source="test", companies=companies), landing_id)
    staging.stage_usage(engine, day, usage, "test", landing_id)
    return transform.merge_day(engine, day)


def table_rows(engine: sa.Engine, *, with_loaded_at: bool = False) -> list[tuple]:
    """The whole mart, normalised so both backends compare equal (record_loaded_at left out)."""
    columns = (
        "activity_date, company_id, company_name, country, industry_tag, last_contact_at, active_users, "
        'events, "7d_active_users", is_churn_risk'
    ) + (", record_loaded_at" if with_loaded_at else "")
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"SELECT {columns} FROM analytics.company_daily_activity ORDER BY activity_date, company_id"
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
                "SELECT company_name, country, industry_tag, last_contact_at, active_users, events, "
                '"7d_active_users" AS active_users_7d, is_churn_risk FROM analytics.company_daily_activity '
                "WHERE activity_date = :day AND company_id = :company_id"
            ).bindparams(sa.bindparam("day", day, type_=sa.Date()), company_id=company_id)
        ).one()
    result = {key: _normalise(value) for key, value in row._mapping.items()}
    if result["is_churn_risk"] is not None:
        result["is_churn_risk"] = bool(result["is_churn_risk"])
    return result
