"""The simulated product-usage API, exercised over real HTTP on loopback (no mocks)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from devtools.sample_data import CompanyUniverse
from devtools.simulator import FAULT_KINDS, FaultConfig, SimulatorConfig, SimulatorServer, serve

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "product_usage_api.openapi.json"
CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret-never-logged"
COMPANIES, SEED = 300, 7
DAY = dt.date(2026, 11, 20)
TIMEOUT = 10


def config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "companies": COMPANIES,
        "seed": SEED,
        "ready_through": dt.date(2026, 12, 31),
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with serve(config()) as running:
        yield running


def get_token(base_url: str, session: requests.Session | None = None) -> str:
    response = (session or requests).post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def get_page(base_url: str, token: str, timeout: float = TIMEOUT, **params: Any) -> requests.Response:
    params.setdefault("date", DAY.isoformat())
    return requests.get(
        f"{base_url}/v1/usage/daily",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


def fetch_all(base_url: str, token: str, limit: int, day: dt.date = DAY) -> list[list[dict]]:
    """Every page of ``day``, following next_cursor."""
    pages, cursor = [], None
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        while True:
            params: dict[str, Any] = {"date": day.isoformat(), "limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = session.get(f"{base_url}/v1/usage/daily", params=params, timeout=TIMEOUT)
            assert response.status_code == 200, response.text
            body = response.json()
            validate(body, "UsagePage")
            pages.append(body["data"])
            cursor = body["next_cursor"]
            if cursor is None:
                return pages


# -- OpenAPI schemas ---------------------------------------------------------------------------------


def _openapi_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 says ``nullable: true``; JSON Schema says ``type: [..., "null"]``."""
    if isinstance(node, dict):
        node = {key: _openapi_to_json_schema(value) for key, value in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        return node
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    return node


_DOCUMENT = _openapi_to_json_schema(json.loads(OPENAPI.read_text(encoding="utf-8")))
_REGISTRY = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(_DOCUMENT))


def validate(instance: Any, component: str) -> None:
    """Validate against ``#/components/schemas/<component>`` of the project's OpenAPI file."""
    schema = {"$ref": f"urn:openapi#/components/schemas/{component}"}
    jsonschema.Draft202012Validator(
        schema, registry=_REGISTRY, format_checker=jsonschema.FormatChecker()
    ).validate(instance)


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _validate_at(instance: Any, *parts: str) -> None:
    """Validate against the schema found at a JSON pointer of the OpenAPI file."""
    schema = {"$ref": f"urn:openapi#/{_pointer(*parts)}"}
    jsonschema.Draft202012Validator(
        schema, registry=_REGISTRY, format_checker=jsonschema.FormatChecker()
    ).validate(instance)


def documented_statuses(method: str, path: str) -> set[str]:
    """The statuses the OpenAPI file lists for an operation, with ``5XX`` as 500, 502 and 503."""
    statuses = set(_DOCUMENT["paths"][path][method.lower()]["responses"])
    if "5XX" in statuses:
        statuses = (statuses - {"5XX"}) | {"500", "502", "503"}
    return statuses


def check_response(method: str, path: str, response: requests.Response) -> str:
    """The response is one the OpenAPI file documents for the operation: status, headers, body.

    Returns the status, so that a test can check that every documented status was exercised.
    """
    responses = _DOCUMENT["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    key = status if status in responses else f"{status[0]}XX"
    assert key in responses, f"{method} {path} answered {status}, which the OpenAPI file does not list"
    spec = responses[key]
    where = ("paths", path, method.lower(), "responses", key)
    for name, header in spec.get("headers", {}).items():
        value = response.headers.get(name)
        if header.get("required"):
            assert value is not None, f"{method} {path} {status}: header {name} is required"
        if value is not None:
            _validate_at(int(value) if value.isdigit() else value, *where, "headers", name, "schema")
    content = spec.get("content", {})
    if content:
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        assert content_type in content, f"{method} {path} {status}: content type {content_type!r}"
        _validate_at(response.json(), *where, "content", content_type, "schema")
    return status


def test_openapi_document_describes_the_contract() -> None:
    document = json.loads(OPENAPI.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.0")
    assert set(document["paths"]) == {"/oauth/token", "/v1/usage/daily"}
    row = document["components"]["schemas"]["UsageRow"]
    assert row["additionalProperties"] is False
    assert set(row["required"]) == {"company_id", "active_users", "events"}
    for name in ("TokenResponse", "UsagePage", "UsageRow", "Error"):
        jsonschema.Draft202012Validator.check_schema(_DOCUMENT["components"]["schemas"][name])
    with pytest.raises(jsonschema.ValidationError):
        validate({"company_id": "C1", "active_users": -1, "events": 0}, "UsageRow")
    with pytest.raises(jsonschema.ValidationError):
        validate({"company_id": "C1", "activeUsers": 1, "events": 0}, "UsageRow")


# -- token -------------------------------------------------------------------------------------------


def test_token_flow(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    validate(body, "TokenResponse")
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert get_page(server.base_url, body["access_token"]).status_code == 200


def test_token_with_http_basic_credentials(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.base_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    validate(response.json(), "TokenResponse")


GOOD_FORM = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({**GOOD_FORM, "client_secret": "wrong"}, 401, "invalid_client"),
        ({**GOOD_FORM, "client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({**GOOD_FORM, "grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, 400, "invalid_request"),
    ],
)
def test_token_errors(server: SimulatorServer, form: dict[str, str], status: int, error: str) -> None:
    response = requests.post(f"{server.base_url}/oauth/token", data=form, timeout=TIMEOUT)
    assert response.status_code == status
    validate(response.json(), "Error")
    assert response.json()["error"] == error
    assert CLIENT_SECRET not in response.text


def test_token_request_must_be_form_encoded(server: SimulatorServer) -> None:
    payload = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = requests.post(f"{server.base_url}/oauth/token", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc", "Bearer "])
def test_usage_needs_a_valid_bearer_token(server: SimulatorServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = requests.get(
        f"{server.base_url}/v1/usage/daily",
        params={"date": DAY.isoformat()},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    validate(response.json(), "Error")


def test_tokens_expire_and_a_new_one_works() -> None:
    with serve(config(token_ttl_seconds=1)) as short:
        token = get_token(short.base_url)
        assert get_page(short.base_url, token).status_code == 200
        time.sleep(1.1)
        expired = get_page(short.base_url, token)
        assert expired.status_code == 401
        assert expired.json()["error"] == "invalid_token"
        assert get_page(short.base_url, get_token(short.base_url)).status_code == 200


def test_revoked_tokens_are_rejected() -> None:
    with serve(config()) as sim:
        token = get_token(sim.base_url)
        sim.revoke_tokens()
        assert get_page(sim.base_url, token).status_code == 401


# -- usage pages -------------------------------------------------------------------------------------


def test_pagination_covers_every_row_exactly_once(server: SimulatorServer) -> None:
    token = get_token(server.base_url)
    pages = fetch_all(server.base_url, token, limit=37)
    expected = CompanyUniverse(COMPANIES, SEED).usage_rows(DAY)
    assert len(pages) == -(-len(expected) // 37)
    assert all(len(page) == 37 for page in pages[:-1])
    assert [row for page in pages for row in page] == expected
    # Orphans and explicit zeros come through the API unchanged.
    assert any(row["company_id"] >= "C900000" for row in expected)


def test_default_page_size_and_cap_on_limit() -> None:
    with serve(config(max_page_size=50)) as capped:
        token = get_token(capped.base_url)
        body = get_page(capped.base_url, token, limit=1000).json()
        assert len(body["data"]) == 50 and body["next_cursor"]
        pages = fetch_all(capped.base_url, token, limit=1000)
        assert sum(map(len, pages)) == len(CompanyUniverse(COMPANIES, SEED).usage_rows(DAY))


def test_default_limit_is_1000(server: SimulatorServer) -> None:
    token = get_token(server.base_url)
    with serve(config(companies=1500)) as bigger:
        body = get_page(bigger.base_url, get_token(bigger.base_url)).json()
        assert len(body["data"]) == 1000 and body["next_cursor"]
    assert get_page(server.base_url, token).json()["next_cursor"] is None  # 300 companies: one page


@pytest.mark.parametrize(
    "params",
    [
        {"date": "2026-13-01"},
        {"date": "20261120"},
        {"date": "yesterday"},
        {"date": ""},
        {"date": "2026-11-20", "limit": "0"},
        {"date": "2026-11-20", "limit": "-5"},
        {"date": "2026-11-20", "limit": "ten"},
        {"date": "2026-11-20", "cursor": "%%%not-base64"},
        {"date": "2026-11-20", "cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()},
    ],
)
def test_bad_parameters_are_400(server: SimulatorServer, params: dict[str, str]) -> None:
    response = get_page(server.base_url, get_token(server.base_url), **params)
    assert response.status_code == 400
    validate(response.json(), "Error")
    assert response.json()["error"] == "invalid_request"


def test_missing_date_and_foreign_cursor_are_400(server: SimulatorServer) -> None:
    token = get_token(server.base_url)
    response = requests.get(
        f"{server.base_url}/v1/usage/daily", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
    )
    assert response.status_code == 400
    cursor = get_page(server.base_url, token, limit=10).json()["next_cursor"]
    assert get_page(server.base_url, token, date="2026-11-19", cursor=cursor).status_code == 400
    assert get_page(server.base_url, token, cursor=cursor, limit=10).status_code == 200


def test_not_ready_for_today_and_for_configured_dates() -> None:
    today = dt.datetime.now(dt.UTC).date()
    late = today - dt.timedelta(days=3)
    faults = FaultConfig(not_ready_dates=frozenset({late}))
    with serve(config(ready_through=None, faults=faults)) as sim:
        token = get_token(sim.base_url)
        for day in (today, today + dt.timedelta(days=1), late):
            response = get_page(sim.base_url, token, date=day.isoformat())
            assert response.status_code == 404, day
            validate(response.json(), "Error")
            assert response.json()["error"] == "not_ready"
        assert (
            get_page(sim.base_url, token, date=(today - dt.timedelta(days=1)).isoformat()).status_code == 200
        )


def test_ready_through_publishes_up_to_that_day(server: SimulatorServer) -> None:
    token = get_token(server.base_url)
    assert get_page(server.base_url, token, date="2026-12-31").status_code == 200
    assert get_page(server.base_url, token, date="2027-01-01").json() == {
        "error": "not_ready",
        "message": "usage for 2027-01-01 is not published yet",
    }


# -- rate limit and faults -------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after() -> None:
    with serve(config(rate_limit_per_second=5)) as sim:
        token = get_token(sim.base_url)
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            statuses, retry_after = [], None
            for _ in range(15):
                response = session.get(
                    f"{sim.base_url}/v1/usage/daily", params={"date": DAY.isoformat()}, timeout=TIMEOUT
                )
                statuses.append(response.status_code)
                if response.status_code == 429:
                    retry_after = response.headers["Retry-After"]
                    validate(response.json(), "Error")
        assert 200 in statuses and 429 in statuses
        assert retry_after is not None and int(retry_after) >= 1
        time.sleep(int(retry_after))
        assert get_page(sim.base_url, token).status_code == 200
        assert sim.stats()["rate_limited"] == statuses.count(429)


def only(kind: str, **extra: Any) -> SimulatorConfig:
    return config(faults=FaultConfig(seed=1, **{f"rate_{kind}": 1.0}, **extra))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_faults(status: int) -> None:
    with serve(only(str(status))) as sim:
        response = get_page(sim.base_url, get_token(sim.base_url))
        assert response.status_code == status
        validate(response.json(), "Error")
        assert sim.stats()["faults_injected"][str(status)] == 1


def test_429_fault_carries_retry_after() -> None:
    with serve(only("429", retry_after_seconds=3)) as sim:
        response = get_page(sim.base_url, get_token(sim.base_url))
        assert response.status_code == 429 and response.headers["Retry-After"] == "3"
        assert sim.stats()["rate_limited"] == 1


def test_slow_fault_times_out_a_patient_enough_client_only() -> None:
    with serve(only("slow", slow_seconds=0.6)) as sim:
        token = get_token(sim.base_url)
        with pytest.raises(requests.exceptions.ReadTimeout):
            get_page(sim.base_url, token, timeout=0.2)
        started = time.monotonic()
        assert get_page(sim.base_url, token).status_code == 200
        assert time.monotonic() - started >= 0.6


def test_drop_fault_closes_the_connection_without_a_response() -> None:
    with serve(only("drop")) as sim:
        with pytest.raises(requests.exceptions.ConnectionError):
            get_page(sim.base_url, get_token(sim.base_url))
        assert sim.stats()["requests"]["/v1/usage/daily"] == {"dropped": 1}


def test_truncated_fault_sends_part_of_the_announced_body() -> None:
    with serve(only("truncated")) as sim:
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
            get_page(sim.base_url, get_token(sim.base_url))
        assert sim.stats()["faults_injected"]["truncated"] == 1


def test_invalid_json_fault() -> None:
    with serve(only("invalid_json")) as sim:
        response = get_page(sim.base_url, get_token(sim.base_url))
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()


def test_schema_drift_fault_renames_active_users() -> None:
    with serve(only("schema_drift")) as sim:
        body = get_page(sim.base_url, get_token(sim.base_url)).json()
        assert body["data"] and all("activeUsers" in r and "active_users" not in r for r in body["data"])
        with pytest.raises(jsonschema.ValidationError):
            validate(body, "UsagePage")


def test_duplicate_row_across_pages() -> None:
    with serve(config(faults=FaultConfig(duplicate_row_across_pages=True))) as sim:
        pages = fetch_all(sim.base_url, get_token(sim.base_url), limit=20)
        assert pages[1][0] == pages[0][-1]
        ids = [row["company_id"] for page in pages for row in page]
        assert len(ids) == len(set(ids)) + 1
        assert set(ids) == {r["company_id"] for r in CompanyUniverse(COMPANIES, SEED).usage_rows(DAY)}
        assert sim.stats()["faults_injected"]["duplicate_row"] == 1


def test_fault_sequence_is_reproducible_for_a_sequential_client() -> None:
    faults = FaultConfig(seed=3, rate_500=0.2, rate_503=0.2, rate_429=0.1)
    runs = []
    for _ in range(2):
        with serve(config(faults=faults)) as sim:
            token = get_token(sim.base_url)
            runs.append([get_page(sim.base_url, token).status_code for _ in range(25)])
    assert runs[0] == runs[1]
    assert {200, 429, 500, 503} <= set(runs[0])


def test_fault_config_is_validated() -> None:
    with pytest.raises(ValueError):
        FaultConfig(rate_500=0.7, rate_502=0.7)
    with pytest.raises(ValueError):
        FaultConfig(rate_drop=-0.1)
    assert set(FaultConfig().rates()) == set(FAULT_KINDS)


def test_faults_apply_only_to_the_usage_endpoint() -> None:
    with serve(only("500")) as sim:
        assert get_token(sim.base_url)
        assert requests.get(f"{sim.base_url}/_sim/stats", timeout=TIMEOUT).status_code == 200


# -- every status the simulator answers, checked against the OpenAPI file ------------------------------


def test_every_response_of_every_status_conforms_to_the_openapi_file() -> None:
    """Each documented status of each operation is produced once and checked: headers and body schema."""
    token_url, seen = "/oauth/token", {"/oauth/token": set(), "/v1/usage/daily": set()}

    def token_call(sim: SimulatorServer, **kwargs: Any) -> None:
        response = requests.post(f"{sim.base_url}{token_url}", timeout=TIMEOUT, **kwargs)
        seen[token_url].add(check_response("POST", token_url, response))

    def usage_call(sim: SimulatorServer, token: str | None, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params.setdefault("date", DAY.isoformat())
        response = requests.get(
            f"{sim.base_url}/v1/usage/daily", params=params, headers=headers, timeout=TIMEOUT
        )
        seen["/v1/usage/daily"].add(check_response("GET", "/v1/usage/daily", response))
        return response

    with serve(config(rate_limit_per_second=2, max_page_size=100)) as sim:
        token_call(sim, data=GOOD_FORM)
        token_call(sim, data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET))
        token_call(sim, data={**GOOD_FORM, "client_secret": "wrong"})
        token_call(sim, data={**GOOD_FORM, "grant_type": "password"})
        token_call(sim, json=GOOD_FORM)
        token_call(sim, data={"grant_type": "client_credentials", "pad": "x" * 70_000})
        token = get_token(sim.base_url)
        first = usage_call(sim, token, limit=100)  # the first page, with a cursor
        time.sleep(0.6)
        last = usage_call(sim, token, limit=100, cursor=first.json()["next_cursor"])
        assert first.status_code == 200 and last.status_code == 200
        time.sleep(0.6)
        assert usage_call(sim, token, date="2026-02-30").status_code == 400
        time.sleep(0.6)
        assert usage_call(sim, None).status_code == 401
        time.sleep(0.6)
        assert usage_call(sim, token, date="2027-01-01").status_code == 404
        statuses = [usage_call(sim, token).status_code for _ in range(4)]  # beyond the bucket's burst
        assert 429 in statuses
    assert seen["/oauth/token"] == documented_statuses("POST", "/oauth/token")

    for fault, extra in [
        ("429", {}),
        ("429", {"retry_after_http_date": True, "retry_after_seconds": 2}),
        ("500", {}),
        ("502", {}),
        ("503", {}),
        ("401", {}),
    ]:
        with serve(only(fault, **extra)) as sim:
            response = usage_call(sim, get_token(sim.base_url))
            assert response.status_code == int(fault)
            if extra.get("retry_after_http_date"):
                assert response.headers["Retry-After"].endswith(" GMT")
    assert seen["/v1/usage/daily"] == documented_statuses("GET", "/v1/usage/daily")


def test_schema_faults_are_caught_by_the_openapi_file() -> None:
    """The deliberate contract violations really violate the documented schema."""
    for fault in ("schema_drift", "invalid_json"):
        with serve(only(fault)) as sim:
            response = get_page(sim.base_url, get_token(sim.base_url))
            with pytest.raises((jsonschema.ValidationError, ValueError)):
                check_response("GET", "/v1/usage/daily", response)


def test_injected_401_rejects_a_valid_token() -> None:
    with serve(only("401")) as sim:
        token = get_token(sim.base_url)
        response = get_page(sim.base_url, token)
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert sim.stats()["faults_injected"]["401"] == 1


def test_retry_after_as_http_date() -> None:
    import email.utils

    with serve(only("429", retry_after_seconds=3, retry_after_http_date=True)) as sim:
        response = get_page(sim.base_url, get_token(sim.base_url))
        when = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
        wait = (when - dt.datetime.now(dt.UTC)).total_seconds()
        assert 2 <= wait <= 4.5


# -- stats and housekeeping ------------------------------------------------------------------------


def test_stats_count_requests_tokens_and_can_be_reset() -> None:
    with serve(config()) as sim:
        token = get_token(sim.base_url)
        get_page(sim.base_url, token)
        get_page(sim.base_url, "bad-token")
        stats = requests.get(f"{sim.base_url}/_sim/stats", timeout=TIMEOUT).json()
        assert stats == sim.stats()
        assert stats["requests"] == {"/oauth/token": {"200": 1}, "/v1/usage/daily": {"200": 1, "401": 1}}
        assert stats["tokens_issued"] == 1 and stats["pages_served"] == 1
        assert stats["rows_served"] == len(CompanyUniverse(COMPANIES, SEED).usage_rows(DAY))
        assert requests.post(f"{sim.base_url}/_sim/reset-stats", timeout=TIMEOUT).status_code == 200
        assert sim.stats()["requests_total"] == 0


def test_unknown_paths_and_methods(server: SimulatorServer) -> None:
    assert requests.get(f"{server.base_url}/nope", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{server.base_url}/oauth/token", timeout=TIMEOUT).status_code == 405
    assert requests.post(f"{server.base_url}/v1/usage/daily", timeout=TIMEOUT).status_code == 405


def test_secret_not_in_repr() -> None:
    assert CLIENT_SECRET not in repr(config())


def test_stop_releases_the_port_and_ends_keep_alive_connections() -> None:
    sim = serve(config())
    session = requests.Session()
    token = get_token(sim.base_url, session)
    sim.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(
            f"{sim.base_url}/v1/usage/daily",
            params={"date": DAY.isoformat()},
            headers={"Authorization": f"Bearer {token}"},
            timeout=2,
        )
    session.close()


# -- command line ----------------------------------------------------------------------------------


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_API_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_cli_serves_until_sigterm_and_exits_0() -> None:
    env = _cli_env(PRODUCT_API_CLIENT_ID=CLIENT_ID, PRODUCT_API_CLIENT_SECRET=CLIENT_SECRET)
    command = [
        sys.executable,
        "-m",
        "devtools.simulator",
        "--port",
        "0",
        "--companies",
        "50",
        "--fault-500",
        "0",
    ]
    process = subprocess.Popen(
        [*command, "--ready-through", "2026-12-31", "--not-ready", "2026-11-19"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("simulator listening on http://127.0.0.1:"), line
        base_url = line.split()[-1]
        token = get_token(base_url)
        assert get_page(base_url, token).status_code == 200
        assert get_page(base_url, token, date="2026-11-19").status_code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        output = process.stdout.read() + process.stderr.read()
        assert CLIENT_SECRET not in output and token not in output
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()


def test_cli_refuses_to_start_without_credentials() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.simulator", "--port", "0"],
        cwd=ROOT,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "PRODUCT_API_CLIENT_ID" in result.stderr


def test_server_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        config(max_page_size=0)
    with pytest.raises(ValueError):
        config(client_secret="")
    with pytest.raises(ValueError):
        config(rate_limit_per_second=0)
    assert copy.copy(FaultConfig()) == FaultConfig()
