"""Simulated product-usage API (docs/contract.md section 3), served over real HTTP on loopback.

The pipeline's API client is tested against this server rather than against mocks, so that
connection handling, timeouts, retries, pagination and token refresh are exercised for real. The
server implements the contract exactly and adds switches for the failures production throws at a
client: rate limiting (token bucket), short-lived tokens, and faults injected with fixed
probabilities by a seeded RNG (429, 500/502/503, slow answers, dropped connections, truncated
bodies, invalid JSON, schema drift, valid tokens rejected with 401, a row repeated across pages,
days that are not ready). ``Retry-After`` comes as delta-seconds, or as an HTTP-date on request.

Endpoints:

* ``POST /oauth/token``: OAuth2 client credentials (form-encoded body, or HTTP Basic).
* ``GET /v1/usage/daily?date=&limit=&cursor=``: one page of a day's usage rows (Bearer token).
* ``GET /_sim/stats`` and ``POST /_sim/reset-stats``: counters for tests and benchmarks (no auth;
  not part of the contract and not counted in the stats themselves).

Data comes from :class:`pipeline.sample_data.CompanyUniverse`, so the API agrees with the generated
CRM snapshots of the same ``(companies, seed)``.

Command line (credentials from ``PRODUCT_API_CLIENT_ID`` / ``PRODUCT_API_CLIENT_SECRET``)::

    python -m devtools.simulator --host 127.0.0.1 --port 8765 --companies 500 --seed 42 \\
        [--rate-limit 20] [--token-ttl 3600] [--max-page-size 5000] [--fault-429 0.1 ...]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import email.utils
import hmac
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from devtools.sample_data import CompanyUniverse, UsageColumns

logger = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"
USAGE_PATH = "/v1/usage/daily"
STATS_PATH = "/_sim/stats"
RESET_STATS_PATH = "/_sim/reset-stats"
CLIENT_ID_ENV = "PRODUCT_API_CLIENT_ID"
CLIENT_SECRET_ENV = "PRODUCT_API_CLIENT_SECRET"
DEFAULT_PAGE_SIZE = 1000

# Fault kinds, in the order their probability bands are laid out on [0, 1). New kinds go at the end so
# that the fault sequence of an existing seed stays the same. "401": a valid token is rejected (revoked,
# keys rotated), so the client must fetch a new token once.
FAULT_KINDS = (
    "429",
    "500",
    "502",
    "503",
    "slow",
    "drop",
    "truncated",
    "invalid_json",
    "schema_drift",
    "401",
)
# Not drawn per request but switched on in FaultConfig; counted with the others.
DUPLICATE_ROW_FAULT = "duplicate_row"

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LIMIT_RE = re.compile(r"^[0-9]{1,9}$")
_MAX_BODY_BYTES = 64 * 1024
_DRAIN_BODY_BYTES = 4 * 1024 * 1024
_ERROR_STATUS_TEXT = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}
_INVALID_JSON_BODY = b"<html><body><h1>Service temporarily degraded</h1></body></html>"


def _today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass
class FaultConfig:
    """Failures injected into the usage endpoint, each with a per-request probability.

    One uniform draw per usage request (from an RNG seeded with ``seed``) picks at most one fault,
    so a sequential client sees the same faults on every run.
    """

    seed: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    rate_drop: float = 0.0
    rate_truncated: float = 0.0
    rate_invalid_json: float = 0.0
    rate_schema_drift: float = 0.0
    rate_401: float = 0.0
    slow_seconds: float = 5.0
    retry_after_seconds: int = 1
    # Send Retry-After as an HTTP-date (RFC 9110 allows either form) instead of delta-seconds.
    retry_after_http_date: bool = False
    duplicate_row_across_pages: bool = False
    not_ready_dates: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        rates = self.rates()
        for kind, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind} must be within [0, 1], got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1: {sum(rates.values())}")
        if self.retry_after_seconds < 1:
            raise ValueError("retry_after_seconds must be at least 1")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must not be negative")
        self.not_ready_dates = frozenset(self.not_ready_dates)

    def rates(self) -> dict[str, float]:
        """Probability of each fault kind, keyed as in :data:`FAULT_KINDS`."""
        return {kind: getattr(self, f"rate_{kind}") for kind in FAULT_KINDS}


@dataclass(kw_only=True)
class SimulatorConfig:
    """Everything the simulated API needs; credentials have no default on purpose."""

    client_id: str
    client_secret: str
    companies: int = 500
    seed: int = 42
    token_ttl_seconds: float = 3600
    max_page_size: int = 5000
    rate_limit_per_second: float | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    # Which days are published: None means "every day that is over in UTC" (date < today UTC), as in
    # production; a date publishes every day up to and including it (useful for demos and tests).
    ready_through: dt.date | None = None
    # Off by default; when on, logs method, path and status only (never tokens or the secret).
    log_requests: bool = False
    cache_days: int = 4

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ValueError("client_id and client_secret must be non-empty")
        if self.companies < 1:
            raise ValueError("companies must be at least 1")
        if self.token_ttl_seconds <= 0:
            raise ValueError("token_ttl_seconds must be positive")
        if self.max_page_size < 1:
            raise ValueError("max_page_size must be at least 1")
        if self.rate_limit_per_second is not None and self.rate_limit_per_second <= 0:
            raise ValueError("rate_limit_per_second must be positive (or None for no limit)")
        if self.cache_days < 1:
            raise ValueError("cache_days must be at least 1")

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (
            f"SimulatorConfig(client_id={self.client_id!r}, client_secret='***', companies={self.companies}, "
            f"seed={self.seed}, token_ttl_seconds={self.token_ttl_seconds}, "
            f"max_page_size={self.max_page_size}, rate_limit_per_second={self.rate_limit_per_second}, "
            f"faults={self.faults!r}, ready_through={self.ready_through})"
        )


class _TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, burst ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take one token; returns 0 if granted, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


class _Stats:
    """Thread-safe counters behind ``/_sim/stats``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: dict[str, dict[str, int]] = {}
            self.tokens_issued = 0
            self.rate_limited = 0
            self.faults = dict.fromkeys((*FAULT_KINDS, DUPLICATE_ROW_FAULT), 0)
            self.pages_served = 0
            self.rows_served = 0

    def request(self, endpoint: str, status: int | str) -> None:
        with self.lock:
            per_status = self.requests.setdefault(endpoint, {})
            per_status[str(status)] = per_status.get(str(status), 0) + 1
            if status == 429:
                self.rate_limited += 1

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1

    def token_issued(self) -> None:
        with self.lock:
            self.tokens_issued += 1

    def page(self, rows: int) -> None:
        with self.lock:
            self.pages_served += 1
            self.rows_served += rows

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": {endpoint: dict(codes) for endpoint, codes in self.requests.items()},
                "requests_total": sum(sum(codes.values()) for codes in self.requests.values()),
                "tokens_issued": self.tokens_issued,
                "rate_limited": self.rate_limited,
                "faults_injected": dict(self.faults),
                "pages_served": self.pages_served,
                "rows_served": self.rows_served,
            }


class _BadRequest(ValueError):
    """A request parameter the API rejects with 400."""


def _encode_cursor(day: dt.date, offset: int, page: int) -> str:
    raw = json.dumps({"d": day.isoformat(), "o": offset, "p": page}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.date, int, int]:
    """Inverse of :func:`_encode_cursor`; anything else is a 400, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw.decode())
        day = dt.date.fromisoformat(payload["d"])
        offset, page = payload["o"], payload["p"]
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _BadRequest("invalid cursor") from exc
    if not (isinstance(offset, int) and isinstance(page, int) and offset >= 0 and page >= 2):
        raise _BadRequest("invalid cursor")
    return day, offset, page


class _SimHTTPServer(ThreadingHTTPServer):
    """The HTTP server plus the simulator's shared state (handlers reach it as ``self.server``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: SimulatorConfig) -> None:
        self.config = config
        self.universe = CompanyUniverse(config.companies, config.seed)
        self.stats = _Stats()
        self.stopping = threading.Event()
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._tokens_lock = threading.Lock()
        self._fault_rng = np.random.default_rng(config.faults.seed)
        self._fault_lock = threading.Lock()
        bands = np.cumsum([config.faults.rates()[kind] for kind in FAULT_KINDS])
        self._fault_bands = list(zip(FAULT_KINDS, bands.tolist(), strict=True))
        self._bucket = _TokenBucket(config.rate_limit_per_second) if config.rate_limit_per_second else None
        self._cache: OrderedDict[dt.date, UsageColumns] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    # -- state used by the handler ------------------------------------------------------------------

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._tokens_lock:
            # Forget expired tokens so that a long-running demo does not grow without bound.
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.config.token_ttl_seconds
        self.stats.token_issued()
        return token

    def token_valid(self, token: str) -> bool:
        with self._tokens_lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def revoke_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens.clear()

    def roll_fault(self) -> str | None:
        """Exactly one draw per usage request keeps the fault sequence reproducible."""
        with self._fault_lock:
            u = float(self._fault_rng.random())
        for kind, upper in self._fault_bands:
            if u < upper:
                return kind
        return None

    def rate_limit_wait(self) -> float:
        return self._bucket.take() if self._bucket else 0.0

    def is_ready(self, day: dt.date) -> bool:
        if day in self.config.faults.not_ready_dates:
            return False
        if self.config.ready_through is not None:
            return day <= self.config.ready_through
        return day < _today_utc()

    def usage(self, day: dt.date) -> UsageColumns:
        """The day's rows, generated once and kept in a small LRU (pages are slices of it)."""
        with self._cache_lock:
            columns = self._cache.get(day)
            if columns is None:
                columns = self.universe.usage_columns(day)
                self._cache[day] = columns
                while len(self._cache) > self.config.cache_days:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(day)
            return columns

    # -- connection bookkeeping, so that stop() also ends keep-alive connections -----------------------

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, dropped faults) are normal here; anything else is logged."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        logger.exception("simulator: error while handling a request from %s", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: _SimHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: a paginating client reuses its connection
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    server_version = "ProductUsageSimulator/1.0"
    sys_version = ""

    # -- plumbing -----------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class would print every request line to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.config.log_requests:
            logger.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def _read_body(self) -> bytes | None:
        """Read the request body (always, so the next keep-alive request parses); None if too big."""
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY_BYTES:
            self.close_connection = True
            # Read (and drop) a body of moderate size first: closing a socket with unread data makes the
            # kernel send a reset, and the client would then lose the 413 instead of reading it.
            remaining = length if 0 < length <= _DRAIN_BODY_BYTES else 0
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
            return None
        return self.rfile.read(length)

    def _send(
        self,
        endpoint: str | None,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        if endpoint:
            self.server.stats.request(endpoint, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(
        self, endpoint: str | None, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        self._send(endpoint, status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)

    def _error(
        self,
        endpoint: str | None,
        status: int,
        error: str,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = {"error": error} if message is None else {"error": error, "message": message}
        self._send_json(endpoint, status, payload, headers)

    def _dispatch(self, routes: dict[str, Any]) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            self._error(None, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "invalid_request", "body too large")
            return
        handler = routes.get(path)
        try:
            if handler is not None:
                handler(body)
            elif path in (TOKEN_PATH, USAGE_PATH, STATS_PATH, RESET_STATS_PATH):
                self._error(None, HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed")
            else:
                self._error(None, HTTPStatus.NOT_FOUND, "not_found")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client gave up (e.g. its read timeout hit a slow fault)

    def do_GET(self) -> None:
        self._dispatch({USAGE_PATH: self._usage, STATS_PATH: self._sim_stats})

    def do_POST(self) -> None:
        self._dispatch({TOKEN_PATH: self._token, RESET_STATS_PATH: self._sim_reset})

    # -- /_sim ---------------------------------------------------------------------------------------

    def _sim_stats(self, _body: bytes) -> None:
        self._send_json(None, HTTPStatus.OK, self.server.stats.snapshot())

    def _sim_reset(self, _body: bytes) -> None:
        self.server.stats.reset()
        self._send_json(None, HTTPStatus.OK, {"status": "reset"})

    # -- POST /oauth/token ---------------------------------------------------------------------------

    def _token(self, body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            self._error(
                TOKEN_PATH, 400, "invalid_request", "expected an application/x-www-form-urlencoded body"
            )
            return
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            self._error(TOKEN_PATH, 400, "invalid_request", "malformed form body")
            return
        params = {key: values[-1] for key, values in form.items()}

        grant_type = params.get("grant_type")
        if not grant_type:
            self._error(TOKEN_PATH, 400, "invalid_request", "grant_type is required")
            return
        if grant_type != "client_credentials":
            self._error(TOKEN_PATH, 400, "unsupported_grant_type", "only client_credentials is supported")
            return

        client_id, client_secret = params.get("client_id", ""), params.get("client_secret", "")
        basic = self._basic_credentials()
        if basic is not None:
            client_id, client_secret = basic
        config = self.server.config
        # Constant-time comparisons: the simulator should not teach clients bad habits.
        id_ok = hmac.compare_digest(client_id.encode(), config.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), config.client_secret.encode())
        if not (id_ok and secret_ok):
            self._error(TOKEN_PATH, 401, "invalid_client", "client authentication failed")
            return

        ttl = config.token_ttl_seconds
        self._send_json(
            TOKEN_PATH,
            200,
            {"access_token": self.server.issue_token(), "token_type": "Bearer", "expires_in": int(ttl)},
            headers={"Pragma": "no-cache"},
        )

    def _basic_credentials(self) -> tuple[str, str] | None:
        """RFC 6749 also allows the client credentials in an HTTP Basic header."""
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        client_id, _, client_secret = decoded.partition(":")
        return client_id, client_secret

    # -- GET /v1/usage/daily -------------------------------------------------------------------------

    def _usage(self, _body: bytes) -> None:
        server = self.server
        faults = server.config.faults
        fault = server.roll_fault()  # drawn for every usage request, whatever happens next

        wait = server.rate_limit_wait()
        if wait > 0:
            retry_after = self._retry_after(max(1, math.ceil(wait)))
            self._error(USAGE_PATH, 429, "rate_limited", headers={"Retry-After": retry_after})
            return

        # Transport-level faults happen before the request reaches the application.
        if fault == "drop":
            server.stats.fault(fault)
            server.stats.request(USAGE_PATH, "dropped")
            self.close_connection = True  # finish() closes the socket without a response
            return
        if fault == "429":
            server.stats.fault(fault)
            headers = {"Retry-After": self._retry_after(faults.retry_after_seconds)}
            self._error(USAGE_PATH, 429, "rate_limited", headers=headers)
            return
        if fault in ("500", "502", "503"):
            server.stats.fault(fault)
            self._error(USAGE_PATH, int(fault), _ERROR_STATUS_TEXT[int(fault)])
            return
        if fault == "slow":
            server.stats.fault(fault)
            if server.stopping.wait(faults.slow_seconds):
                self.close_connection = True
                return

        if fault == "401":
            server.stats.fault(fault)
        if fault == "401" or not self._authorized():
            self._error(
                USAGE_PATH,
                401,
                "invalid_token",
                "the access token is missing, invalid or expired",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            return

        try:
            day, limit, offset, page = self._usage_params()
        except _BadRequest as exc:
            self._error(USAGE_PATH, 400, "invalid_request", str(exc))
            return
        if not server.is_ready(day):
            self._error(USAGE_PATH, 404, "not_ready", f"usage for {day.isoformat()} is not published yet")
            return

        columns = server.usage(day)
        if offset > len(columns):
            self._error(USAGE_PATH, 400, "invalid_request", "invalid cursor")
            return
        start = offset
        if faults.duplicate_row_across_pages and page == 2 and offset > 0:
            start = offset - 1  # an off-by-one cursor: page 2 repeats the last row of page 1
            server.stats.fault(DUPLICATE_ROW_FAULT)
        stop = min(start + limit, len(columns))
        next_cursor = _encode_cursor(day, stop, page + 1) if stop < len(columns) else None

        users_key = "active_users"
        if fault == "schema_drift":
            server.stats.fault(fault)
            users_key = "activeUsers"
        # Formatted directly from the day's columns: a million rows must page out quickly.
        body = (
            f'{{"date":"{day.isoformat()}","data":{columns.json_array(start, stop, users_key)},'
            f'"next_cursor":{json.dumps(next_cursor)}}}'
        ).encode()

        if fault == "invalid_json":
            server.stats.fault(fault)
            body = _INVALID_JSON_BODY
        if fault == "truncated":
            server.stats.fault(fault)
            self._send_truncated(body)
            return
        server.stats.page(stop - start)
        self._send(USAGE_PATH, 200, body)

    def _retry_after(self, seconds: int) -> str:
        """``Retry-After`` as delta-seconds, or as an HTTP-date when the config asks for that form."""
        if self.server.config.faults.retry_after_http_date:
            # Rounded up to the next whole second, so that the date is never earlier than intended.
            return email.utils.formatdate(math.ceil(time.time()) + seconds, usegmt=True)
        return str(seconds)

    def _send_truncated(self, body: bytes) -> None:
        """Announce the full body, send half of it, hang up."""
        self.server.stats.request(USAGE_PATH, 200)
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip()) and self.server.token_valid(token.strip())

    def _usage_params(self) -> tuple[dt.date, int, int, int]:
        """(date, limit, offset, page number) from the query string, or _BadRequest."""
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        for name, values in query.items():
            if len(values) > 1:
                raise _BadRequest(f"parameter {name} given more than once")
        params = {name: values[0] for name, values in query.items()}

        raw_date = params.get("date")
        if raw_date is None:
            raise _BadRequest("date is required (YYYY-MM-DD)")
        try:
            if not _DATE_RE.match(raw_date):
                raise ValueError(raw_date)
            day = dt.date.fromisoformat(raw_date)
        except ValueError as exc:
            raise _BadRequest(f"invalid date {raw_date!r}: expected YYYY-MM-DD") from exc

        max_page = self.server.config.max_page_size
        raw_limit = params.get("limit")
        if raw_limit is None:
            limit = min(DEFAULT_PAGE_SIZE, max_page)
        else:
            if not _LIMIT_RE.match(raw_limit) or int(raw_limit) < 1:
                raise _BadRequest(f"invalid limit {raw_limit!r}: expected a positive integer")
            limit = min(int(raw_limit), max_page)  # the server caps the page size

        offset, page = 0, 1
        raw_cursor = params.get("cursor")
        if raw_cursor:
            cursor_day, offset, page = _decode_cursor(raw_cursor)
            if cursor_day != day:
                raise _BadRequest("cursor belongs to another date")
        return day, limit, offset, page


class SimulatorServer:
    """A running simulator: ``base_url``, ``stats()``, ``stop()``; also a context manager."""

    def __init__(self, config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self._httpd = _SimHTTPServer((host, port), config)
        self._thread: threading.Thread | None = None
        bound_host, bound_port = self._httpd.server_address[:2]
        url_host = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
        self.host, self.port = str(bound_host), int(bound_port)
        self.base_url = f"http://{url_host}:{self.port}"

    def start(self) -> SimulatorServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="simulator", daemon=True
        )
        self._thread.start()
        host = self.base_url.split("//", 1)[1].rsplit(":", 1)[0]
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((host, self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def stats(self) -> dict[str, Any]:
        """A copy of the counters served at ``/_sim/stats``."""
        return self._httpd.stats.snapshot()

    def reset_stats(self) -> None:
        self._httpd.stats.reset()

    def revoke_tokens(self) -> None:
        """Invalidate every issued token now (to test a client's refresh on 401)."""
        self._httpd.revoke_tokens()

    def stop(self) -> None:
        """Stop serving, end open (keep-alive or slow) connections and release the port."""
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    """Start a simulator in a daemon thread (port 0: any free port) and return it once it accepts."""
    return SimulatorServer(config, host, port).start()


# -- command line -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.simulator",
        description=f"Simulated product-usage API. Credentials come from {CLIENT_ID_ENV} and "
        f"{CLIENT_SECRET_ENV}.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--companies", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second (token bucket)")
    parser.add_argument("--token-ttl", type=float, default=3600, help="token lifetime in seconds")
    parser.add_argument("--max-page-size", type=int, default=5000)
    parser.add_argument(
        "--ready-through",
        type=dt.date.fromisoformat,
        default=None,
        help="publish every day up to this date (default: every day that is over in UTC)",
    )
    parser.add_argument("--log-requests", action="store_true", help="log method, path and status")
    faults = parser.add_argument_group("faults (per-request probabilities on the usage endpoint)")
    for kind in FAULT_KINDS:
        faults.add_argument(f"--fault-{kind.replace('_', '-')}", type=float, default=0.0, dest=f"rate_{kind}")
    faults.add_argument("--fault-seed", type=int, default=0)
    faults.add_argument("--slow-seconds", type=float, default=5.0)
    faults.add_argument("--retry-after", type=int, default=1, help="Retry-After of injected 429s")
    faults.add_argument(
        "--retry-after-http-date", action="store_true", help="send Retry-After as an HTTP-date"
    )
    faults.add_argument(
        "--duplicate-row", action="store_true", help="page 2 repeats the last row of page 1 (every date)"
    )
    faults.add_argument(
        "--not-ready",
        type=dt.date.fromisoformat,
        action="append",
        default=[],
        metavar="DATE",
        help="answer 404 not_ready for this date (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    client_id = os.environ.get(CLIENT_ID_ENV, "")
    client_secret = os.environ.get(CLIENT_SECRET_ENV, "")
    if not client_id or not client_secret:
        print(
            f"error: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} in the environment "
            "(the credentials clients must present)",
            file=sys.stderr,
        )
        return 2
    try:
        config = SimulatorConfig(
            client_id=client_id,
            client_secret=client_secret,
            companies=args.companies,
            seed=args.seed,
            token_ttl_seconds=args.token_ttl,
            max_page_size=args.max_page_size,
            rate_limit_per_second=args.rate_limit,
            ready_through=args.ready_through,
            log_requests=args.log_requests,
            faults=FaultConfig(
                seed=args.fault_seed,
                slow_seconds=args.slow_seconds,
                retry_after_seconds=args.retry_after,
                retry_after_http_date=args.retry_after_http_date,
                duplicate_row_across_pages=args.duplicate_row,
                not_ready_dates=frozenset(args.not_ready),
                **{f"rate_{kind}": getattr(args, f"rate_{kind}") for kind in FAULT_KINDS},
            ),
        )
        server = serve(config, args.host, args.port)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    if args.log_requests:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"simulator listening on {server.base_url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print("simulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
