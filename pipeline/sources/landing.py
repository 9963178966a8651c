"""The raw landing area: files kept exactly as received, written atomically, never overwritten.

Layout under ``{data_dir}/raw/<dataset>/date=YYYY-MM-DD/``: the current landing's files at the top, and
each earlier landing (kept when a day is refreshed) moved whole into ``v1/``, ``v2/``, ... beside them.
A landing is complete when its ``manifest.json`` exists; the manifest is always written last.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def day_dir(data_dir: Path, dataset: str, day: dt.date) -> Path:
    return Path(data_dir) / "raw" / dataset / f"date={day.isoformat()}"


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The landing's manifest, or None while the landing is incomplete."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def archive_current_landing(directory: Path) -> Path | None:
    """Move the current landing's files into the next ``vN/`` folder; returns it (None if nothing)."""
    current = (
        [entry for entry in directory.iterdir() if not _VERSION_DIR.match(entry.name)]
        if directory.exists()
        else []
    )
    if not current:
        return None
    versions = [
        int(match.group(1)) for entry in directory.iterdir() if (match := _VERSION_DIR.match(entry.name))
    ]
    target = directory / f"v{max(versions, default=0) + 1}"
    target.mkdir()
    # The manifest goes first: a process killed half way leaves an incomplete landing (refetched on the
    # next run), never a manifest beside some of its pages.
    for entry in sorted(current, key=lambda entry: entry.name != MANIFEST_NAME):
        os.replace(entry, target / entry.name)
    return target


def prior_versions(directory: Path) -> list[Path]:
    """Earlier landings of the day, oldest first."""
    if not directory.exists():
        return []
    found = [
        (int(m.group(1)), entry) for entry in directory.iterdir() if (m := _VERSION_DIR.match(entry.name))
    ]
    return [entry for _, entry in sorted(found)]
