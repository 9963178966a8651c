"""Fetching one day of about 1,000,000 usage rows (pages of 5,000) from the simulated API.

The simulator runs as its own process (``python -m devtools.simulator``), as a real API would, so that
client and server do not share one interpreter. Measured in one run:

(a) no rate limit: ``fetch_day`` (token, validation of every row, raw landing with fsync, manifest) in
    rows/s and pages/s, against a baseline of a bare ``requests`` loop that only follows the cursors of
    the same pages (no validation, nothing written), so that the client's own overhead shows; and the
    replay of the landed day from disk (``read_landed_usage``), which staging does;
(b) a server-enforced limit of 20 requests/s (token bucket): ``fetch_day`` with the client-side limiter
    at 20 requests/s, the achieved request rate as a share of the limit (target: at least 90%) and the
    number of 429s; and, for contrast, the same fetch without the client-side limiter.

    .venv/bin/python bench/bench_api_fetch.py [--rows 1000000] [--page-size 5000] [--rate-limit 20]

The number of companies is chosen so that the day has at least ``--rows`` usage rows (companies
without usage that day have no row, so a day has fewer rows than the universe has companies).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from devtools.sample_data import CompanyUniverse
from pipeline.sources.product_api import ApiSettings, ProductApiClient
from pipeline.sources.usage_landing import fetch_day, read_landed_usage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


DAY = dt.date(2026, 11, 20)
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"


def companies_for(rows: int, seed: int) -> tuple[int, int]:
    """The smallest round number of companies (multiples of 10,000) whose day has ``rows`` rows or more."""
    companies = max(10_000, round(rows / 0.8 / 10_000) * 10_000)
    while True:
        count = len(CompanyUniverse(companies, seed).usage_columns(DAY))
        if count >= rows:
            return companies, count
        companies += 10_000


@contextmanager
def simulator(companies: int, seed: int, rate_limit: float | None = None) -> Iterator[str]:
    """``python -m devtools.simulator`` on a free port; yields its base URL."""
    env = dict(os.environ, PRODUCT_API_CLIENT_ID=CLIENT_ID, PRODUCT_API_CLIENT_SECRET=CLIENT_SECRET)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "devtools.simulator",
        "--port",
        "0",
        "--companies",
        str(companies),
        "--seed",
        str(seed),
        "--max-page-size",
        "5000",
        "--ready-through",
        DAY.isoformat(),
    ]
    if rate_limit:
        command += ["--rate-limit", str(rate_limit)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = process.stdout.readline()
        if not line.startswith("simulator listening on "):
            raise RuntimeError(f"the simulator did not start: {line!r}")
        base_url = line.split()[-1]
        # Warm up: the first request of a day generates its rows (kept in the simulator's cache).
        token = get_token(base_url)
        requests.get(
            f"{base_url}/v1/usage/daily",
            params={"date": DAY.isoformat(), "limit": 1},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ).raise_for_status()
        time.sleep(1.1)  # let a rate limiter's bucket fill up again after the warm-up request
        requests.post(f"{base_url}/_sim/reset-stats", timeout=10).raise_for_status()
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        process.stdout.close()


def get_token(base_url: str) -> str:
    response = requests.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def sim_stats(base_url: str) -> dict[str, Any]:
    return requests.get(f"{base_url}/_sim/stats", timeout=10).json()


def baseline(base_url: str, page_size: int) -> dict[str, float]:
    """A bare loop: one session, follow next_cursor, keep nothing."""
    token = get_token(base_url)
    pages = rows = 0
    cursor = None
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        while True:
            params = {"date": DAY.isoformat(), "limit": page_size}
            if cursor:
                params["cursor"] = cursor
            response = session.get(f"{base_url}/v1/usage/daily", params=params, timeout=60)
            response.raise_for_status()
            body = response.json()
            pages += 1
            rows += len(body["data"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "pages": pages, "rows": rows, "requests": pages}


def ours(base_url: str, page_size: int, work: Path, requests_per_second: float = 0.0) -> dict[str, float]:
    """``fetch_day`` as the pipeline runs it, into a fresh data directory."""
    data_dir = Path(tempfile.mkdtemp(prefix="fetch-", dir=work))
    settings = ApiSettings(
        base_url=base_url,
        page_size=page_size,
        requests_per_second=requests_per_second,
        retry_budget_seconds=600,
    )
    client = ProductApiClient(settings, CLIENT_ID, CLIENT_SECRET)
    client._bearer()  # the token first: the timed part is the pages
    stamps: list[float] = []
    started = time.perf_counter()
    try:
        manifest = fetch_day(
            client, DAY, data_dir, progress=lambda pages, rows: stamps.append(time.perf_counter())
        )
    finally:
        client.close()
    elapsed = time.perf_counter() - started
    replay_started = time.perf_counter()
    _, rows = read_landed_usage(data_dir, DAY)
    replay = time.perf_counter() - replay_started
    assert len(rows) == manifest["row_count"]
    shutil.rmtree(data_dir)
    return {
        "seconds": elapsed,
        "pages": manifest["page_count"],
        "rows": manifest["row_count"],
        "requests": client.stats.requests - client.stats.token_requests,
        "retries_429": client.stats.retries["HTTP 429"],
        "waited": client.stats.waited_seconds,
        "replay_seconds": replay,
    }


def describe_machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="at least this many rows in the day")
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--rate-limit", type=float, default=20.0, help="server and client limit, requests/s")
    parser.add_argument("--repeat", type=int, default=3, help="runs of (a); the median is reported")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    companies, day_rows = companies_for(args.rows, args.seed)
    print(f"machine: {describe_machine()}")
    print(f"day {DAY}: {companies:,} companies -> {day_rows:,} usage rows, pages of {args.page_size:,}")
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        print("\n(a) no rate limit")
        with simulator(companies, args.seed) as base_url:
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "fetch_day": []}
            for _ in range(args.repeat):
                runs["baseline"].append(baseline(base_url, args.page_size))
                runs["fetch_day"].append(ours(base_url, args.page_size, work))
        for name, label in (
            ("baseline", "bare requests loop (follow cursors only)"),
            ("fetch_day", "fetch_day (validate + land raw + manifest)"),
        ):
            seconds = statistics.median(run["seconds"] for run in runs[name])
            run = runs[name][0]
            print(
                f"  {label:<44} {seconds:6.2f} s  {run['rows'] / seconds:>10,.0f} rows/s  "
                f"{run['pages'] / seconds:6.1f} pages/s   (runs: "
                + ", ".join(f"{r['seconds']:.2f}" for r in runs[name])
                + " s)"
            )
        base = statistics.median(run["seconds"] for run in runs["baseline"])
        ours_median = statistics.median(run["seconds"] for run in runs["fetch_day"])
        replay = statistics.median(run["replay_seconds"] for run in runs["fetch_day"])
        print(f"  overhead of fetch_day over the bare loop: {ours_median / base - 1:+.0%}")
        print(f"  replay of the landed day from disk (read_landed_usage): {replay:.2f} s")

        print(f"\n(b) server limit {args.rate_limit:g} requests/s (token bucket, burst {args.rate_limit:g})")
        for label, client_limit in (
            (f"client limiter at {args.rate_limit:g}/s", args.rate_limit),
            ("no client limiter", 0.0),
        ):
            with simulator(companies, args.seed, rate_limit=args.rate_limit) as base_url:
                run = ours(base_url, args.page_size, work, requests_per_second=client_limit)
                server = sim_stats(base_url)
            requests_made = server["requests"]["/v1/usage/daily"]
            total = sum(requests_made.values())
            pages_rate = run["pages"] / run["seconds"]
            print(
                f"  {label:<28} {run['seconds']:6.2f} s  {run['pages']} pages  "
                f"{pages_rate:5.2f} pages/s = {pages_rate / args.rate_limit:.1%} of the limit  "
                f"requests {total} ({total / run['seconds']:.2f}/s)  429s: {server['rate_limited']}  "
                f"waited {run['waited']:.1f} s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
