"""Where a day's CRM snapshot comes from, and landing it raw (docs/contract.md, section 2).

The location is a template with ``{date}``: a local path, ``file://``, ``http(s)://``, or an object store
(``s3://``, ``az://``, ``abfs://``) read through fsspec, the optional ``cloud`` extra
(docs/cloud_sources.md). The file is copied byte for byte into ``{data_dir}/raw/crm/date=D/`` and its
manifest (size, checksum, redacted source) is written last. No error raised here carries a credential.

An http(s) download is retried on connection errors, timeouts, 429 and 5xx answers (urllib3's ``Retry`` on
the session's adapter): up to :attr:`HttpRetry.attempts` tries, exponential backoff between them, and a
``Retry-After`` of a 429 or 503 honoured up to :attr:`HttpRetry.max_retry_after_seconds`. A 404 is final:
the file is not there (yet).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline import clock, files
from pipeline.datasets import CRM
from pipeline.redaction import redact_location, scrub_secrets, scrub_url_logging
from pipeline.sources import landing
from pipeline.sources.crm_snapshot import CrmSnapshotError, CrmSnapshotNotFound

log = logging.getLogger(__name__)


DOWNLOAD_TIMEOUT_SECONDS = (10, 120)
# Object stores are read through fsspec and its backends, the optional "cloud" extra (docs/cloud_sources.md).
CLOUD_EXTRA_HINT = "in the project's checkout: .venv/bin/pip install -e '.[cloud]'"
_AZURE_SCHEMES = ("az", "abfs", "abfss")
_FSSPEC_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
SUPPORTED_LOCATIONS = "a local path, file://, http(s)://, s3://, az:// or abfs://"
RETRIED_HTTP_STATUSES = (429, 500, 502, 503, 504)


# A server asking for an hour (Retry-After: 3600) must not stall the night: wait at most this, then try.
MAX_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class HttpRetry:
    """How an http(s) download is retried. urllib3 waits nothing before the second try, then
    ``backoff_seconds`` x 2, x 4, ... (at most 2 minutes); a ``Retry-After`` wins, up to
    :data:`MAX_RETRY_AFTER_SECONDS`."""

    attempts: int = 5
    backoff_seconds: float = 1.0


class _CappedRetry(Retry):
    """urllib3's Retry with ``Retry-After`` capped at :data:`MAX_RETRY_AFTER_SECONDS`."""

    def get_retry_after(self, response):  # type: ignore[no-untyped-def]  (urllib3's signature)
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER_SECONDS)


def http_session(retry: HttpRetry) -> requests.Session:
    """A session whose adapter retries GETs on connection errors, timeouts, 429 and 5xx."""
    policy = _CappedRetry(
        total=retry.attempts - 1,
        backoff_factor=retry.backoff_seconds,
        status_forcelist=RETRIED_HTTP_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer comes back, and says what went wrong
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def snapshot_location(template: str, day: dt.date) -> str:
    """The snapshot's path or URL for ``day``: ``{date}`` in the template becomes YYYY-MM-DD."""
    if "{date}" not in template:
        raise ValueError(f"the CRM source template {template!r} has no {{date}} placeholder")
    return template.replace("{date}", day.isoformat())


def land_snapshot(
    template: str, data_dir: Path, day: dt.date, *, http_retry: HttpRetry | None = None
) -> dict:
    """Download the day's snapshot into the raw landing area and write its manifest last."""
    location = snapshot_location(template, day)
    directory = landing.day_dir(data_dir, CRM, day)
    name = Path(urllib.parse.urlsplit(location).path).name or f"crm_{day.isoformat()}.csv"
    sha256 = download_snapshot(location, directory / name, day, http_retry=http_retry)
    fetched_at = clock.utc_timestamp()
    manifest = {
        "dataset": CRM,
        "date": day.isoformat(),
        "source": redact_location(location),
        "file": name,
        "bytes": (directory / name).stat().st_size,
        "sha256": sha256,
        "fetched_at": fetched_at,
        "landing_id": fetched_at,
    }
    files.write_json_atomic(directory / landing.MANIFEST_NAME, manifest)
    return manifest


class _HashingWriter:
    """A download written through this is hashed as it is written: its checksum without reading the file a
    second time."""

    def __init__(self, out: io.BufferedWriter) -> None:
        self._out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._out.write(data)


def download_snapshot(
    location: str, destination: Path, day: dt.date, *, http_retry: HttpRetry | None = None
) -> str:
    """Copy the snapshot at ``location`` to ``destination`` atomically (temp file, then rename); returns
    the SHA-256 of the bytes landed."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    log.info("CRM snapshot for %s: downloading %s", day.isoformat(), redact_location(location))
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=".incoming-", suffix=".part")
    try:
        local = _local_path(location)
        if local is not None:
            os.close(handle)
            if not local.is_file():
                raise _not_found(location, day)
            # Copied by the kernel (sendfile), then read once for the checksum: a million-row file lands
            # in ~0.06 s, against ~0.18 s through Python's reads and writes.
            shutil.copyfile(local, temp_name)
            sha256 = files.sha256_file(Path(temp_name))
        else:
            with os.fdopen(handle, "wb") as out:
                hashing = _HashingWriter(out)
                _download(location, hashing, day, http_retry or HttpRetry())
            sha256 = hashing.digest.hexdigest()
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return sha256


def _not_found(location: str, day: dt.date) -> CrmSnapshotNotFound:
    shown = redact_location(location)
    return CrmSnapshotNotFound(shown, f"CRM snapshot for {day.isoformat()} not found at {shown}")


def _local_path(location: str) -> Path | None:
    """The file a plain path or ``file://`` URL names; None for any other location."""
    parts = urllib.parse.urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    return Path(location) if scheme == "" else None


def _download(location: str, out: _HashingWriter, day: dt.date, http_retry: HttpRetry) -> None:
    scheme = urllib.parse.urlsplit(location).scheme.lower()
    if scheme in ("http", "https"):
        _download_http(location, out, day, http_retry)
    else:
        _copy_with_fsspec(location, out, day)


def _download_http(location: str, out: _HashingWriter, day: dt.date, http_retry: HttpRetry) -> None:
    scrub_url_logging()  # urllib3 logs each URL at DEBUG, SAS token and all
    after = f" after {http_retry.attempts} attempts" if http_retry.attempts > 1 else ""
    try:
        with (
            http_session(http_retry) as session,
            session.get(location, stream=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
        ):
            if response.status_code == 404:
                raise _not_found(location, day)
            if response.status_code in RETRIED_HTTP_STATUSES:
                raise CrmSnapshotError(
                    redact_location(location),
                    f"download failed{after}: the server still answered HTTP {response.status_code} "
                    f"{response.reason}; try again later",
                )
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=1024 * 1024):
                out.write(chunk)
    except requests.exceptions.RetryError as error:
        raise CrmSnapshotError(
            redact_location(location), f"download failed{after}: {scrub_secrets(str(error))}"
        ) from None
    except requests.RequestException as error:
        # requests quotes the whole URL, SAS token and all: the message is scrubbed, the chain cut.
        raise CrmSnapshotError(
            redact_location(location), f"download failed: {scrub_secrets(str(error))}"
        ) from None


def _missing_extra(location: str, scheme: str, error: ImportError) -> CrmSnapshotError:
    backend = _FSSPEC_BACKENDS.get(scheme)
    needs = f"fsspec and {backend}" if backend else "fsspec and its backend for this scheme"
    detail = scrub_secrets(str(error)).rstrip(".")
    return CrmSnapshotError(
        redact_location(location),
        f"reading {scheme}:// locations needs {needs}, from the optional cloud extra: {CLOUD_EXTRA_HINT}"
        + (f" ({detail})" if detail else ""),
    )


def _copy_with_fsspec(location: str, out: _HashingWriter, day: dt.date) -> None:
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


def _quiet_sdk_http_logging() -> None:
    """The Azure SDK logs every request and its headers at INFO; keep that out of the run logs."""
    for name in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
