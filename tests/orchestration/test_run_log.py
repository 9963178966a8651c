"""Run logs: a file per run, and secrets redacted from every record, tracebacks included."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.orchestration import run_log


@pytest.fixture
def clean_loggers():
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            list(logging.getLogger(name).filters),
            logging.getLogger(name).propagate,
        )
        for name in run_log.RUN_LOGGERS
    }
    yield
    for name, (handlers, filters, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:], logger.filters[:], logger.propagate = handlers, filters, propagate


def test_secrets_and_bearer_tokens_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_API_CLIENT_SECRET", "s3cr3t-value")
    record = logging.LogRecord(
        "pipeline",
        logging.INFO,
        __file__,
        1,
        "secret=%s auth=%s",
        ("s3cr3t-value", "Bearer abc.DEF-123"),
        None,
    )
    assert run_log.SecretRedactingFilter().filter(record)
    assert record.getMessage() == "secret=*** auth=Bearer ***"


def test_a_run_writes_its_own_file_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_loggers
) -> None:
    monkeypatch.setenv("PRODUCT_API_CLIENT_ID", "client-id-123")
    path = run_log.start_run_log(tmp_path / "log")
    log = logging.getLogger("pipeline.sources.product_api")
    log.info("token for client-id-123 fetched")
    try:
        raise RuntimeError("refused for client-id-123")
    except RuntimeError:
        logging.getLogger("luigi-interface").exception("task failed")
    for handler in logging.getLogger("pipeline").handlers:
        handler.flush()

    text = path.read_text()
    assert path.parent == tmp_path / "log" and path.name.startswith("run-")
    assert "token for *** fetched" in text
    assert "RuntimeError: refused for ***" in text
    assert "client-id-123" not in text
