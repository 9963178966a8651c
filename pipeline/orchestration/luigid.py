"""``python -m pipeline luigid``: Luigi's ``luigid`` (same options), with its task history working.

``make scheduler`` runs this with ``luigid.cfg`` (``[scheduler] record_task_history = true``, ``[task_history]
db_connection = sqlite:///var/luigid/task-history.db``), so that the visualiser's History pages
(``/history``, ``/history/by_name/<Task>``) list every run. Luigi 3.8's ``luigi.db_task_history`` runs its
schema migration with SQLAlchemy 1 idioms (a raw SQL string, rows read by column name) that SQLAlchemy 2
refuses, so on SQLite luigid fails at startup. :func:`upgrade_schema` is the same migration in SQLAlchemy 2
terms; it replaces Luigi's before luigid starts, in this process only. Nothing else of Luigi is changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa

log = logging.getLogger("luigi.server")


def upgrade_schema(engine: sa.Engine) -> None:
    """Luigi's ``_upgrade_schema`` (luigi/db_task_history.py, 3.8) for SQLAlchemy 2: add ``tasks.task_id``
    to a history database from before Luigi 2.x, and report a ``task_parameters.value`` that is not TEXT
    where the dialect cannot change it (SQLite) or change it where it can."""
    inspector = sa.inspect(engine)
    with engine.begin() as connection:
        if "task_id" not in [column["name"] for column in inspector.get_columns("tasks")]:
            log.warning("Upgrading DbTaskHistory schema: Adding tasks.task_id")
            connection.execute(sa.text("ALTER TABLE tasks ADD COLUMN task_id VARCHAR(200)"))
            connection.execute(sa.text("CREATE INDEX ix_task_id ON tasks (task_id)"))
        value = next(
            column for column in inspector.get_columns("task_parameters") if column["name"] == "value"
        )
        if str(value["type"]) == "TEXT":
            return
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("ALTER TABLE task_parameters ALTER COLUMN value TYPE TEXT"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            connection.execute(sa.text("ALTER TABLE task_parameters MODIFY COLUMN value TEXT"))
        else:
            log.warning("task_parameters.value is %s, not TEXT: use a new history database", value["type"])


def main(argv: Sequence[str]) -> int:
    """Start luigid with ``argv`` (its own options: --address, --port, --state-path, --logdir, ...)."""
    import luigi.cmdline
    import luigi.db_task_history

    luigi.db_task_history._upgrade_schema = upgrade_schema
    luigi.cmdline.luigid(list(argv))
    return 0
