"""The raw landing area: files kept exactly as received, written atomically, never overwritten.

Layout under ``{data_dir}/raw/<dataset>/date=YYYY-MM-DD/``: the current landing's files at the top, and
each earlier landing (kept when a day is refreshed) moved whole into ``v1/``, ``v2/``, ... beside them.
A landing is complete when its ``manifest.json`` exists; the manifest is always written last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def day_dir(data_dir: Path, dataset: str, day: dt.date) -> Path:
    return Path(data_dir) / "raw" / dataset / f"date={day.isoformat()}"


def utc_timestamp() -> str:
    """Now in UTC as ISO 8601 with microseconds: landings are ordered by it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))


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
