"""`python -m pipeline luigid`: Luigi's task history migration in SQLAlchemy 2 terms, on a real SQLite
history database (the whole luigid is exercised in tests/orchestration/test_scheduler.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import luigi.db_task_history
import sqlalchemy as sa

from pipeline.orchestration import luigid


def test_a_new_history_database_needs_no_migration(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'history.db'}")
    luigi.db_task_history.Base.metadata.create_all(engine)
    luigid.upgrade_schema(engine)  # Luigi's own raises ObjectNotExecutableError here on SQLAlchemy 2
    assert "task_id" in [column["name"] for column in sa.inspect(engine).get_columns("tasks")]


def test_an_old_history_database_gets_the_task_id_column(tmp_path: Path, caplog) -> None:
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, name VARCHAR(128), host VARCHAR(128));"
            "CREATE TABLE task_parameters (task_id INTEGER, name VARCHAR(128), value VARCHAR(256));"
        )
    engine = sa.create_engine(f"sqlite:///{path}")
    luigid.upgrade_schema(engine)
    inspector = sa.inspect(engine)
    assert "task_id" in [column["name"] for column in inspector.get_columns("tasks")]
    assert "ix_task_id" in [index["name"] for index in inspector.get_indexes("tasks")]
    assert "use a new history database" in caplog.text  # SQLite cannot make value TEXT
