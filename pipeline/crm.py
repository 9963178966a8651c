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
import re
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

# Object stores are read through fsspec and its backends, the optional "cloud" extra (docs/cloud_sources.md).
CLOUD_EXTRA_HINT = "pip install 'company-activity-pipeline[cloud]' (in a checkout: pip install -e '.[cloud]')"
_AZURE_SCHEMES = ("az", "abfs", "abfss")
_FSSPEC_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
SUPPORTED_LOCATIONS = "a local path, file://, http(s)://, s3://, az:// or abfs://"
# Environment variables whose values must never reach an error message: the object stores' credentials.
CREDENTIAL_ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_CLIENT_SECRET",
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_URL_QUERY = re.compile(r"\?[^\s'\"<>)]+")
_SECRET_SETTING = re.compile(
    r"\b(?P<name>AccountKey|SharedAccessSignature|SharedAccessKey|sig|password|secret)=[^;&\s'\"]+",
    re.IGNORECASE,
)


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
    """The location without user info or query string (which may carry credentials or SAS tokens).

    Azure's ``abfs://container@account.dfs.core.windows.net/path`` keeps its container: there the user
    part names the container, not a user (a password beside it is still dropped, and the user with it).
    """
    parts = urllib.parse.urlsplit(location)
    if not parts.scheme or len(parts.scheme) == 1:
        return location
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    if parts.scheme.lower() in _AZURE_SCHEMES and parts.username and parts.password is None:
        netloc = f"{parts.username}@{netloc}"
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
    log.info("CRM snapshot for %s: downloading %s", day.isoformat(), redact_location(location))
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=".incoming-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            _copy_from_location(location, out, day)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def scrub_secrets(text: str) -> str:
    """``text`` without credentials: URL user info and query strings, key=secret settings, the values of
    the credential environment variables. For error messages that quote a cloud SDK's own message."""
    for name in CREDENTIAL_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    text = _URL_USERINFO.sub(r"\g<scheme>", text)
    text = _URL_QUERY.sub("?***", text)
    return _SECRET_SETTING.sub(r"\g<name>=***", text)


def _not_found(location: str, day: dt.date) -> CrmSnapshotNotFound:
    shown = redact_location(location)
    return CrmSnapshotNotFound(shown, f"CRM snapshot for {day.isoformat()} not found at {shown}")


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
        _scrub_url_logging()  # urllib3 logs each URL at DEBUG, SAS token and all
        try:
            with requests.get(location, stream=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                if response.status_code == 404:
                    raise _not_found(location, day)
                response.raise_for_status()
                for chunk in response.iter_content(chunk_size=1024 * 1024):
                    out.write(chunk)
        except requests.RequestException as error:
            # requests quotes the whole URL, SAS token and all: the message is scrubbed, the chain cut.
            raise CrmSnapshotError(
                redact_location(location), f"download failed: {scrub_secrets(str(error))}"
            ) from None
    else:
        _copy_with_fsspec(location, out, day)


def _missing_extra(location: str, scheme: str, error: ImportError) -> CrmSnapshotError:
    backend = _FSSPEC_BACKENDS.get(scheme)
    needs = f"fsspec and {backend}" if backend else "fsspec and its backend for this scheme"
    detail = scrub_secrets(str(error)).rstrip(".")
    return CrmSnapshotError(
        redact_location(location),
        f"reading {scheme}:// locations needs {needs}, from the optional cloud extra: {CLOUD_EXTRA_HINT}"
        + (f" ({detail})" if detail else ""),
    )


def _copy_with_fsspec(location: str, out: io.BufferedWriter, day: dt.date) -> None:
    """Object stores (s3://, az://, abfs://) through fsspec and its backends, the optional cloud extra.

    Credentials come from each cloud's standard environment variables, read by the SDKs themselves
    (docs/cloud_sources.md). No error raised here carries them: SDK messages are scrubbed and the
    exception chain is cut, so a logged traceback cannot quote them either.
    """
    shown = redact_location(location)
    scheme = urllib.parse.urlsplit(location).scheme.lower()
    try:
        import fsspec
    except ImportError as error:
        raise _missing_extra(location, scheme, error) from None
    _quiet_sdk_http_logging()
    try:
        # A new filesystem each time: the credentials and endpoint are read from the environment now,
        # not from whatever an earlier download in this process was built with.
        with fsspec.open(location, "rb", skip_instance_cache=True) as source:
            expected = getattr(source, "size", None)
            copied = 0
            while chunk := source.read(1024 * 1024):
                out.write(chunk)
                copied += len(chunk)
    except FileNotFoundError:
        raise _not_found(location, day) from None
    except ImportError as error:
        raise _missing_extra(location, scheme, error) from None
    except PermissionError as error:
        raise CrmSnapshotError(
            shown,
            "access denied: check the credentials in the environment and that they may read this object"
            f" (S3 also answers so for a missing object when they may not list the bucket): "
            f"{scrub_secrets(str(error))}",
        ) from None
    except Exception as error:
        raise CrmSnapshotError(shown, _describe_fsspec_error(scheme, error)) from None
    if isinstance(expected, int) and copied != expected:
        raise CrmSnapshotError(
            shown, f"download incomplete: received {copied} of {expected} bytes; fetch it again"
        )


def _describe_fsspec_error(scheme: str, error: Exception) -> str:
    message = scrub_secrets(str(error))
    kind = type(error).__name__
    if kind == "ValueError" and message.startswith("Protocol not known"):
        return f"unsupported location scheme {scheme}://: use {SUPPORTED_LOCATIONS}"
    if kind == "NoCredentialsError":
        return (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "and AWS_ENDPOINT_URL for an S3-compatible store"
        )
    if scheme in _AZURE_SCHEMES and "connection_string or account_name" in message:
        return (
            "no Azure Storage credentials found: set AZURE_STORAGE_CONNECTION_STRING, or "
            "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN"
        )
    return f"download failed: {kind}: {message}"


class _ScrubSecretsFilter(logging.Filter):
    """Scrubs the records of a third-party logger that quotes request URLs (urllib3 at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub_secrets(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def _scrub_url_logging() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(existing, _ScrubSecretsFilter) for existing in logger.filters):
        logger.addFilter(_ScrubSecretsFilter())


def _quiet_sdk_http_logging() -> None:
    """The Azure SDK logs every request and its headers at INFO; keep that out of the run logs."""
    for name in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


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
