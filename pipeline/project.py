"""Where the project's own files are: ``sql/``, ``expectations/`` and ``reports/``.

The pipeline runs from its checkout, like a dbt project: the package reads its SQL, its Great
Expectations suites and its report notebook from the project folder beside it. A wheel does not carry
those folders; an installed package finds them through ``PIPELINE_PROJECT_DIR`` (or the working
directory) and refuses clearly, naming what is missing, when neither holds them.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR_ENV = "PIPELINE_PROJECT_DIR"
PROJECT_FOLDERS = ("sql", "expectations", "reports")


class ProjectLayoutError(RuntimeError):
    """The project folder (sql/, expectations/, reports/) cannot be found."""


def project_root() -> Path:
    """The project folder: ``PIPELINE_PROJECT_DIR``, else the checkout this package lives in, else the
    working directory; the first that holds ``sql/``, ``expectations/`` and ``reports/``."""
    candidates = [
        *([Path(os.environ[PROJECT_DIR_ENV])] if os.environ.get(PROJECT_DIR_ENV) else []),
        Path(__file__).resolve().parent.parent,
        Path.cwd(),
    ]
    for candidate in candidates:
        if all((candidate / folder).is_dir() for folder in PROJECT_FOLDERS):
            return candidate.resolve()
    raise ProjectLayoutError(
        "the pipeline runs from its project folder (it reads sql/, expectations/ and reports/ there), "
        f"and none was found in {', '.join(str(path) for path in candidates)}: run it from a checkout, "
        f"or set {PROJECT_DIR_ENV} to one"
    )


def sql_dir() -> Path:
    return project_root() / "sql"


def expectations_dir() -> Path:
    return project_root() / "expectations"


def reports_dir() -> Path:
    return project_root() / "reports"
