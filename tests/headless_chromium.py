"""Headless Chromium for the tests of pages (Debian's `chromium`): offline except for loopback, a private
profile, the rendered DOM as text. Missing: skipped with the reason, a failure in CI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    reason = "headless Chromium is not installed (Debian: apt-get install chromium)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: browser tests must not be skipped in CI", pytrace=False)
    pytest.skip(reason)


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` once loaded, with every host but 127.0.0.1 unresolvable (as offline as CI)."""
    result = subprocess.run(
        [
            chromium_or_skip(),
            "--headless",
            "--no-sandbox",  # the tests may run as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
