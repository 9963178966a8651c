"""The CRM daily snapshot: find it, land it raw, and parse it strictly (SPEC section 2).

Parsing is strict and precise rather than forgiving: a bad file fails the day with an error that names
the file, the row and the column, because a silently skipped company would show as churned downstream.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import requests

from pipeline import landing

log = logging.getLogger(__name__)

DATASET = "crm"
REQUIRED_COLUMNS = ("company_id", "company_name", "country", "industry_tag", "last_contact_at")
DOWNLOAD_TIMEOUT_SECONDS = (10, 120)


class CrmSnapshotError(ValueError):
    """The CRM snapshot is unusable; the message names the file, and the row and column where known."""

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.source, self.problem, self.row, self.line, self.column = source, problem, row, line, column
        where = [source]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {problem}")


class CrmSnapshotNotFound(CrmSnapshotError):
    """There is no snapshot at the configured location for the day."""


@dataclass(frozen=True)
class CrmCompany:
    company_id: str
    company_name: str | None
    country: str | None
    industry_tag: str | None
    last_contact_at: dt.datetime | None  # UTC, without a zone

    def as_row(self) -> tuple:
        return (self.company_id, self.company_name, self.country, self.industry_tag, self.last_contact_at)


@dataclass
class CrmSnapshot:
    source: str
    companies: list[CrmCompany]
    warnings: list[str] = field(default_factory=list)


def snapshot_location(template: str, day: dt.date) -> str:
    """The snapshot's path or URL for ``day``: ``{date}`` in the template becomes YYYY-MM-DD."""
    if "{date}" not in template:
        raise ValueError(f"the CRM source template {template!r} has no {{date}} placeholder")
    return template.replace("{date}", day.isoformat())


def redact_location(location: str) -> str:
    """The location without user info or query string (which may carry credentials or SAS tokens)."""
    parts = urllib.parse.urlsplit(location)
    if not parts.scheme or len(parts.scheme) == 1:
        return location
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def land_snapshot(template: str, data_dir: Path, day: dt.date) -> dict:
    """Download the day's snapshot into the raw landing area and write its manifest last."""
    location = snapshot_location(template, day)
    directory = landing.day_dir(data_dir, DATASET, day)
    name = Path(urllib.parse.urlsplit(location).path).name or f"crm_{day.isoformat()}.csv"
    download_snapshot(location, directory / name, day)
    fetched_at = landing.utc_timestamp()
    manifest = {
        "dataset": DATASET,
        "date": day.isoformat(),
        "source": redact_location(location),
        "file": name,
        "bytes": (directory / name).stat().st_size,
        "sha256": landing.sha256_file(directory / name),
        "fetched_at": fetched_at,
        "landing_id": fetched_at,
    }
    landing.write_json_atomic(directory / landing.MANIFEST_NAME, manifest)
    return manifest


def read_landed_snapshot(data_dir: Path, day: dt.date) -> tuple[dict, CrmSnapshot]:
    """Parse the day's landed snapshot (no download); errors name the original source."""
    directory = landing.day_dir(data_dir, DATASET, day)
    manifest = landing.read_manifest(directory)
    if manifest is None:
        raise CrmSnapshotError(
            str(directory), f"no complete landing of the CRM snapshot for {day.isoformat()}"
        )
    path = directory / manifest["file"]
    if landing.sha256_file(path) != manifest["sha256"]:
        raise CrmSnapshotError(
            str(path), "the landed file differs from its manifest checksum; fetch it again"
        )
    return manifest, parse_snapshot(path, source=f"{manifest['source']} (landed as {path})")


def download_snapshot(location: str, destination: Path, day: dt.date) -> None:
    """Copy the snapshot at ``location`` to ``destination`` atomically (temp file, then rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=".incoming-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            _copy_from_location(location, out, day)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _not_found(location: str, day: dt.date) -> CrmSnapshotNotFound:
    return CrmSnapshotNotFound(location, f"CRM snapshot for {day.isoformat()} not found at {location}")


def _copy_from_location(location: str, out: io.BufferedWriter, day: dt.date) -> None:
    scheme = urllib.parse.urlsplit(location).scheme.lower()
    if scheme in ("", "file"):
        path = (
            Path(urllib.parse.unquote(urllib.parse.urlsplit(location).path))
            if scheme == "file"
            else Path(location)
        )
        if not path.is_file():
            raise _not_found(location, day)
        with path.open("rb") as source:
            shutil.copyfileobj(source, out, length=1024 * 1024)
    elif scheme in ("http", "https"):
        try:
            with requests.get(location, stream=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                if response.status_code == 404:
                    raise _not_found(location, day)
                response.raise_for_status()
                for chunk in response.iter_content(chunk_size=1024 * 1024):
                    out.write(chunk)
        except requests.RequestException as error:
            raise CrmSnapshotError(location, f"download failed: {error}") from error
    else:
        _copy_with_fsspec(location, out, day)


def _copy_with_fsspec(location: str, out: io.BufferedWriter, day: dt.date) -> None:
    """Object stores (s3://, az://, abfs://, gs://...) through fsspec, an optional extra."""
    try:
        import fsspec
    except ImportError as error:
        raise CrmSnapshotError(
            location, "reading this URL needs the optional cloud extra: pip install -e '.[cloud]'"
        ) from error
    try:
        with fsspec.open(location, "rb") as source:
            shutil.copyfileobj(source, out, length=1024 * 1024)
    except FileNotFoundError as error:
        raise _not_found(location, day) from error


def parse_snapshot(path: Path, source: str | None = None) -> CrmSnapshot:
    """Parse a landed snapshot; ``source`` is the name used in errors (defaults to the path)."""
    source = source or str(path)
    data = path.read_bytes()
    if not data.strip():
        raise CrmSnapshotError(source, "the file is empty: expected a header row and one row per company")
    text = _decode(data, source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as error:
        raise CrmSnapshotError(source, f"malformed CSV: {error}", line=reader.line_num) from error
    columns = _check_header([name.strip() for name in header], source)
    warnings = []
    extra = [name for name in columns if name not in REQUIRED_COLUMNS]
    if extra:
        message = f"{source}: extra columns ignored: {', '.join(extra)}"
        log.warning(message)
        warnings.append(message)
    index = {name: columns.index(name) for name in REQUIRED_COLUMNS}

    companies: list[CrmCompany] = []
    first_row_of: dict[str, int] = {}
    row_number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise CrmSnapshotError(
                source,
                f"malformed CSV (check the quoting): {error}",
                row=row_number + 1,
                line=reader.line_num,
            ) from error
        if not record or record == [""]:
            continue  # blank line
        row_number += 1
        line = reader.line_num
        if len(record) != len(columns):
            raise CrmSnapshotError(
                source,
                f"expected {len(columns)} fields like the header, found {len(record)} "
                "(check the delimiter and the quoting)",
                row=row_number,
                line=line,
            )
        company_id = record[index["company_id"]].strip()
        if not company_id:
            raise CrmSnapshotError(
                source, "company_id is empty", row=row_number, line=line, column="company_id"
            )
        if company_id in first_row_of:
            raise CrmSnapshotError(
                source,
                f"duplicate company_id {company_id!r} (first seen in row {first_row_of[company_id]})",
                row=row_number,
                line=line,
                column="company_id",
            )
        first_row_of[company_id] = row_number
        raw_timestamp = record[index["last_contact_at"]].strip()
        try:
            last_contact_at = parse_timestamp(raw_timestamp)
        except ValueError as error:
            raise CrmSnapshotError(
                source, str(error), row=row_number, line=line, column="last_contact_at"
            ) from error
        companies.append(
            CrmCompany(
                company_id=company_id,
                company_name=record[index["company_name"]] or None,
                country=record[index["country"]].strip() or None,
                industry_tag=record[index["industry_tag"]].strip() or None,
                last_contact_at=last_contact_at,
            )
        )
    if not companies:
        raise CrmSnapshotError(source, "the file has a header but no rows: a CRM snapshot is never empty")
    return CrmSnapshot(source=source, companies=companies, warnings=warnings)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        row, column = _locate_bad_bytes(data)
        raise CrmSnapshotError(
            source,
            f"not UTF-8: byte 0x{data[error.start]:02x} at offset {error.start} cannot be decoded "
            "(export the file as UTF-8)",
            row=row,
            line=line,
            column=column,
        ) from error


def _locate_bad_bytes(data: bytes) -> tuple[int | None, str | None]:
    """The data row and column of the first undecodable byte, for the error message."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""))
    try:
        header = next(reader)
        for row_number, record in enumerate(reader, start=1):
            for position, value in enumerate(record):
                if "\ufffd" in value:
                    return row_number, header[position].strip() if position < len(header) else None
        for name in header:
            if "\ufffd" in name:
                return None, name.strip()
    except csv.Error:
        pass
    return None, None


def _check_header(columns: list[str], source: str) -> list[str]:
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise CrmSnapshotError(
            source, f"duplicate column names in the header: {', '.join(duplicates)}", line=1
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        hint = " (is the file comma-separated?)" if len(columns) == 1 and columns[0].count(";") else ""
        raise CrmSnapshotError(
            source,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"the header has: {', '.join(columns)}{hint}",
            line=1,
            column=missing[0],
        )
    return columns


def parse_timestamp(text: str) -> dt.datetime | None:
    """An ISO 8601 timestamp as UTC without a zone; naive means UTC; empty means unknown."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot parse {text!r} as an ISO 8601 timestamp (e.g. 2026-11-20T14:03:00Z)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
