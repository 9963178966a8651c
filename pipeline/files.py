"""Files written atomically: a reader (or a run killed half way) sees the old file or the whole new one.

Every writer of the pipeline goes through :func:`write_atomic`: a temporary ``.<name>.<random>.part``
beside the target, fsynced, then renamed over it. A ``.part`` file is therefore never a result, and the
task locks (``pipeline.orchestration.locks``) remove the ones a killed run left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


def write_json_atomic(path: Path, document: Any) -> None:
    """``document`` as indented JSON with sorted keys (values JSON cannot hold are written as text)."""
    text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    write_atomic(path, text.encode("utf-8"))


def read_json(path: Path) -> Any | None:
    """The JSON document at ``path``, or None when there is no file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
