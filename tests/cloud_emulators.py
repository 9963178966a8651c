"""Object-store emulators on loopback for the cloud-source tests: moto's S3 server and Azurite's Blob service.

Both are real HTTP servers on 127.0.0.1 and a free port, reached by the real SDKs (s3fs/botocore,
adlfs/azure-storage-blob) through each cloud's standard environment variables, as in production:

- S3: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_DEFAULT_REGION``; ``moto.server.ThreadedMotoServer`` in this process (the ``cloud`` extra).
- Azure Blob: ``AZURE_STORAGE_CONNECTION_STRING`` with a ``BlobEndpoint``; ``azurite-blob`` from the npm
  registry as a child process, installed by ``.ci/install-azurite.sh`` into ``var/tools/azurite``.

Outside CI a missing emulator skips its tests with the reason and the install command; with ``CI=true`` it
fails them instead, so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
AZURITE_INSTALL_COMMAND = "bash .ci/install-azurite.sh"
CLOUD_EXTRA_COMMAND = "pip install -e '.[cloud]'"
AZURITE_LOCAL_BIN = PROJECT_ROOT / "var" / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
STARTUP_TIMEOUT_SECONDS = 30.0

# Azurite's one account and its key: public, documented by Microsoft for the emulator, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# Every variable through which a developer's own cloud set-up could leak into a test.
CLOUD_ENV_PREFIXES = ("AWS_", "AZURE_")


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when CI=true: CI must run every cloud test."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: the cloud-source tests must not be skipped in CI", pytrace=False)
    pytest.skip(reason)


def missing_modules(*modules: str) -> list[str]:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_modules(*modules: str) -> None:
    missing = missing_modules(*modules)
    if missing:
        unavailable(f"{', '.join(missing)} not installed (the cloud extra: {CLOUD_EXTRA_COMMAND})")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_cloud_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop the developer's own AWS/Azure settings and keep botocore off the network and config files."""
    for name in list(os.environ):
        if name.startswith(CLOUD_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254 for credentials
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


# -- S3: moto in server mode --------------------------------------------------------------------------------


@dataclass
class S3Emulator:
    endpoint: str
    access_key_id: str = "AKIACRMTESTACCESSKEY"
    secret_access_key: str = "crm-test-secret-access-key-5d1e"  # recognisable: tests grep errors for it
    region: str = "eu-central-1"

    def env(self, endpoint_variable: str = "AWS_ENDPOINT_URL") -> dict[str, str]:
        return {
            endpoint_variable: self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3Emulator]:
    """moto's S3 (all of moto's services, in fact) on 127.0.0.1 and a free port, in a thread."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_for_port(port, "moto server", lambda: None)
        yield S3Emulator(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


# -- Azure Blob: Azurite -------------------------------------------------------------------------------------


def azurite_blob_command() -> str | None:
    """``$AZURITE_BLOB_BIN``, else the project-local install of .ci/install-azurite.sh, else PATH."""
    configured = os.environ.get("AZURITE_BLOB_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if AZURITE_LOCAL_BIN.is_file() and os.access(AZURITE_LOCAL_BIN, os.X_OK):
        return str(AZURITE_LOCAL_BIN)
    return shutil.which("azurite-blob")


def azurite_unavailable_reason() -> str | None:
    command = azurite_blob_command()
    if command is None:
        if os.environ.get("AZURITE_BLOB_BIN"):
            return f"AZURITE_BLOB_BIN={os.environ['AZURITE_BLOB_BIN']} is not an executable file"
        return (
            f"Azurite is not installed (looked for $AZURITE_BLOB_BIN, {AZURITE_LOCAL_BIN} and azurite-blob "
            f"on PATH): run {AZURITE_INSTALL_COMMAND}"
        )
    if shutil.which("node") is None:
        return f"node is not installed, and Azurite ({command}) runs on it"
    return None


@dataclass
class AzuriteEmulator:
    port: int
    account: str = AZURITE_ACCOUNT
    key: str = AZURITE_KEY

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    def connection_string(self, key: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={key or self.key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string())


@contextlib.contextmanager
def azurite_blob_server() -> Iterator[AzuriteEmulator]:
    """``azurite-blob`` on 127.0.0.1 and a free port, its data in a temporary folder, telemetry off."""
    command = azurite_blob_command()
    assert command is not None, azurite_unavailable_reason()
    with tempfile.TemporaryDirectory(prefix="azurite-") as workspace:
        port = free_port()
        output_path = Path(workspace) / "azurite.out"
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                [
                    command,
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(port),
                    "--location",
                    str(Path(workspace) / "data"),
                    "--silent",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",  # otherwise it posts usage data to Azure: no traffic off loopback
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=workspace,
                start_new_session=True,
            )

        def check_alive() -> None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"azurite-blob exited with code {process.returncode} before listening: "
                    f"{output_path.read_text(errors='replace').strip()}"
                )

        try:
            _wait_for_port(port, "azurite-blob", check_alive)
            yield AzuriteEmulator(port=port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_for_port(port: int, name: str, check_alive) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        check_alive()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT_SECONDS:.0f} s"
                ) from None
            time.sleep(0.05)
