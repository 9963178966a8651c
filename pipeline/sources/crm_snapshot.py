"""The CRM daily snapshot parsed strictly (docs/contract.md, section 2).

Parsing is strict and precise rather than forgiving: a bad file fails the day with an error that names
the file, the row and the column, because a silently skipped company would show as churned downstream.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import files
from pipeline.datasets import CRM, CRM_REQUIRED_COLUMNS, TITLES
from pipeline.sources import landing

log = logging.getLogger(__name__)


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


def read_landed_snapshot(data_dir: Path, day: dt.date) -> tuple[dict, CrmSnapshot]:
    """Parse the day's landed snapshot (no download); errors name the original source."""
    manifest, data, source = read_landed_bytes(data_dir, day)
    return manifest, parse_snapshot_bytes(data, source)


def read_landed_bytes(data_dir: Path, day: dt.date) -> tuple[dict, bytes, str]:
    """The day's landed snapshot file, checked against its manifest: the manifest, the bytes, and the name
    errors use for them (the original source and where it was landed)."""
    directory = landing.day_dir(data_dir, CRM, day)
    manifest = landing.read_manifest(directory)
    if manifest is None:
        raise CrmSnapshotError(
            str(directory), f"no complete landing of the CRM snapshot for {day.isoformat()}"
        )
    path = directory / manifest["file"]
    data = path.read_bytes()
    if files.sha256_bytes(data) != manifest["sha256"]:
        raise CrmSnapshotError(
            str(path), "the landed file differs from its manifest checksum; fetch it again"
        )
    return manifest, data, f"{manifest['source']} (landed as {path})"


def parse_snapshot(path: Path, source: str | None = None) -> CrmSnapshot:
    """Parse a landed snapshot; ``source`` is the name used in errors (defaults to the path)."""
    return parse_snapshot_bytes(path.read_bytes(), source or str(path))


def parse_snapshot_bytes(data: bytes, source: str) -> CrmSnapshot:
    """Parse a snapshot's bytes row by row; ``source`` is the name used in errors."""
    if not data.strip():
        raise CrmSnapshotError(source, "the file is empty: expected a header row and one row per company")
    text = _decode(data, source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as error:
        raise CrmSnapshotError(source, f"malformed CSV: {error}", line=reader.line_num) from error
    columns = check_header([name.strip() for name in header], source)
    warnings = extra_column_warnings(columns, source)
    index = {name: columns.index(name) for name in CRM_REQUIRED_COLUMNS}

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
        row, column = _locate_bad_bytes(data, error.start)
        utf16 = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise CrmSnapshotError(
            source,
            f"not UTF-8: byte 0x{data[error.start]:02x} at offset {error.start} cannot be decoded"
            f"{utf16} (export the file as UTF-8)",
            row=row,
            line=line,
            column=column,
        ) from error


def _locate_bad_bytes(data: bytes, offset: int) -> tuple[int | None, str | None]:
    """The data row and column holding the undecodable byte at ``offset``, for the error message.

    The bytes before ``offset`` decode, so parsing them as CSV tells how many records and fields come
    before the bad byte. None where it is not in a data row (the header) or the CSV is broken before it.
    """
    prefix = data[:offset].decode("utf-8-sig")
    try:
        records = list(csv.reader(io.StringIO(prefix, newline="")))
    except csv.Error:
        return None, None
    if len(records) < 2 and not (records and prefix.endswith(("\n", "\r"))):
        return None, None
    header = [name.strip() for name in records[0]]
    if prefix.endswith(("\n", "\r")):
        row_number, position = len(records), 0  # the bad byte starts a new record
    else:
        row_number, position = len(records) - 1, len(records[-1]) - 1
    return row_number, header[position] if position < len(header) else None


def extra_column_warnings(columns: list[str], source: str) -> list[str]:
    """The warning (logged) about header columns the pipeline does not use."""
    extra = [name for name in columns if name not in CRM_REQUIRED_COLUMNS]
    if not extra:
        return []
    message = f"{source}: extra columns ignored: {', '.join(extra)}"
    log.warning(message)
    return [message]


def check_header(columns: list[str], source: str) -> list[str]:
    """The header's (trimmed) column names, refused when one is duplicated or a required one missing."""
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise CrmSnapshotError(
            source, f"duplicate column names in the header: {', '.join(duplicates)}", line=1
        )
    missing = [name for name in CRM_REQUIRED_COLUMNS if name not in columns]
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
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValueError(
            f"cannot parse {text!r} as an ISO 8601 timestamp (e.g. 2026-11-20T14:03:00Z)"
        ) from None
    return value


def crm_header_warnings(data_dir: Path, day: dt.date) -> list[str]:
    """The CRM parser's warning about extra columns, read again from the landed file's header row."""
    directory = landing.day_dir(data_dir, CRM, day)
    manifest = landing.read_manifest(directory)
    if manifest is None:
        return []
    path = directory / manifest["file"]
    with path.open("rb") as handle:
        first = handle.readline(1024 * 1024)
    try:
        header = next(csv.reader(io.StringIO(first.decode("utf-8-sig"))), [])
    except (UnicodeDecodeError, csv.Error):
        return []
    extra = [name.strip() for name in header if name.strip() not in CRM_REQUIRED_COLUMNS]
    if not extra:
        return []
    return [
        f"{TITLES[CRM]} {day.isoformat()}: extra columns ignored: {', '.join(extra)} "
        f"({manifest.get('source', path)})"
    ]
