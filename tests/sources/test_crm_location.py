"""CRM snapshots in S3 and Azure Blob (docs/contract.md section 2), against real emulators on loopback.

moto's S3 server and Azurite's Blob service are started once per session (tests/cloud_emulators.py);
each test reaches them the way production reaches the clouds: an ``s3://`` / ``az://`` / ``abfs://``
template, and credentials and endpoint from the standard environment variables only. Outside CI a
missing extra or Azurite skips with the reason; with CI=true it fails.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import io
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cloud_emulators import (
    AzuriteEmulator,
    S3Emulator,
    azurite_blob_server,
    azurite_unavailable_reason,
    clean_cloud_environment,
    moto_s3_server,
    require_modules,
    unavailable,
)
from conftest import luigi_settings

from devtools.sample_data import CompanyUniverse, write_crm_csv
from pipeline import datasets, files, redaction
from pipeline.orchestration.tasks import FetchCrmSnapshot
from pipeline.sources import crm_location, crm_snapshot, landing

DAY = dt.date(2026, 11, 20)
BUCKET = "seed-crm-exports"
CONTAINER = "crm-exports"


@pytest.fixture(scope="module")
def crm_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real day's snapshot as the seed's CRM exports it (80 companies, quoting and all)."""
    path = tmp_path_factory.mktemp("crm") / "crm.csv"
    return write_crm_csv(CompanyUniverse(80, 7), DAY, path).read_bytes()


def _landed_files(data_dir: Path) -> list[str]:
    directory = landing.day_dir(data_dir, datasets.CRM, DAY)
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def _assert_landed(data_dir: Path, manifest: dict, source: str, expected: bytes) -> None:
    directory = landing.day_dir(data_dir, datasets.CRM, DAY)
    name = f"crm_{DAY.isoformat()}.csv"
    assert (directory / name).read_bytes() == expected
    assert _landed_files(data_dir) == sorted([name, landing.MANIFEST_NAME])  # no temp file left behind
    assert json.loads((directory / landing.MANIFEST_NAME).read_text()) == manifest
    assert manifest["dataset"] == "crm"
    assert manifest["date"] == DAY.isoformat()
    assert manifest["source"] == source
    assert manifest["file"] == name
    assert manifest["bytes"] == len(expected)
    assert manifest["sha256"] == files.sha256_bytes(expected)
    _, snapshot = crm_snapshot.read_landed_snapshot(data_dir, DAY)
    assert len(snapshot.companies) == len(list(csv.DictReader(io.StringIO(expected.decode("utf-8"))))) > 0


def _assert_not_found(template: str, data_dir: Path) -> None:
    location = crm_location.snapshot_location(template, DAY)
    with pytest.raises(crm_snapshot.CrmSnapshotNotFound) as caught:
        crm_location.land_snapshot(template, data_dir, DAY)
    # word for word what a missing local file says
    assert str(caught.value) == f"{location}: CRM snapshot for {DAY.isoformat()} not found at {location}"
    assert landing.read_manifest(landing.day_dir(data_dir, datasets.CRM, DAY)) is None
    assert _landed_files(data_dir) == []


def _full_text(error: BaseException) -> str:
    """What a log could show: the message and the whole traceback, chained exceptions included."""
    return str(error) + "".join(traceback.format_exception(error))


# -- S3 (moto server) ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Emulator]:
    require_modules("fsspec", "s3fs", "moto", "boto3")
    with moto_s3_server() as server:
        server.client().create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": server.region}
        )
        yield server


@pytest.fixture
def s3(s3_server: S3Emulator, monkeypatch: pytest.MonkeyPatch) -> S3Emulator:
    """The S3 emulator, with its endpoint and credentials in the standard AWS variables only."""
    clean_cloud_environment(monkeypatch)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.mark.parametrize("endpoint_variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_s3_snapshot_lands_byte_for_byte(
    s3: S3Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, crm_bytes: bytes, endpoint_variable: str
) -> None:
    clean_cloud_environment(monkeypatch)
    for name, value in s3.env(endpoint_variable).items():
        monkeypatch.setenv(name, value)
    prefix = f"{endpoint_variable.lower()}/crm"
    s3.client().put_object(Bucket=BUCKET, Key=f"{prefix}/crm_{DAY.isoformat()}.csv", Body=crm_bytes)

    template = f"s3://{BUCKET}/{prefix}/crm_{{date}}.csv"
    manifest = crm_location.land_snapshot(template, tmp_path / "data", DAY)

    _assert_landed(tmp_path / "data", manifest, crm_location.snapshot_location(template, DAY), crm_bytes)


@pytest.mark.parametrize(
    "template",
    [f"s3://{BUCKET}/missing/crm_{{date}}.csv", "s3://no-such-bucket-anywhere/crm/crm_{date}.csv"],
    ids=["missing-object", "missing-bucket"],
)
def test_s3_missing_object_is_crm_snapshot_not_found(s3: S3Emulator, tmp_path: Path, template: str) -> None:
    _assert_not_found(template, tmp_path / "data")


def test_s3_without_credentials_says_which_variables_to_set(
    s3: S3Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(
        crm_snapshot.CrmSnapshotError, match="no AWS credentials found: set AWS_ACCESS_KEY_ID"
    ):
        crm_location.land_snapshot(f"s3://{BUCKET}/crm/crm_{{date}}.csv", tmp_path / "data", DAY)
    assert _landed_files(tmp_path / "data") == []


def test_the_luigi_task_reads_an_s3_template_from_its_configuration(
    s3: S3Emulator, tmp_path: Path, crm_bytes: bytes
) -> None:
    """FetchCrmSnapshot with ``[crm] source = s3://...``: the template is all the configuration needed."""
    import luigi

    s3.client().put_object(Bucket=BUCKET, Key=f"luigi/crm_{DAY.isoformat()}.csv", Body=crm_bytes)
    template = f"s3://{BUCKET}/luigi/crm_{{date}}.csv"
    settings = {
        "crm": {"source": template},
        "pipeline": {
            "data_dir": str(tmp_path / "data"),
            "database_url": f"sqlite:///{tmp_path / 'warehouse.db'}",
        },
    }
    with luigi_settings(settings):
        assert luigi.build([FetchCrmSnapshot(date=DAY)], local_scheduler=True, log_level="WARNING")
    manifest = landing.read_manifest(landing.day_dir(tmp_path / "data", datasets.CRM, DAY))
    _assert_landed(tmp_path / "data", manifest, crm_location.snapshot_location(template, DAY), crm_bytes)


# -- Azure Blob (Azurite) ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteEmulator]:
    require_modules("fsspec", "adlfs", "azure.storage.blob")
    reason = azurite_unavailable_reason()
    if reason:
        unavailable(reason)
    with azurite_blob_server() as server:
        server.service().create_container(CONTAINER)
        yield server


@pytest.fixture
def azurite(azurite_server: AzuriteEmulator, monkeypatch: pytest.MonkeyPatch) -> AzuriteEmulator:
    """Azurite, with its endpoint and key in AZURE_STORAGE_CONNECTION_STRING only."""
    clean_cloud_environment(monkeypatch)
    for name, value in azurite_server.env().items():
        monkeypatch.setenv(name, value)
    return azurite_server


@pytest.mark.parametrize(
    "template",
    [
        f"az://{CONTAINER}/crm/crm_{{date}}.csv",
        f"abfs://{CONTAINER}/crm/crm_{{date}}.csv",
        f"abfs://{CONTAINER}@devstoreaccount1.dfs.core.windows.net/crm/crm_{{date}}.csv",
    ],
    ids=["az", "abfs", "abfs-with-account"],
)
def test_azure_blob_snapshot_lands_byte_for_byte(
    azurite: AzuriteEmulator, tmp_path: Path, crm_bytes: bytes, template: str
) -> None:
    blob = azurite.service().get_blob_client(CONTAINER, f"crm/crm_{DAY.isoformat()}.csv")
    blob.upload_blob(crm_bytes, overwrite=True)

    manifest = crm_location.land_snapshot(template, tmp_path / "data", DAY)

    # the manifest names the container, also in the abfs://container@account form
    _assert_landed(tmp_path / "data", manifest, crm_location.snapshot_location(template, DAY), crm_bytes)


@pytest.mark.parametrize(
    "template",
    [f"az://{CONTAINER}/missing/crm_{{date}}.csv", "az://no-such-container/crm/crm_{date}.csv"],
    ids=["missing-blob", "missing-container"],
)
def test_azure_missing_blob_is_crm_snapshot_not_found(
    azurite: AzuriteEmulator, tmp_path: Path, template: str
) -> None:
    _assert_not_found(template, tmp_path / "data")


def test_azure_wrong_key_fails_without_showing_any_credential(
    azurite: AzuriteEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_key = "V3JvbmdLZXlGb3JUaGVDcm1DbG91ZFRlc3RzT25seU5vdEFTZWNyZXQ="
    connection_string = azurite.connection_string(key=wrong_key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
    azurite.service().get_blob_client(CONTAINER, f"keyed/crm_{DAY.isoformat()}.csv").upload_blob(
        b"company_id\n", overwrite=True
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(crm_snapshot.CrmSnapshotError) as caught:
        crm_location.land_snapshot(f"az://{CONTAINER}/keyed/crm_{{date}}.csv", tmp_path / "data", DAY)
    assert not isinstance(caught.value, crm_snapshot.CrmSnapshotNotFound)
    assert "download failed" in str(caught.value)
    assert "AuthorizationFailure" in str(caught.value) or "authenticate" in str(caught.value)
    shown = _full_text(caught.value) + caplog.text
    for secret in (wrong_key, wrong_key[:20], connection_string):
        assert secret not in shown
    assert _landed_files(tmp_path / "data") == []


def test_azure_without_credentials_says_which_variables_to_set(
    azurite: AzuriteEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(
        crm_snapshot.CrmSnapshotError, match="set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACC"
    ):
        crm_location.land_snapshot(f"az://{CONTAINER}/crm/crm_{{date}}.csv", tmp_path / "data", DAY)


# -- without the extra, other schemes, http(s) ------------------------------------------------------------


def test_without_fsspec_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now raises ImportError
    for template, backend in (("s3://b/crm_{date}.csv", "s3fs"), ("az://c/crm_{date}.csv", "adlfs")):
        with pytest.raises(crm_snapshot.CrmSnapshotError) as caught:
            crm_location.land_snapshot(template, tmp_path / "data", DAY)
        message = str(caught.value)
        assert f"needs fsspec and {backend}" in message
        assert "pip install -e '.[cloud]'" in message


def test_without_the_backend_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    require_modules("fsspec")
    import fsspec

    def backend_missing(location: str, *args, **kwargs):
        raise ImportError("Install adlfs to access Azure Datalake Gen2 and Azure Blob Storage")

    monkeypatch.setattr(fsspec, "open", backend_missing)
    with pytest.raises(crm_snapshot.CrmSnapshotError) as caught:
        crm_location.land_snapshot("abfs://c/crm_{date}.csv", tmp_path / "data", DAY)
    assert "reading abfs:// locations needs fsspec and adlfs" in str(caught.value)
    assert "pip install -e '.[cloud]'" in str(caught.value)


def test_an_unknown_scheme_lists_the_supported_ones(tmp_path: Path) -> None:
    require_modules("fsspec")
    with pytest.raises(
        crm_snapshot.CrmSnapshotError, match=r"unsupported location scheme nosuch://: use a local path"
    ):
        crm_location.land_snapshot("nosuch://bucket/crm_{date}.csv", tmp_path / "data", DAY)


@contextlib.contextmanager
def _http_server(directory: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_snapshot_lands_and_its_query_string_is_never_shown(
    tmp_path: Path, crm_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / f"crm_{DAY.isoformat()}.csv").write_bytes(crm_bytes)
    sas = "sv=2024-01-01&sig=Zm9vYmFyU2VjcmV0U2lnbmF0dXJl"
    caplog.set_level(logging.DEBUG)
    with _http_server(served) as base:
        manifest = crm_location.land_snapshot(f"{base}/crm_{{date}}.csv?{sas}", tmp_path / "data", DAY)
        _assert_landed(tmp_path / "data", manifest, f"{base}/crm_{DAY.isoformat()}.csv", crm_bytes)
        with pytest.raises(crm_snapshot.CrmSnapshotNotFound) as caught:
            crm_location.land_snapshot(f"{base}/missing/crm_{{date}}.csv?{sas}", tmp_path / "other", DAY)
    location = f"{base}/missing/crm_{DAY.isoformat()}.csv"
    assert str(caught.value) == f"{location}: CRM snapshot for {DAY.isoformat()} not found at {location}"
    assert "Zm9vYmFy" not in _full_text(caught.value) + caplog.text


class ScriptedCsvServer:
    """An HTTP server on loopback answering GETs with ``replies`` in order (status, headers), then 200 and
    ``body`` for good; records when each request arrived."""

    def __init__(self, body: bytes, replies: list[tuple[int, dict[str, str]]]) -> None:
        self.body, self.replies, self.times = body, list(replies), []
        scripted = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                scripted.times.append(time.monotonic())
                status, headers = scripted.replies.pop(0) if scripted.replies else (200, {})
                data = scripted.body if status == 200 else f"status {status}".encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def template(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/exports/crm_{{date}}.csv?sig=SECRETSIG"

    def __enter__(self) -> ScriptedCsvServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_http_download_is_retried_after_a_502(tmp_path: Path, crm_bytes: bytes) -> None:
    with ScriptedCsvServer(crm_bytes, [(502, {})]) as server:
        manifest = crm_location.land_snapshot(server.template(), tmp_path / "data", DAY)
    assert len(server.times) == 2
    assert manifest["bytes"] == len(crm_bytes)
    assert (
        landing.day_dir(tmp_path / "data", datasets.CRM, DAY) / manifest["file"]
    ).read_bytes() == crm_bytes


def test_http_download_waits_as_long_as_retry_after_says(tmp_path: Path, crm_bytes: bytes) -> None:
    # backoff 0.01 s: the one-second wait can only come from Retry-After
    retry = crm_location.HttpRetry(attempts=3, backoff_seconds=0.01)
    with ScriptedCsvServer(crm_bytes, [(429, {"Retry-After": "1"})]) as server:
        manifest = crm_location.land_snapshot(server.template(), tmp_path / "data", DAY, http_retry=retry)
    first, second = server.times
    assert 0.95 <= second - first <= 3
    assert manifest["sha256"] == files.sha256_bytes(crm_bytes)


def test_http_download_gives_up_after_its_attempts_with_the_last_status(
    tmp_path: Path, crm_bytes: bytes
) -> None:
    retry = crm_location.HttpRetry(attempts=3, backoff_seconds=0.01)
    with (
        ScriptedCsvServer(crm_bytes, [(503, {})] * 5) as server,
        pytest.raises(crm_snapshot.CrmSnapshotError) as caught,
    ):
        crm_location.land_snapshot(server.template(), tmp_path / "data", DAY, http_retry=retry)
    assert len(server.times) == 3
    message = str(caught.value)
    assert "download failed after 3 attempts: the server still answered HTTP 503" in message
    assert "SECRETSIG" not in _full_text(caught.value)
    assert _landed_files(tmp_path / "data") == []


def test_http_404_is_not_retried(tmp_path: Path, crm_bytes: bytes) -> None:
    with ScriptedCsvServer(crm_bytes, [(404, {})]) as server, pytest.raises(crm_snapshot.CrmSnapshotNotFound):
        crm_location.land_snapshot(server.template(), tmp_path / "data", DAY)
    assert len(server.times) == 1


def test_secrets_are_scrubbed_from_sdk_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    text = redaction.scrub_secrets(
        "GET https://acct.blob.core.windows.net/c/x.csv?sv=1&sig=abc%2Bdef failed; "
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5a2V5a2V5;EndpointSuffix=x; "
        "signature for wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY; https://user:pw@host/p. Try again?"
    )
    for secret in ("abc%2Bdef", "a2V5a2V5a2V5", "wJalrXUtnFEMI", "user:pw"):
        assert secret not in text
    assert "AccountName=acct" in text
    assert text.endswith("Try again?")


def test_redact_location_keeps_the_azure_container() -> None:
    assert (
        redaction.redact_location("abfs://crm@acct.dfs.core.windows.net/x/crm.csv?sig=S")
        == "abfs://crm@acct.dfs.core.windows.net/x/crm.csv"
    )
    assert redaction.redact_location("abfs://crm:pw@acct.dfs.core.windows.net/x.csv") == (
        "abfs://acct.dfs.core.windows.net/x.csv"
    )
    assert redaction.redact_location("s3://bucket/crm/x.csv") == "s3://bucket/crm/x.csv"
    assert redaction.redact_location("https://token@host/x.csv") == "https://host/x.csv"
