"""Locks that make two runs of the same day safe when no central scheduler coordinates them.

``luigid`` never hands one task to two workers, but a second ``luigi ... --local-scheduler`` run, a cron
job overlapping an operator's run, or a backfill next to the nightly run each have their own scheduler.
Two kinds of lock cover them (docs/operations_concurrency.md):

* **Task locks** (:func:`exclusive_run`): every day task runs under an exclusive ``flock`` on
  ``{data_dir}/locks/<Family>/date=D.lock``, plus the lock of each raw landing it writes or reads
  (``{data_dir}/locks/raw/<dataset>/date=D.lock``: a fetch, the archive step of a refresh, and the
  staging that reads the landing exclude each other). Holding them, the task asks ``complete()`` again:
  a run that waited finds the work done by the other and skips it. The kernel drops an ``flock`` when
  its process dies, even by SIGKILL, so a crashed run never leaves a stale lock behind.
* **The warehouse write lock** (:func:`lock_warehouse_for_writing`): merge transactions take it first,
  and staging transactions on SQLite and MySQL. SQLite has it already (``BEGIN IMMEDIATE`` with a busy
  timeout: one writer at a time); on PostgreSQL it is a transaction-level advisory lock, released by the
  commit, the rollback or the server when the connection dies. One lock for all days, not one per day: a
  merge of D rewrites the rolling columns of D .. D+6 and reads D-6 .. D, so merges of nearby days must
  not interleave. On PostgreSQL staging takes the lock of its day instead (:func:`lock_staged_day`),
  which a merge takes too for the staged days it reads (docs/operations_concurrency.md).

Locks are taken in one global order (sorted paths, then the warehouse lock inside the task's run, then
staged-day locks), and no code waits for a task lock while it holds a database lock, so they cannot
deadlock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from luigi.task import flatten

from pipeline import clock
from pipeline.config import PipelineConfig
from pipeline.faultpoints import fault_point
from pipeline.orchestration.targets import LandingTarget, ValidatedTarget

log = logging.getLogger("pipeline")

LOCKS_DIR = "locks"
WAIT_LOG_EVERY_SECONDS = 60.0


class LockTimeoutError(RuntimeError):
    """Another run held a lock longer than ``[pipeline] lock_timeout_seconds``."""


# Locks held by this process, by path: a task whose run calls another locked run takes each lock once.
_held: dict[str, tuple[int, int]] = {}


def lock_timeout_seconds() -> float:
    """``[pipeline] lock_timeout_seconds``: how long a run waits for another run's lock, then fails."""
    return PipelineConfig().lock_timeout_seconds


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def file_lock(path: Path, *, what: str = "", timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); wait up to ``timeout`` seconds.

    Re-entrant within a process. The file keeps the holder's pid, host and start time for the waiting
    run's log line; it is never deleted (deleting a lock file races with a process about to lock it).
    """
    key = str(path)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    timeout = lock_timeout_seconds() if timeout is None else timeout
    what = what or key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, what, timeout)
        os.ftruncate(fd, 0)
        stamp = clock.now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        _held[key] = (fd, 1)
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(fd: int, what: str, timeout: float) -> None:
    started = time.monotonic()
    next_log = 0.0
    delay = 0.02
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = time.monotonic() - started
            if waited > 0.5:
                log.info("got the lock of %s after waiting %.1fs", what, waited)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        waited = time.monotonic() - started
        if waited >= timeout:
            raise LockTimeoutError(
                f"{what} is locked by {_holder(fd)}; gave up after waiting {waited:.0f}s "
                "([pipeline] lock_timeout_seconds). Is another run of the same day stuck?"
            )
        if waited >= next_log:
            log.info("%s is locked by %s (another run of the same day): waiting", what, _holder(fd))
            next_log = waited + WAIT_LOG_EVERY_SECONDS
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


# -- task locks ------------------------------------------------------------------------------------------


def locks_dir(data_dir: Path) -> Path:
    return Path(data_dir) / LOCKS_DIR


def landing_lock_path(data_dir: Path, landing_directory: Path) -> Path:
    """``raw/crm/date=D`` -> ``{data_dir}/locks/raw/crm/date=D.lock``."""
    directory = Path(landing_directory)
    return locks_dir(data_dir) / "raw" / directory.parent.name / f"{directory.name}.lock"


def task_lock_paths(task: Any) -> list[Path]:
    """The locks a day task runs under: its own, and those of the landings it writes or reads."""

    data_dir = Path(task.data_dir)
    paths = {locks_dir(data_dir) / task.get_task_family() / f"date={task.date.isoformat()}.lock"}
    targets = flatten(task.output()) + [
        target for dependency in flatten(task.requires()) for target in flatten(dependency.output())
    ]
    for target in targets:
        if isinstance(target, LandingTarget):
            paths.add(landing_lock_path(data_dir, target.directory))
    return sorted(paths)


@contextlib.contextmanager
def task_lock(task: Any) -> Iterator[None]:
    """Hold every lock of ``task`` (in sorted order, so that two tasks never wait for each other)."""
    name = f"{task.get_task_family()} for {task.date.isoformat()}"
    with contextlib.ExitStack() as stack:
        for path in task_lock_paths(task):
            stack.enter_context(file_lock(path, what=f"{name} ({path.name} in {path.parent.name})"))
        yield


def exclusive_run(run: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a day task's ``run``: take its locks, skip the work if another run did it meanwhile, tidy up."""

    @functools.wraps(run)
    def locked_run(task: Any) -> Any:
        family = task.get_task_family()
        with task_lock(task):
            if task.complete():
                log.info(
                    "%s for %s is already done (another run did it while this one waited): skipped",
                    family,
                    task.date,
                )
                return None
            remove_partial_writes(task)
            fault_point(f"run:{family}")
            result = run(task)
            fault_point(f"done:{family}")
            return result

    locked_run.__wrapped_by_lock__ = True  # type: ignore[attr-defined]
    return locked_run


def remove_partial_writes(task: Any) -> list[Path]:
    """Delete the temporary files a killed run left in the areas this task writes; returns them.

    Files are written to ``.<name>.<random>.part`` and renamed into place (``files.write_atomic``, the
    CRM download): a ``.part`` file is never part of a landing, and while we hold the task's lock no
    live process is writing one, so any we find belongs to a run that died.
    """

    found: list[Path] = []
    for target in flatten(task.output()):
        if isinstance(target, LandingTarget) and target.directory.is_dir():
            found.extend(target.directory.glob(".*.part"))
        elif isinstance(target, ValidatedTarget) and target.path.parent.is_dir():
            found.extend(target.path.parent.glob(f".{target.dataset}.*.part"))
    for path in found:
        log.info("removing %s, the partial write of a run that was interrupted", path)
        path.unlink(missing_ok=True)
    return found
