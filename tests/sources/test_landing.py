"""The raw landing area: atomic writes, complete-when-manifested, prior versions on refresh."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from pipeline import files
from pipeline.sources import landing


def land(directory: Path, pages: int) -> None:
    for number in range(1, pages + 1):
        files.write_atomic(directory / f"page-{number:05d}.json", b'{"data": []}')
    files.write_json_atomic(directory / landing.MANIFEST_NAME, {"pages": pages})


def test_day_dir_is_partitioned_by_dataset_and_date(tmp_path: Path) -> None:
    path = landing.day_dir(tmp_path, "crm", dt.date(2026, 11, 3))
    assert path == tmp_path / "raw" / "crm" / "date=2026-11-03"


def test_write_atomic_leaves_no_temporary_file_and_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "page.json"
    files.write_atomic(target, b"first")
    files.write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [entry.name for entry in target.parent.iterdir()] == ["page.json"]


def test_a_landing_without_its_manifest_is_incomplete(tmp_path: Path) -> None:
    files.write_atomic(tmp_path / "page-00001.json", b"{}")
    assert landing.read_manifest(tmp_path) is None
    files.write_json_atomic(tmp_path / landing.MANIFEST_NAME, {"pages": 1})
    assert landing.read_manifest(tmp_path) == {"pages": 1}


def test_archive_moves_each_landing_into_the_next_version(tmp_path: Path) -> None:
    land(tmp_path, pages=2)
    assert landing.archive_current_landing(tmp_path) == tmp_path / "v1"
    land(tmp_path, pages=1)
    assert landing.archive_current_landing(tmp_path) == tmp_path / "v2"

    assert landing.prior_versions(tmp_path) == [tmp_path / "v1", tmp_path / "v2"]
    assert sorted(entry.name for entry in (tmp_path / "v1").iterdir()) == [
        "manifest.json",
        "page-00001.json",
        "page-00002.json",
    ]
    assert landing.read_manifest(tmp_path / "v2") == {"pages": 1}
    assert [entry.name for entry in tmp_path.iterdir() if entry.is_file()] == []
    assert landing.archive_current_landing(tmp_path) is None


def test_an_archive_cut_short_never_leaves_a_manifest_beside_part_of_its_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed after the first move must leave an incomplete landing, not a complete-looking one."""
    land(tmp_path, pages=3)
    real_replace = os.replace
    moves: list[str] = []

    def replace_then_die(source: os.PathLike[str], target: os.PathLike[str]) -> None:
        if moves:
            raise KeyboardInterrupt("killed")
        moves.append(Path(source).name)
        real_replace(source, target)

    monkeypatch.setattr(landing.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        landing.archive_current_landing(tmp_path)

    assert moves == [landing.MANIFEST_NAME]
    assert landing.read_manifest(tmp_path) is None
