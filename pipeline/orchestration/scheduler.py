"""Which Luigi scheduler a run uses: luigid when it is listening, otherwise the local one.

``luigi --module pipeline RunDaily --date D`` must work on a fresh machine with nothing else running
(docs/contract.md section 7), and use the central scheduler and its visualiser as soon as one runs (``make
scheduler``). Luigi itself would fail with a connection error when ``luigid`` is down, so before Luigi
builds its scheduler we probe the one the run would use and fall back to the local scheduler, saying so.

The probe runs when ``pipeline`` is imported, which ``luigi --module pipeline`` does before it parses
the rest of its command line; so the scheduler options of that command line (``--scheduler-host``,
``--scheduler-port``, ``--scheduler-url``, ``--local-scheduler``) are read here from ``sys.argv``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import urllib.parse
from collections.abc import Sequence

import luigi.configuration

log = logging.getLogger("pipeline")
PROBE_TIMEOUT_SECONDS = 0.5
VISUALISER_PATH = "/static/visualiser/index.html"


def command_line_scheduler_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The scheduler options of a ``luigi`` command line (``--x`` or ``--core-x``); None when absent."""
    if argv is None:
        # Only the `luigi` command's own arguments mean anything here (not pytest's, say).
        argv = sys.argv[1:] if "luigi.cmdline" in sys.modules else []
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("scheduler-url", "scheduler-host", "scheduler-port"):
        parser.add_argument(f"--{name}", f"--core-{name}", dest=name.replace("-", "_"))
    parser.add_argument(
        "--local-scheduler", "--core-local-scheduler", dest="local_scheduler", action="store_true"
    )
    options, _ = parser.parse_known_args(list(argv))
    return options


def scheduler_address(argv: Sequence[str] | None = None) -> tuple[str, int]:
    """Host and port of the luigid a run would talk to, resolved as Luigi does (command line first)."""
    options = command_line_scheduler_options(argv)
    url = options.scheduler_url or _core_option("scheduler_url", "")
    if url:
        parts = urllib.parse.urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 80
        return parts.hostname or "localhost", parts.port or default_port
    host = options.scheduler_host or _core_option("scheduler_host", "localhost")
    port = int(options.scheduler_port or _core_option("scheduler_port", "8082"))
    return host, port


def _core_option(name: str, default: str) -> str:
    """``[core] name``, else Luigi's older spelling ``[core] default_name``."""
    config = luigi.configuration.get_config()
    for option in (name, f"default_{name}"):
        value = config.get("core", option, "") or ""
        if value:
            return value
    return default


def visualiser_url(host: str, port: int) -> str:
    return f"http://{host}:{port}{VISUALISER_PATH}"


def luigid_is_listening(host: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fall_back_to_local_scheduler_when_luigid_is_down(argv: Sequence[str] | None = None) -> bool:
    """Set ``[core] local_scheduler`` when no luigid answers; True when it did.

    An explicit choice is left alone: ``local_scheduler`` in a config file or ``--local-scheduler``.
    """
    config = luigi.configuration.get_config()
    if config.has_option("core", "local_scheduler") or config.has_option("core", "local-scheduler"):
        return False
    if command_line_scheduler_options(argv).local_scheduler:
        return False
    host, port = scheduler_address(argv)
    if luigid_is_listening(host, port):
        log.info("scheduler: luigid at %s:%d; visualiser: %s", host, port, visualiser_url(host, port))
        return False
    log.info(
        "scheduler: no luigid listening on %s:%d, so this run uses the local scheduler and will not "
        "show in a visualiser. Start luigid with `make scheduler` (or set [core] "
        "scheduler_host/scheduler_port), or pass --local-scheduler to skip this check.",
        host,
        port,
    )
    config.set("core", "local_scheduler", "true")
    return True
