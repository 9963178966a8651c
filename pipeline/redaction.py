"""Secrets never reach a log line, an error message or a landed file: every redaction rule lives here.

Secrets come from the environment only (docs/contract.md): the API's client credentials, the SMTP
password, the alert webhook URL and the object stores' credentials. Two kinds of text are cleaned:

* log records (:class:`SecretRedactingFilter`, on every handler of a run's log): the values of the secret
  environment variables and any bearer token become ``***``;
* locations and third-party error messages (:func:`redact_location`, :func:`scrub_secrets`): URL user
  info, query strings (SAS tokens) and ``key=secret`` settings are dropped.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse

# The object stores' credentials, read by their SDKs from the environment.
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
SECRET_ENV_VARS = (
    "PRODUCT_API_CLIENT_ID",
    "PRODUCT_API_CLIENT_SECRET",
    "SMTP_PASSWORD",
    "PIPELINE_ALERT_WEBHOOK_URL",
    *CREDENTIAL_ENV_VARS,
)
# Database passwords: a child process that connects (the report's kernel) keeps them, logs never show them.
DATABASE_PASSWORD_ENV_VARS = ("PGPASSWORD", "MYSQL_PWD")
LOGGED_SECRET_ENV_VARS = (*SECRET_ENV_VARS, *DATABASE_PASSWORD_ENV_VARS)
MASK = "***"
# Azure's abfs://container@account... names a container, not a user, in the user part of the URL.
_AZURE_SCHEMES = ("az", "abfs", "abfss")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_URL_QUERY = re.compile(r"\?[^\s'\"<>)]+")
_SECRET_SETTING = re.compile(
    r"\b(?P<name>AccountKey|SharedAccessSignature|SharedAccessKey|sig|password|secret)=[^;&\s'\"]+",
    re.IGNORECASE,
)


def secret_values(env_vars: tuple[str, ...] = LOGGED_SECRET_ENV_VARS) -> list[str]:
    """The values of the secret variables now set (longest first, so that none is left half-masked)."""
    values = (os.environ.get(name, "") for name in env_vars)
    return sorted((value for value in values if len(value) >= 4), key=len, reverse=True)


def redact_text(text: str, env_vars: tuple[str, ...] = LOGGED_SECRET_ENV_VARS) -> str:
    """``text`` with bearer tokens and the values of the secret environment variables masked."""
    redacted = _BEARER.sub(rf"\1{MASK}", text)
    for secret in secret_values(env_vars):
        redacted = redacted.replace(secret, MASK)
    return redacted


class SecretRedactingFilter(logging.Filter):
    """Masks secrets in the formatted message and traceback of every record; a record is never dropped."""

    def __init__(self, env_vars: tuple[str, ...] = LOGGED_SECRET_ENV_VARS) -> None:
        super().__init__()
        self.env_vars = env_vars

    def filter(self, record: logging.LogRecord) -> bool:
        # The environment is read at each record: a test or a wrapper may set it after start-up.
        message = record.getMessage()
        redacted = redact_text(message, self.env_vars)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact_text(text, self.env_vars), None
        return True


def scrub_secrets(text: str) -> str:
    """``text`` without credentials: URL user info and query strings, key=secret settings, the values of
    the credential environment variables. For error messages that quote a cloud SDK's own message."""
    for value in secret_values(CREDENTIAL_ENV_VARS):
        text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(r"\g<scheme>", text)
    text = _URL_QUERY.sub(f"?{MASK}", text)
    return _SECRET_SETTING.sub(rf"\g<name>={MASK}", text)


class ScrubSecretsFilter(logging.Filter):
    """Scrubs the records of a third-party logger that quotes request URLs (urllib3 at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub_secrets(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def scrub_url_logging() -> None:
    """urllib3 logs each URL at DEBUG, SAS token and all: scrub that logger (once)."""
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(existing, ScrubSecretsFilter) for existing in logger.filters):
        logger.addFilter(ScrubSecretsFilter())


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
