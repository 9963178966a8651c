"""The product-usage API: a client that survives a real API, raw landing of every page, and replay.

docs/contract.md section 3. One day's fetch walks the cursor pages, lands each page's bytes unchanged
(atomically, beside a small record of the cursor that produced it) *before* parsing it, and writes the
manifest last.
A fetch that dies half way resumes from the last landed page; a day with a manifest is replayed from
disk without calling the API. Client id, secret and token never reach a log, an exception or a file.

Choices where docs/contract.md section 3 is silent:

* Retries: 5xx, timeouts, dropped connections and truncated bodies are retried with exponential backoff
  and jitter, at most ``max_attempts`` failures per request. A 429 waits what ``Retry-After`` says
  (delta-seconds or an HTTP-date; when it is missing or already past, the backoff instead) and does not
  count as a failure. ``retry_budget_seconds`` bounds the whole day: time slept before retries plus the
  time lost in failed attempts (a timeout costs its read timeout). When either bound is hit the day fails
  with :class:`ProductApiUnavailableError` naming the page, the attempts and the problems seen.
* Tokens: renewed 10% of their lifetime (at most 60 s) before they expire, and taken afresh for every
  attempt, so a retry after a long wait does not carry a dead token. One 401 gets a new token; a
  second 401 in a row is :class:`ProductApiAuthError`.
* A bad page (JSON, fields, types) or a duplicate ``company_id`` fails the day with
  :class:`UsagePageError`; the raw page stays. On the next run a landed page that does not parse is set
  aside (``*.rejected-<time>``) and fetched again with its recorded cursor; a duplicate across intact
  pages fails again without calling the API (``RunDaily --refresh`` fetches the day anew).
* ``404 not_ready`` is :class:`DayNotReadyError`, not retried: the scheduler runs the day again later.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from pipeline import clock

log = logging.getLogger(__name__)


class ProductApiError(RuntimeError):
    """The usage for a day could not be fetched."""


class ProductApiAuthError(ProductApiError):
    """The API refused our credentials or our freshly issued token."""


class DayNotReadyError(ProductApiError):
    """The API has not published the day yet (404 not_ready): retry later, nothing is wrong."""


class ProductApiUnavailableError(ProductApiError):
    """Retries were exhausted (5xx, timeouts, connection errors or rate limits)."""


class UsagePageError(ProductApiError):
    """A landed page is not a valid usage page; the raw file stays for inspection."""


class LandingIntegrityError(ProductApiError):
    """A landed page no longer matches the checksum recorded for it."""


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    page_size: int = 1000
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 6
    retry_budget_seconds: float = 300.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    requests_per_second: float = 0.0  # 0: no client-side limit


@dataclass
class FetchStats:
    """What happened during one day's fetch, for logs and error messages."""

    requests: int = 0
    pages_fetched: int = 0
    pages_resumed: int = 0
    rows: int = 0
    token_requests: int = 0
    retries: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or transport problem) per response
    waited_seconds: float = 0.0  # sleeping before retries
    retry_seconds: float = 0.0  # sleeping before retries plus the time lost in the failed attempts


class RateLimiter:
    """Spaces requests evenly so a client-side limit keeps the server's 429s rare."""

    def __init__(self, requests_per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self.clock = clock
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.clock()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return default
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - clock.now_utc()).total_seconds())


class ProductApiClient:
    """OAuth2 client-credentials, retries, backoff and rate limiting around one ``requests.Session``."""

    def __init__(
        self,
        settings: ApiSettings,
        client_id: str,
        client_secret: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._client_id = client_id
        self._client_secret = client_secret
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.session = requests.Session()
        self.rate_limiter = RateLimiter(settings.requests_per_second)
        self.sleep = sleep
        self.stats = FetchStats()

    def __repr__(self) -> str:  # never show credentials, even in a debugger or a traceback
        return f"ProductApiClient(base_url={self.settings.base_url!r})"

    def close(self) -> None:
        self.session.close()

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.settings.connect_timeout, self.settings.read_timeout)

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    # -- token ---------------------------------------------------------------------------------------

    def _bearer(self) -> str:
        # Refresh a little before expiry so that a page request never carries a token that dies in flight.
        if self._token is None or time.monotonic() >= self._token_expires_at:
            self._refresh_token()
        return f"Bearer {self._token}"

    def _refresh_token(self) -> None:
        self.stats.token_requests += 1
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        response = self._send("POST", "/oauth/token", what="the token request", authorized=False, data=form)
        if response.status_code in (400, 401, 403):
            raise ProductApiAuthError(
                f"the product API refused the client credentials (HTTP {response.status_code} from "
                f"{self._url('/oauth/token')}): check PRODUCT_API_CLIENT_ID and PRODUCT_API_CLIENT_SECRET"
            )
        if response.status_code != 200:
            raise ProductApiError(f"token request failed with HTTP {response.status_code}")
        try:
            body = response.json()
            token = body["access_token"]
            expires_in = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as error:
            raise ProductApiAuthError(
                "the token response is not the expected JSON (access_token, expires_in)"
            ) from error
        if not isinstance(token, str) or not token:
            raise ProductApiAuthError("the token response carries no access_token")
        margin = min(60.0, expires_in * 0.1)
        self._token = token
        self._token_expires_at = time.monotonic() + max(0.0, expires_in - margin)

    # -- requests ------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        authorized: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries on 429, 5xx and transport errors; returns any other response.

        Bounded by ``max_attempts`` failures per request and by ``retry_budget_seconds`` for the whole
        fetch: the time spent waiting before retries plus the time lost in the attempts that failed.
        The bearer token is taken afresh for every attempt, so a token that expires while we back off
        is renewed before the retry instead of earning a 401.
        """
        seen: Counter = Counter()
        attempt = 0
        while True:
            request_headers = dict(headers or {})
            if authorized:
                request_headers["Authorization"] = self._bearer()
            self.rate_limiter.wait()
            self.stats.requests += 1
            started = time.monotonic()
            try:
                response = self.session.request(
                    method, self._url(path), timeout=self.timeout, headers=request_headers, **kwargs
                )
                _ = response.content  # read the whole body now: a truncated body is a transport error
            except requests.Timeout:
                problem, delay = "timeout", None
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as error:
                problem, delay = _transport_problem(error), None
            else:
                self.stats.statuses[str(response.status_code)] += 1
                if response.status_code == 429:
                    problem = "HTTP 429"
                    delay = parse_retry_after(response.headers.get("Retry-After"), default=-1.0)
                    if delay <= 0:  # missing, unreadable or already past: back off rather than spin
                        delay = None
                elif response.status_code >= 500:
                    problem, delay = f"HTTP {response.status_code}", None
                else:
                    return response
            if not problem.startswith("HTTP"):
                self.stats.statuses[problem] += 1
            lost = time.monotonic() - started
            seen[problem] += 1
            self.stats.retries[problem] += 1
            attempt += 1
            if delay is None:
                delay = min(
                    self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2 ** (attempt - 1)
                ) * random.uniform(0.5, 1.0)
            # A 429 says exactly when to come back; it does not count against the attempts for failures.
            failures = sum(count for name, count in seen.items() if name != "HTTP 429")
            self.stats.retry_seconds += lost
            spent = self.stats.retry_seconds
            budget = self.settings.retry_budget_seconds
            if failures >= self.settings.max_attempts or spent + delay > budget:
                summary = ", ".join(f"{name} x{count}" for name, count in seen.most_common())
                if failures >= self.settings.max_attempts:
                    reason = f"max_attempts={self.settings.max_attempts} failures reached"
                else:
                    reason = (
                        f"the retry budget of {budget:g}s is spent ({spent:.1f}s used, the next retry "
                        f"would wait {delay:.1f}s more)"
                    )
                raise ProductApiUnavailableError(
                    f"{what}: gave up after {attempt} attempts, {reason}; seen: {summary}"
                )
            log.warning("%s: %s, retrying in %.2fs (attempt %d)", what, problem, delay, attempt + 1)
            self.stats.waited_seconds += delay
            self.stats.retry_seconds += delay
            self.sleep(delay)

    def get_usage_page(self, day: dt.date, cursor: str | None, page_number: int) -> bytes:
        """The raw body of one usage page (HTTP 200). Refreshes the token once on a 401."""
        params: dict[str, Any] = {"date": day.isoformat(), "limit": self.settings.page_size}
        if cursor:
            params["cursor"] = cursor
        what = f"usage page {page_number} of {day.isoformat()}"
        for token_attempt in range(2):
            response = self._send(
                "GET",
                "/v1/usage/daily",
                what=what,
                params=params,
                headers={"Accept": "application/json"},
            )
            if response.status_code == 401:
                if token_attempt == 0:
                    log.info("%s: token rejected (401), fetching a new token once", what)
                    self._token = None
                    continue
                raise ProductApiAuthError(
                    f"{what}: the API rejected a freshly issued token (HTTP 401 twice in a row: "
                    "the token was refreshed once after the first 401); check the client's permissions"
                )
            if response.status_code == 404 and _error_code(response) == "not_ready":
                raise DayNotReadyError(
                    f"product usage for {day.isoformat()} is not published yet (404 not_ready): "
                    "the day is not over or the data is late; run again later"
                )
            if response.status_code != 200:
                raise ProductApiError(
                    f"{what}: unexpected HTTP {response.status_code}: {response.text[:200]!r}"
                )
            return response.content
        raise AssertionError("unreachable")  # pragma: no cover


def _transport_problem(error: Exception) -> str:
    text = str(error)
    if "IncompleteRead" in text or "incomplete" in text.lower() or "Connection broken" in text:
        return "truncated response"
    if "RemoteDisconnected" in text or "reset" in text.lower() or "aborted" in text.lower():
        return "connection dropped"
    return "connection error"


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
