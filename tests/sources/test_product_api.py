"""The product-usage API client, landing, resume and replay, over real HTTP on loopback (no mocks).

Every fault the simulator can inject has a test that states the outcome: either the day lands complete
and its rows equal a fault-free run, or the fetch fails with a specific error class and a message that
names the page, the first offending row, the statuses seen and the attempts. A few tests run the Luigi
graph in-process to show that a failing day leaves the analytics table as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import luigi.configuration
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import (
    API_CLIENT_ID,
    API_CLIENT_SECRET,
    WORLD_COMPANIES,
    WORLD_SEED,
    PipelineWorld,
    query,
    table_rows,
)
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from devtools.sample_data import CompanyUniverse
from devtools.simulator import FaultConfig, SimulatorConfig, SimulatorServer, serve
from pipeline import FetchProductUsage, RunDaily, StageProductUsage, files
from pipeline.datasets import USAGE as DATASET
from pipeline.sources import landing
from pipeline.sources.product_api import (
    ApiSettings,
    DayNotReadyError,
    ProductApiAuthError,
    ProductApiClient,
    ProductApiError,
    ProductApiUnavailableError,
    UsagePageError,
    parse_retry_after,
)
from pipeline.sources.usage_landing import fetch_day, read_landed_usage, read_landed_usage_table
from pipeline.sources.usage_pages import DuplicateTracker, parse_usage_page

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "cid-usage-7f3a9e", "csecret-never-shown-51c0d2"
COMPANIES, SEED = 400, 5
DAY = dt.date(2026, 11, 20)
PAGE = 40  # 319 rows on DAY: 8 pages


def expected_rows(day: dt.date = DAY) -> list[tuple[str, int, int]]:
    return [
        (row["company_id"], row["active_users"], row["events"])
        for row in CompanyUniverse(COMPANIES, SEED).usage_rows(day)
    ]


def pages_of(day: dt.date = DAY, page: int = PAGE) -> int:
    return -(-len(expected_rows(day)) // page)


def simulator(fault_seed: int = 1, *, faults: dict[str, Any] | None = None, **config: Any) -> SimulatorServer:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "companies": COMPANIES,
        "seed": SEED,
        "ready_through": dt.date(2030, 12, 31),
        "faults": FaultConfig(seed=fault_seed, **(faults or {})),
    }
    values.update(config)
    return serve(SimulatorConfig(**values))


def client_for(
    sim: SimulatorServer, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET, **settings: Any
) -> ProductApiClient:
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "page_size": PAGE,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "max_attempts": 4,
        "retry_budget_seconds": 20.0,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
    }
    values.update(settings)
    return ProductApiClient(ApiSettings(**values), client_id, client_secret)


def day_dir(data_dir: Path, day: dt.date = DAY) -> Path:
    return landing.day_dir(data_dir, DATASET, day)


def usage_statuses(sim: SimulatorServer) -> dict[str, int]:
    return sim.stats()["requests"].get("/v1/usage/daily", {})


def first_faulty_request(fault_seed: int, rate: float) -> int:
    """Index (0-based) of the first usage request hit when one fault kind has ``rate``: the simulator
    draws one uniform number per usage request from ``default_rng(fault_seed)``."""
    draws = np.random.default_rng(fault_seed).random(1000)
    return int(np.flatnonzero(draws < rate)[0])


@pytest.fixture(scope="module")
def fault_free_rows(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, int, int]]:
    """The rows of a fault-free fetch, the yardstick for every fault that must be survived."""
    data_dir = tmp_path_factory.mktemp("fault-free")
    with simulator() as sim:
        client = client_for(sim)
        manifest = fetch_day(client, DAY, data_dir)
    _, rows = read_landed_usage(data_dir, DAY)
    assert rows == expected_rows()
    assert manifest["page_count"] == pages_of() and manifest["row_count"] == len(rows)
    return rows


# -- faults the client survives: the day lands complete, rows equal a fault-free run -----------------------

SURVIVABLE = [
    # (fault kind, simulator fault settings, client settings, the problem the client records)
    ("429", {"rate_429": 0.25}, {}, "HTTP 429"),
    ("500", {"rate_500": 0.25}, {}, "HTTP 500"),
    ("502", {"rate_502": 0.25}, {}, "HTTP 502"),
    ("503", {"rate_503": 0.25}, {}, "HTTP 503"),
    ("slow", {"rate_slow": 0.25, "slow_seconds": 1.0}, {"read_timeout": 0.25}, "timeout"),
    ("drop", {"rate_drop": 0.25}, {}, "connection dropped"),
    ("truncated", {"rate_truncated": 0.25}, {}, "truncated response"),
    ("401", {"rate_401": 0.25}, {}, None),  # a token rejected once is replaced, not retried blindly
]


@pytest.mark.parametrize(
    ("kind", "faults", "settings", "problem"), SURVIVABLE, ids=[case[0] for case in SURVIVABLE]
)
def test_a_transient_fault_is_survived_and_the_day_lands_as_without_faults(
    tmp_path: Path,
    fault_free_rows: list,
    kind: str,
    faults: dict,
    settings: dict,
    problem: str | None,
) -> None:
    with simulator(faults=faults) as sim:
        client = client_for(sim, **settings)
        manifest = fetch_day(client, DAY, tmp_path)
        injected = sim.stats()["faults_injected"][kind]
        tokens_issued = sim.stats()["tokens_issued"]

    assert injected >= 1, "the fault must really have happened"
    _, rows = read_landed_usage(tmp_path, DAY)
    assert rows == fault_free_rows
    _, table = read_landed_usage_table(tmp_path, DAY)  # what staging replays: the same rows, as columns
    assert list(zip(*table.to_pydict().values(), strict=True)) == fault_free_rows
    assert manifest["page_count"] == pages_of() and manifest["row_count"] == len(fault_free_rows)
    assert sorted(path.name for path in day_dir(tmp_path).glob("page-?????.json")) == [
        f"page-{n:05d}.json" for n in range(1, pages_of() + 1)
    ]
    if problem is None:
        assert tokens_issued == 1 + injected and client.stats.token_requests == tokens_issued
    else:
        assert client.stats.retries[problem] == injected


def test_every_transient_fault_at_once_over_many_pages(tmp_path: Path) -> None:
    faults = {
        "rate_429": 0.02,
        "rate_500": 0.05,
        "rate_502": 0.05,
        "rate_503": 0.05,
        "rate_slow": 0.03,
        "slow_seconds": 0.6,
        "rate_drop": 0.05,
        "rate_truncated": 0.05,
        "rate_401": 0.05,
    }
    with simulator(fault_seed=4, faults=faults) as sim:
        client = client_for(sim, page_size=8, read_timeout=0.2, max_attempts=6)
        manifest = fetch_day(client, DAY, tmp_path)
        stats = sim.stats()
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()
    assert manifest["page_count"] == pages_of(page=8)
    assert sum(stats["faults_injected"].values()) >= 10


# -- faults that fail the day: specific error class, a message that says what happened --------------------


@pytest.mark.parametrize(
    ("kind", "faults", "settings", "seen"),
    [
        ("500", {"rate_500": 1.0}, {}, "HTTP 500 x4"),
        ("502", {"rate_502": 1.0}, {}, "HTTP 502 x4"),
        ("503", {"rate_503": 1.0}, {}, "HTTP 503 x4"),
        ("slow", {"rate_slow": 1.0, "slow_seconds": 0.8}, {"read_timeout": 0.15}, "timeout x4"),
        ("drop", {"rate_drop": 1.0}, {}, "connection dropped x4"),
        ("truncated", {"rate_truncated": 1.0}, {}, "truncated response x4"),
    ],
)
def test_a_persistent_fault_fails_after_max_attempts_naming_page_statuses_and_attempts(
    tmp_path: Path, kind: str, faults: dict, settings: dict, seen: str
) -> None:
    with simulator(faults=faults) as sim, pytest.raises(ProductApiUnavailableError) as caught:
        fetch_day(client_for(sim, **settings), DAY, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"usage page 1 of {DAY.isoformat()}: gave up after 4 attempts"), message
    assert "max_attempts=4" in message and f"seen: {seen}" in message, message
    assert not (day_dir(tmp_path) / landing.MANIFEST_NAME).exists()


def test_a_later_page_that_keeps_failing_is_named_and_earlier_pages_stay_landed(tmp_path: Path) -> None:
    # Fault seed 2 at rate 0.5: find the first page whose every attempt fails, as the simulator will.
    draws = np.random.default_rng(2).random(1000) < 0.5
    request, page = 0, 1
    while True:
        failures = 0
        while failures < 3 and draws[request]:
            failures, request = failures + 1, request + 1
        if failures == 3:
            break
        request, page = request + 1, page + 1
    with (
        simulator(fault_seed=2, faults={"rate_503": 0.5}) as sim,
        pytest.raises(ProductApiUnavailableError) as e,
    ):
        fetch_day(client_for(sim, max_attempts=3), DAY, tmp_path)
    assert str(e.value).startswith(f"usage page {page} of {DAY.isoformat()}: gave up after 3 attempts")
    assert "HTTP 503 x3" in str(e.value)
    assert len(list(day_dir(tmp_path).glob("page-?????.meta.json"))) == page - 1
    assert not (day_dir(tmp_path) / landing.MANIFEST_NAME).exists()


def test_429_for_ever_fails_when_the_retry_budget_is_spent(tmp_path: Path) -> None:
    with simulator(faults={"rate_429": 1.0, "retry_after_seconds": 1}) as sim:
        client = client_for(sim, retry_budget_seconds=1.5)
        started = time.monotonic()
        with pytest.raises(ProductApiUnavailableError) as caught:
            fetch_day(client, DAY, tmp_path)
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith(f"usage page 1 of {DAY.isoformat()}: gave up after 2 attempts"), message
    assert "the retry budget of 1.5s is spent" in message and "seen: HTTP 429 x2" in message, message
    assert 0.9 <= elapsed < 1.95, "it waited the one Retry-After that fits in the budget, not the next"


def test_retry_budget_counts_the_time_lost_in_failed_attempts(tmp_path: Path) -> None:
    with simulator(faults={"rate_slow": 1.0, "slow_seconds": 1.0}) as sim:
        client = client_for(sim, read_timeout=0.3, max_attempts=100, retry_budget_seconds=0.8)
        with pytest.raises(ProductApiUnavailableError) as caught:
            fetch_day(client, DAY, tmp_path)
    assert "the retry budget of 0.8s is spent" in str(caught.value)
    assert "seen: timeout x" in str(caught.value)
    assert client.stats.requests <= 4


def test_invalid_json_fails_naming_the_page_and_keeps_the_raw_page(
    tmp_path: Path, fault_free_rows: list
) -> None:
    rate = 0.2
    page = first_faulty_request(fault_seed=5, rate=rate) + 1
    assert page >= 2, "the fault seed is chosen so that a later page is hit"
    with (
        simulator(fault_seed=5, faults={"rate_invalid_json": rate}) as sim,
        pytest.raises(UsagePageError) as e,
    ):
        fetch_day(client_for(sim), DAY, tmp_path)
    raw = day_dir(tmp_path) / f"page-{page:05d}.json"
    assert str(e.value).startswith(f"usage page {page} of {DAY.isoformat()} ({raw}): not valid JSON")
    assert "the raw page is kept for inspection" in str(e.value)
    assert raw.read_bytes().startswith(b"<html>")
    assert not (day_dir(tmp_path) / landing.MANIFEST_NAME).exists()

    # The next run, the API healthy again: the bad page is set aside (kept), only it and later pages are
    # fetched again, and the day lands as a fault-free run does.
    with simulator() as sim:
        client = client_for(sim)
        fetch_day(client, DAY, tmp_path)
        served = sim.stats()["pages_served"]
    assert client.stats.pages_resumed == page - 1 and served == pages_of() - (page - 1)
    assert read_landed_usage(tmp_path, DAY)[1] == fault_free_rows
    rejected = list(day_dir(tmp_path).glob(f"page-{page:05d}.json.rejected-*"))
    assert len(rejected) == 1 and rejected[0].read_bytes().startswith(b"<html>")


def test_schema_drift_fails_naming_the_page_and_the_first_offending_row(tmp_path: Path) -> None:
    rate = 0.2
    page = first_faulty_request(fault_seed=5, rate=rate) + 1
    with (
        simulator(fault_seed=5, faults={"rate_schema_drift": rate}) as sim,
        pytest.raises(UsagePageError) as e,
    ):
        fetch_day(client_for(sim), DAY, tmp_path)
    raw = day_dir(tmp_path) / f"page-{page:05d}.json"
    assert str(e.value) == (
        f"usage page {page} of {DAY.isoformat()} ({raw}), row 1: missing field(s) active_users; "
        "unexpected field(s) activeUsers (schema drift?)"
    )
    assert b'"activeUsers"' in raw.read_bytes()
    # The page after it may have been asked for while it was checked, but nothing after it lands.
    assert len(list(day_dir(tmp_path).glob("page-?????.meta.json"))) == page
    assert not (day_dir(tmp_path) / landing.MANIFEST_NAME).exists()


def test_a_duplicate_row_across_pages_fails_naming_the_id_and_both_pages(tmp_path: Path) -> None:
    with simulator(faults={"duplicate_row_across_pages": True}) as sim, pytest.raises(UsagePageError) as e:
        fetch_day(client_for(sim), DAY, tmp_path)
    duplicate = expected_rows()[PAGE - 1][0]  # page 2 repeats the last row of page 1
    assert str(e.value) == (
        f"usage for {DAY.isoformat()}: company_id {duplicate!r} appears twice (in page 1 and page 2); "
        "refusing to double count"
    )
    assert not (day_dir(tmp_path) / landing.MANIFEST_NAME).exists()


def test_a_landing_edited_into_holding_a_company_twice_is_refused_on_replay(tmp_path: Path) -> None:
    directory = day_dir(tmp_path)
    directory.mkdir(parents=True)
    pages = [
        b'{"data": [{"company_id": "C1", "active_users": 1, "events": 2}], "next_cursor": "x"}',
        b'{"data": [{"company_id": "C1", "active_users": 3, "events": 4}], "next_cursor": null}',
    ]
    metas = []
    for number, raw in enumerate(pages, start=1):
        (directory / f"page-{number:05d}.json").write_bytes(raw)
        metas.append({"page": number, "file": f"page-{number:05d}.json", "sha256": files.sha256_bytes(raw)})
    manifest = {"page_count": 2, "row_count": 2, "pages": metas, "landing_id": "L1"}
    (directory / landing.MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UsagePageError, match=r"company_id 'C1' appears twice \(in page 1 and page 2\)"):
        read_landed_usage_table(tmp_path, DAY)


def test_a_twin_is_named_with_the_page_where_its_id_first_appeared() -> None:
    def usage_page(number: int, *ids: str) -> object:
        rows = ",".join(
            f'{{"company_id": "{company_id}", "active_users": 1, "events": 1}}' for company_id in ids
        )
        return parse_usage_page(f'{{"data": [{rows}], "next_cursor": null}}'.encode(), DAY, number)

    def first_twin(*pages: object) -> str:
        tracker = DuplicateTracker(DAY)
        with pytest.raises(UsagePageError) as error:
            for page in pages:
                tracker.add(page)
        return str(error.value)

    earlier = [usage_page(1, "A", "B"), usage_page(2, "C", "D")]
    # The first repeated id in page order is named, with the page it was first seen on.
    assert "company_id 'B' appears twice (in page 1 and page 3)" in first_twin(
        *earlier, usage_page(3, "E", "B", "C")
    )
    assert "company_id 'D' appears twice (in page 2 and page 3)" in first_twin(
        *earlier, usage_page(3, "D", "A")
    )
    assert "company_id 'E' appears twice (in page 3)" in first_twin(*earlier, usage_page(3, "E", "F", "E"))
    # A page without twins is taken whole, and the next pages are checked against it.
    tracker = DuplicateTracker(DAY)
    for page in (*earlier, usage_page(3, "E")):
        tracker.add(page)
    with pytest.raises(UsagePageError, match=r"'E' appears twice \(in page 3 and page 4\)"):
        tracker.add(usage_page(4, "F", "E"))


def test_company_ids_are_trimmed_like_the_crms_and_a_padded_twin_is_a_duplicate() -> None:
    # A padded id must not be a company of its own on PostgreSQL and SQLite while MySQL's PAD SPACE
    # collation matches it with the trimmed one: trimmed on parsing, as the CRM snapshot's ids are.
    page = b'{"data": [{"company_id": " C1 ", "active_users": 1, "events": 2}, {"company_id": "C2", '
    page += b'"active_users": 0, "events": 0}], "next_cursor": null}'
    assert parse_usage_page(page, DAY, 1).rows == [("C1", 1, 2), ("C2", 0, 0)]
    twins = b'{"data": [{"company_id": "C1", "active_users": 1, "events": 2}, {"company_id": "C1\\t", '
    twins += b'"active_users": 0, "events": 0}], "next_cursor": null}'
    with pytest.raises(UsagePageError, match="company_id 'C1' appears twice"):
        DuplicateTracker(DAY).add(parse_usage_page(twins, DAY, 1))


def test_not_ready_is_its_own_error_and_is_not_retried(tmp_path: Path) -> None:
    with simulator(faults={"not_ready_dates": frozenset({DAY})}) as sim:
        with pytest.raises(DayNotReadyError) as caught:
            fetch_day(client_for(sim), DAY, tmp_path)
        assert usage_statuses(sim) == {"404": 1}
    assert not isinstance(caught.value, ProductApiUnavailableError)
    assert str(caught.value) == (
        f"product usage for {DAY.isoformat()} is not published yet (404 not_ready): "
        "the day is not over or the data is late; run again later"
    )
    assert not (day_dir(tmp_path) / landing.MANIFEST_NAME).exists()


def test_bad_credentials_fail_with_an_auth_error_before_any_page(tmp_path: Path) -> None:
    wrong = "wrong-secret-3e9d"
    with simulator() as sim:
        with pytest.raises(ProductApiAuthError) as caught:
            fetch_day(client_for(sim, client_secret=wrong), DAY, tmp_path)
        stats = sim.stats()
    assert stats["requests"] == {"/oauth/token": {"401": 1}}, "one token request, no retry loop, no page"
    message = str(caught.value)
    assert "refused the client credentials (HTTP 401" in message
    assert "PRODUCT_API_CLIENT_ID and PRODUCT_API_CLIENT_SECRET" in message
    assert wrong not in message and CLIENT_ID not in message


def test_a_second_401_in_a_row_is_an_auth_error_not_a_retry_loop(tmp_path: Path) -> None:
    with simulator(faults={"rate_401": 1.0}) as sim:
        with pytest.raises(ProductApiAuthError) as caught:
            fetch_day(client_for(sim), DAY, tmp_path)
        stats = sim.stats()
    assert str(caught.value).startswith(
        f"usage page 1 of {DAY.isoformat()}: the API rejected a freshly issued token (HTTP 401 twice in a row"
    )
    assert stats["tokens_issued"] == 2 and stats["requests"]["/v1/usage/daily"] == {"401": 2}


# -- tokens, rate limits, Retry-After, progress -------------------------------------------------------------


def test_the_token_is_refreshed_before_it_expires_in_the_middle_of_a_day(tmp_path: Path) -> None:
    with simulator(token_ttl_seconds=2) as sim:
        client = client_for(sim, page_size=10, requests_per_second=12)  # 32 pages: about 2.7 s
        fetch_day(client, DAY, tmp_path)
        stats = sim.stats()
    assert stats["tokens_issued"] >= 2 and client.stats.token_requests == stats["tokens_issued"]
    assert usage_statuses(sim) == {"200": pages_of(page=10)}, "refreshed ahead of expiry: never a 401"
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()


def test_a_token_revoked_mid_day_is_replaced_once(tmp_path: Path) -> None:
    with simulator() as sim:
        client = client_for(sim, page_size=10)

        def revoke_after_page_3(pages: int, rows: int) -> None:
            if pages == 3:
                sim.revoke_tokens()

        fetch_day(client, DAY, tmp_path, progress=revoke_after_page_3)
        assert usage_statuses(sim) == {"200": pages_of(page=10), "401": 1}
        assert sim.stats()["tokens_issued"] == 2
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()


def test_the_client_side_rate_limit_keeps_the_servers_429s_away(tmp_path: Path) -> None:
    pages = pages_of(page=10)
    with simulator(rate_limit_per_second=20) as sim:
        client = client_for(sim, page_size=10, requests_per_second=20)
        started = time.monotonic()
        fetch_day(client, DAY, tmp_path)
        elapsed = time.monotonic() - started
        assert sim.stats()["rate_limited"] == 0
    assert elapsed >= (pages - 1) / 20, "the requests were spaced by the client, not bunched"


def test_without_a_client_side_limit_the_servers_429s_are_waited_out(tmp_path: Path) -> None:
    with simulator(rate_limit_per_second=20) as sim:  # burst 20, then 429 Retry-After 1
        client = client_for(sim, page_size=10)
        fetch_day(client, DAY, tmp_path)
        limited = sim.stats()["rate_limited"]
    assert limited >= 1 and client.stats.retries["HTTP 429"] == limited
    assert client.stats.waited_seconds >= limited * 1.0
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()


def test_retry_after_as_an_http_date_is_honoured(tmp_path: Path) -> None:
    with simulator(faults={"rate_429": 0.25, "retry_after_http_date": True, "retry_after_seconds": 1}) as sim:
        client = client_for(sim)
        fetch_day(client, DAY, tmp_path)
        limited = sim.stats()["rate_limited"]
    assert limited >= 1 and client.stats.retries["HTTP 429"] == limited
    # The date is one to two seconds ahead (whole seconds); the exponential backoff would be ~0.05 s.
    assert 0.5 * limited <= client.stats.waited_seconds <= 2.1 * limited
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()


def test_parse_retry_after() -> None:
    import email.utils

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) == 1.0 and parse_retry_after("soon") == 1.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(future) <= 30
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0


def test_progress_reports_pages_and_rows(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    with simulator() as sim:
        manifest = fetch_day(client_for(sim), DAY, tmp_path, progress=lambda p, r: calls.append((p, r)))
    rows = len(expected_rows())
    assert calls == [(page, min(page * PAGE, rows)) for page in range(1, pages_of() + 1)]
    assert calls[-1] == (manifest["page_count"], manifest["row_count"])


def test_the_next_page_is_asked_for_while_the_current_one_is_landed_and_checked(tmp_path: Path) -> None:
    """The API builds page 2 while page 1 is landed and checked: page 1's progress (called once it is
    landed and checked) sees page 2 served without asking for it. A fetch that asked for page 2 only after
    page 1 would wait here in vain."""
    served_during_page_1: list[int] = []
    with simulator() as sim:

        def progress(pages: int, _rows: int) -> None:
            if pages == 1:
                deadline = time.monotonic() + 10
                while sim.stats()["pages_served"] < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                served_during_page_1.append(sim.stats()["pages_served"])

        manifest = fetch_day(client_for(sim), DAY, tmp_path, progress=progress)
    assert served_during_page_1 and served_during_page_1[0] >= 2
    assert manifest["page_count"] == pages_of()
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()


# -- landing, kill -9 and resume, replay ---------------------------------------------------------------------

_FETCH_IN_A_CHILD = """
import datetime as dt, os, sys
from pathlib import Path
from pipeline.sources.product_api import ApiSettings, ProductApiClient
from pipeline.sources.usage_landing import fetch_day
settings = ApiSettings(base_url=sys.argv[1], page_size=10, requests_per_second=10)
credentials = os.environ["PRODUCT_API_CLIENT_ID"], os.environ["PRODUCT_API_CLIENT_SECRET"]
client = ProductApiClient(settings, *credentials)
fetch_day(client, dt.date.fromisoformat(sys.argv[2]), Path(sys.argv[3]))
"""


def test_kill_9_during_a_fetch_then_a_resume_fetches_only_the_missing_pages(tmp_path: Path) -> None:
    total = pages_of(page=10)
    directory = day_dir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_API_")}
    env.update(
        PRODUCT_API_CLIENT_ID=CLIENT_ID,
        PRODUCT_API_CLIENT_SECRET=CLIENT_SECRET,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    with simulator() as sim:
        child = subprocess.Popen(
            [sys.executable, "-c", _FETCH_IN_A_CHILD, sim.base_url, DAY.isoformat(), str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while len(list(directory.glob("page-?????.meta.json"))) < 6:
                assert child.poll() is None, child.stderr.read().decode()
                assert time.monotonic() < deadline, "the child landed no pages"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
            child.stderr.close()
        assert not (directory / landing.MANIFEST_NAME).exists(), "no manifest for an incomplete day"
        landed = len(list(directory.glob("page-?????.meta.json")))
        assert 6 <= landed < total

        sim.reset_stats()
        client = client_for(sim, page_size=10)
        manifest = fetch_day(client, DAY, tmp_path)
        stats = sim.stats()

    assert client.stats.pages_resumed == landed and client.stats.pages_fetched == total - landed
    assert stats["pages_served"] == total - landed and usage_statuses(sim) == {"200": total - landed}
    assert manifest["page_count"] == total
    assert read_landed_usage(tmp_path, DAY)[1] == expected_rows()
    assert not list(directory.glob(".*.part")), "no temporary file of the killed write is left behind"


def test_pages_are_landed_byte_for_byte_with_their_cursor_and_the_manifest_last(tmp_path: Path) -> None:
    import json

    import requests

    with simulator() as sim:
        manifest = fetch_day(client_for(sim), DAY, tmp_path)
        token = requests.post(
            f"{sim.base_url}/oauth/token",
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            timeout=5,
        ).json()["access_token"]
        directory = day_dir(tmp_path)
        for meta in manifest["pages"]:
            params = {
                "date": DAY.isoformat(),
                "limit": PAGE,
                **({"cursor": meta["cursor"]} if meta["cursor"] else {}),
            }
            body = requests.get(
                f"{sim.base_url}/v1/usage/daily",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            ).content
            assert (directory / meta["file"]).read_bytes() == body
            assert files.sha256_bytes(body) == meta["sha256"]
    manifest_time = (directory / landing.MANIFEST_NAME).stat().st_mtime_ns
    assert all((directory / meta["file"]).stat().st_mtime_ns <= manifest_time for meta in manifest["pages"])
    assert json.loads((directory / landing.MANIFEST_NAME).read_text())["row_count"] == len(expected_rows())


def test_replay_needs_no_api(tmp_path: Path) -> None:
    with simulator() as sim:
        first = fetch_day(client_for(sim), DAY, tmp_path)
    # The simulator is gone: replay from disk works, and a second fetch does not even try the network.
    manifest, rows = read_landed_usage(tmp_path, DAY)
    assert rows == expected_rows() and manifest == first
    client = client_for(sim)
    assert fetch_day(client, DAY, tmp_path) == first
    assert client.stats.requests == 0


def test_replay_detects_a_modified_landing(tmp_path: Path) -> None:
    with simulator() as sim:
        fetch_day(client_for(sim), DAY, tmp_path)
    page = day_dir(tmp_path) / "page-00002.json"
    page.write_bytes(page.read_bytes().replace(b'"events":', b'"events": ', 1))
    with pytest.raises(ProductApiError, match="checksum differs from the manifest"):
        read_landed_usage(tmp_path, DAY)


# -- secrets -------------------------------------------------------------------------------------------------


def test_secrets_never_reach_logs_exceptions_or_raw_files(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: ours, requests' and urllib3's debug lines too
    for name in ("urllib3", "urllib3.connectionpool", "pipeline", "pipeline.sources.product_api"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    tokens: list[str] = []
    errors: list[BaseException] = []
    faults = {"rate_401": 0.1, "rate_500": 0.1, "rate_drop": 0.05}
    with simulator(fault_seed=6, faults=faults, token_ttl_seconds=1) as sim:
        monkeypatch.setattr(sim._httpd, "issue_token", _recording(sim, tokens))
        client = client_for(sim, page_size=10, requests_per_second=15, max_attempts=6)
        fetch_day(client, DAY, tmp_path / "ok")  # about 2 s: the 1 s token is renewed on the way
        assert len(tokens) >= 2 and client.stats.retries, "tokens were refreshed and faults retried"
        try:
            fetch_day(client_for(sim, client_secret="a-wrong-secret-0b1e"), DAY, tmp_path / "bad")
        except ProductApiError as error:
            errors.append(error)
    for fault in ({"rate_401": 1.0}, {"rate_503": 1.0}, {"rate_schema_drift": 1.0}):
        with simulator(faults=fault) as failing:
            monkeypatch.setattr(failing._httpd, "issue_token", _recording(failing, tokens))
            try:
                fetch_day(client_for(failing), DAY, tmp_path / f"fail-{next(iter(fault))}")
            except ProductApiError as error:
                errors.append(error)
    assert len(errors) == 4, errors
    secrets = [CLIENT_ID, CLIENT_SECRET, "a-wrong-secret-0b1e", *tokens]

    assert "usage page" in caplog.text and "urllib3" in {r.name.split(".")[0] for r in caplog.records}
    captured = capfd.readouterr()
    texts = {
        "logs": caplog.text,
        "stdout/stderr": captured.out + captured.err,
        "exceptions": "\n".join(_exception_texts(errors)),
        "client repr": repr(client) + repr(client.settings) + repr(client.stats),
    }
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert len(texts) > 10
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}...) shows in {where}"


def _exception_texts(errors: list[BaseException]) -> Iterator[str]:
    """What an exception shows anywhere (message, repr, attributes, its causes), without source lines."""
    for error in errors:
        current: BaseException | None = error
        while current is not None:
            yield from traceback.format_exception_only(current)
            yield repr(current) + repr(current.args) + repr(vars(current))
            current = current.__cause__ or current.__context__


def _recording(sim: SimulatorServer, tokens: list[str]):
    """The simulator's token issuer, noting every token it hands out (to look for them afterwards)."""
    issue = sim._httpd.issue_token

    def recording_issue() -> str:
        tokens.append(issue())
        return tokens[-1]

    return recording_issue


# -- the Luigi graph: a failing day leaves the analytics table as it was -------------------------------------

D1, D2 = dt.date(2026, 10, 6), dt.date(2026, 10, 7)


def world_simulator(**faults: Any) -> SimulatorServer:
    """A simulator serving the same companies as the ``world`` fixture's fault-free one."""
    return serve(
        SimulatorConfig(
            client_id=API_CLIENT_ID,
            client_secret=API_CLIENT_SECRET,
            companies=WORLD_COMPANIES,
            seed=WORLD_SEED,
            ready_through=dt.date(2030, 12, 31),
            faults=FaultConfig(seed=1, **faults),
        )
    )


def point_the_pipeline_at(base_url: str, **settings: Any) -> None:
    """Temporary [product_api] settings (the world fixture restores the section afterwards)."""
    config = luigi.configuration.get_config()
    config.set("product_api", "base_url", base_url)
    for key, value in settings.items():
        config.set("product_api", key, str(value))
    Register.clear_instance_cache()  # Config objects are cached with the values they were built with


def build(*tasks: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")


def staged_usage(world: PipelineWorld, day: dt.date) -> list[tuple]:
    with world.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                query(
                    connection,
                    "SELECT company_id, active_users, events FROM {stg}.product_usage_daily "
                    "WHERE activity_date = :day ORDER BY company_id",
                )
            ).bindparams(sa.bindparam("day", day, type_=sa.Date()))
        ).all()
    return [tuple(row) for row in rows]


def world_rows(day: dt.date) -> list[tuple]:
    return [
        (row["company_id"], row["active_users"], row["events"])
        for row in CompanyUniverse(WORLD_COMPANIES, WORLD_SEED).usage_rows(day)
    ]


@pytest.mark.parametrize(
    ("faults", "error", "fragment"),
    [
        ({"rate_schema_drift": 1.0}, UsagePageError, "missing field(s) active_users"),
        ({"duplicate_row_across_pages": True}, UsagePageError, "appears twice (in page 1 and page 2)"),
        ({"not_ready_dates": frozenset({D2})}, DayNotReadyError, "is not published yet"),
        ({"rate_503": 1.0}, ProductApiUnavailableError, "seen: HTTP 503 x2"),
    ],
    ids=["schema_drift", "duplicate_row", "not_ready", "503"],
)
def test_a_day_the_api_fails_fails_in_luigi_and_the_table_is_unchanged(
    world: PipelineWorld, caplog: pytest.LogCaptureFixture, faults: dict, error: type, fragment: str
) -> None:
    world.write_crm(D1, D2)
    assert build(RunDaily(date=D1)).status == LuigiStatusCode.SUCCESS
    before = table_rows(world.engine, with_loaded_at=True)
    assert before

    with world_simulator(**faults) as sim:
        point_the_pipeline_at(sim.base_url, page_size=20, max_attempts=2)
        with caplog.at_level(logging.ERROR, logger="pipeline"):
            result = build(RunDaily(date=D2))

    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    assert "FetchProductUsage" in result.summary_text
    assert f"FetchProductUsage failed for {D2.isoformat()}: {error.__name__}: " in caplog.text
    assert fragment in caplog.text
    assert table_rows(world.engine, with_loaded_at=True) == before
    assert staged_usage(world, D2) == []
    assert not FetchProductUsage(date=D2).complete()
    assert not (landing.day_dir(world.data_dir, DATASET, D2) / landing.MANIFEST_NAME).exists()


def test_a_day_with_transient_faults_builds_the_same_table_as_a_fault_free_run(
    world: PipelineWorld, usage_api: SimulatorServer
) -> None:
    world.write_crm(D1, D1)
    faults = {"rate_500": 0.2, "rate_drop": 0.15, "rate_truncated": 0.1, "rate_401": 0.1}
    with world_simulator(**faults) as sim:
        point_the_pipeline_at(sim.base_url, page_size=10)
        assert build(RunDaily(date=D1)).status == LuigiStatusCode.SUCCESS
        assert sum(sim.stats()["faults_injected"].values()) >= 3
    with_faults = table_rows(world.engine)
    assert staged_usage(world, D1) == world_rows(D1)

    point_the_pipeline_at(usage_api.base_url, page_size=50)
    assert build(RunDaily(date=D1, refresh=True)).status == LuigiStatusCode.SUCCESS
    assert table_rows(world.engine) == with_faults
    assert staged_usage(world, D1) == world_rows(D1)


def test_staging_replays_the_landing_with_the_simulator_stopped(world: PipelineWorld) -> None:
    world.write_crm(D1, D1)
    with world_simulator() as sim:
        point_the_pipeline_at(sim.base_url, page_size=20)
        assert build(FetchProductUsage(date=D1)).status == LuigiStatusCode.SUCCESS
        served = sim.stats()["pages_served"]
    assert served == -(-len(world_rows(D1)) // 20)

    # Nothing listens at the configured URL any more: staging and the rest of the day need no API.
    assert build(StageProductUsage(date=D1)).status == LuigiStatusCode.SUCCESS
    assert staged_usage(world, D1) == world_rows(D1)
    assert build(RunDaily(date=D1)).status == LuigiStatusCode.SUCCESS
    assert len({row[1] for row in table_rows(world.engine)}) >= len(world_rows(D1))
