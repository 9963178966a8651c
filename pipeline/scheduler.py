"""Which Luigi scheduler a run uses: luigid when it is listening, otherwise the local one.

``luigi --module pipeline RunDaily --date D`` must work on a fresh machine with nothing else running
(SPEC section 7), and use the central scheduler and its visualiser as soon as one runs (``make
scheduler``). Luigi itself would fail with a connection error when ``luigid`` is down, so before Luigi
builds its scheduler we probe the configured one and fall back to the local scheduler, saying so.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse

import luigi.configuration

log = logging.getLogger("pipeline")
PROBE_TIMEOUT_SECONDS = 0.5


def scheduler_address() -> tuple[str, int]:
    config = luigi.configuration.get_config()
    url = config.get("core", "scheduler_url", "") or ""
    if url:
        parts = urllib.parse.urlsplit(url)
        return parts.hostname or "localhost", parts.port or 80
    host = config.get("core", "default_scheduler_host", "localhost")
    port = config.getint("core", "default_scheduler_port", 8082)
    return host, port


def luigid_is_listening(host: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fall_back_to_local_scheduler_when_luigid_is_down() -> None:
    """Set ``[core] local_scheduler`` when no luigid answers; an explicit setting is left alone."""
    config = luigi.configuration.get_config()
    if config.has_option("core", "local_scheduler") or config.has_option("core", "local-scheduler"):
        return
    host, port = scheduler_address()
    if not luigid_is_listening(host, port):
        log.info(
            "no luigid at %s:%d: using the local scheduler (start one with `make scheduler`)", host, port
        )
        config.set("core", "local_scheduler", "true")
