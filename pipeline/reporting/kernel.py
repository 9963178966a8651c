"""One notebook kernel per run, reused by every report the run executes.

Starting an IPython kernel costs about 2.5 s, more than the report's own cells on a small warehouse; a
backfill with the report on would pay it once per day. So a kernel is started once and kept for the next
reports. Each report starts by clearing the kernel's namespace (IPython's ``reset``, as ``%reset -f``), its
execution counter, its open figures, and by moving it into the day's folder, so nothing one day defines
is visible to the next and the executed notebook is the one a fresh kernel writes.

Where the reports run decides who starts the kernel:

* ``luigi`` with one worker runs every ``RenderReport`` in its own process: the first report starts the
  kernel lazily and the next ones reuse it.
* ``luigi --workers N`` (N > 1) runs each task in a process forked for it, which would start a kernel per
  report. So the process that forks them starts one beforehand (:func:`start_for_task_processes`, called
  while Luigi schedules a report), and the task processes take turns on it, one report at a time (an
  ``flock`` in the kernel's private directory). A task process never shuts that kernel down; when a report
  fails on it, or finds that the previous one never finished (its process was killed mid-report), the
  kernel is killed and marked spoiled, and that report and the later ones start kernels of their own.
  A kernel a process started for its own reports is never lent to the processes it forks: a forked child
  must not talk over its parent's sockets.

A process's own kernel is replaced by a new one when:

* the report needs another environment (another warehouse): the environment is fixed at kernel start;
* the kernel died, or the previous report failed in any way (a cell error, a cell timeout with the cell
  possibly still running, a dead kernel): the failed kernel is shut down and not trusted again.

A kernel is shut down when the process that started it exits: ``atexit`` for the process ``luigi`` runs
in, and multiprocessing's exit finalizers for the task processes it forks (they leave with ``os._exit``,
which skips ``atexit``). It talks over Unix sockets in a private temporary directory, removed with it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline.report")

# Run silently (no execution count, no history) before each report's cells: IPython's reset is what
# `%reset -f` does (the user namespace, In/Out and the output cache); new_session also restarts the
# execution counter at 1, as in a fresh kernel, in a new history session (the old one already has
# those line numbers). Then the day's folder (where a fresh kernel would have been started) and no
# figure left open by an earlier report.
_RESET_CODE = """\
get_ipython().reset(new_session=True)
import os as _os, sys as _sys
_os.chdir({working_dir!r})
if "matplotlib.pyplot" in _sys.modules:
    _sys.modules["matplotlib.pyplot"].close("all")
del _os, _sys
"""


class KernelResetError(RuntimeError):
    """The reused kernel could not be reset before a report."""


class _Kernel:
    """A kernel of this process: its manager, its socket directory, what it has served."""

    def __init__(self, environment: dict[str, str]) -> None:
        from jupyter_client.manager import AsyncKernelManager

        self.owner_pid = os.getpid()
        self.environment = dict(environment)
        # Unix sockets in a private directory rather than loopback TCP ports, which any local user could
        # connect to. mkdtemp, not TemporaryDirectory: a forked child must never remove its parent's.
        self.sockets = _private_socket_dir()
        self.manager = AsyncKernelManager(
            kernel_name="python3", transport="ipc", ip=str(self.sockets / "kernel")
        )
        self.reports = 0
        self.cells_started = False
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        process = getattr(self.manager.provisioner, "process", None)
        return getattr(process, "pid", None)

    @property
    def spoiled_mark(self) -> Path:
        """Lent to task processes, this file marks the kernel as never to be used again in the run."""
        return self.sockets / "spoiled"

    def alive(self) -> bool:
        process = getattr(self.manager.provisioner, "process", None)
        return process is not None and process.poll() is None

    async def start(self, working_dir: Path) -> None:
        if not self.manager.has_kernel:
            self.started_at = time.monotonic()
            await self.manager.start_kernel(
                # History in memory, as nbclient starts its kernels: no SQLite file under ~/.ipython.
                extra_arguments=["--HistoryManager.hist_file=:memory:"],
                cwd=str(working_dir),
                env=self.environment,
            )

    async def execute(self, notebook: Any, working_dir: Path, timeout: int) -> None:
        self.cells_started = False
        await self.start(working_dir)
        await _run_report(self.manager, self, notebook, working_dir, timeout)

    async def shutdown(self) -> None:
        try:
            if self.manager.has_kernel:
                # now: the kernel holds nothing worth a graceful goodbye, and a hung one would not answer.
                await self.manager.shutdown_kernel(now=True)
            else:
                await self.manager.cleanup_resources()
        finally:
            shutil.rmtree(self.sockets, ignore_errors=True)


async def _run_report(manager: Any, state: Any, notebook: Any, working_dir: Path, timeout: int) -> None:
    """Reset the kernel of ``manager`` and execute ``notebook`` on it; ``state.cells_started`` tells,
    after a failure, whether any of the notebook's cells had started."""
    from nbclient import NotebookClient

    client = NotebookClient(
        notebook, km=manager, timeout=timeout, resources={"metadata": {"path": str(working_dir)}}
    )
    # A client per report, on this report's event loop; the kernel outlives both.
    await client.async_start_new_kernel_client()
    try:
        assert client.kc is not None
        message_id = client.kc.execute(
            _RESET_CODE.format(working_dir=str(working_dir)), silent=True, store_history=False
        )
        reply = await client.async_wait_for_reply(message_id)
        if reply is None or reply["content"].get("status") != "ok":
            content = reply["content"] if reply else {}
            raise KernelResetError(
                f"the report kernel could not be reset: {content.get('ename')}: {content.get('evalue')}"
            )
        # cleanup_kc=False: the kernel stays up for the next report.
        state.cells_started = True
        await client.async_execute(cleanup_kc=False)
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
            client.kc = None


class _KernelNotUsable(Exception):
    """The kernel lent by the parent process cannot serve this report; it starts a kernel of its own."""


class _LentKernelManager:
    """What nbclient asks of a kernel manager, for the kernel lent by the parent process: clients of it.
    It never starts, interrupts or shuts that kernel down."""

    has_kernel = True

    def __init__(self, connection_info: dict[str, Any], pid: int | None) -> None:
        self.connection_info = connection_info
        self.pid = pid

    def client(self) -> Any:
        from jupyter_client.asynchronous import AsyncKernelClient

        pid = self.pid

        class LentKernelClient(AsyncKernelClient):
            # A client without its kernel's manager would judge the kernel by its heartbeat, which calls
            # it dead after one pong slower than a second (a loaded machine): ask whether it runs instead,
            # as a kernel's own manager does.
            async def _async_is_alive(self) -> bool:
                return _running(pid)

            is_alive = _async_is_alive

        client = LentKernelClient()
        client.load_connection_info(self.connection_info)
        return client

    async def is_alive(self) -> bool:
        return True

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        return None

    async def cleanup_resources(self, restart: bool = False) -> None:
        return None


class _Borrowed:
    """A task process's turn on the kernel its parent lent (see the module's docstring)."""

    def __init__(self, lent: _Kernel) -> None:
        self.lent = lent
        self.cells_started = False

    @property
    def pid(self) -> int | None:
        return self.lent.pid

    def execute(self, notebook: Any, working_dir: Path, timeout: int) -> None:
        directory = self.lent.sockets
        # Another report's turn lasts at most its cells' timeout, unless it hangs: past that, this report
        # does not wait on it but starts a kernel of its own.
        with _turn(directory / "turn.lock", wait_seconds=timeout if timeout > 0 else _LONGEST_TURN_WAIT):
            unfinished = directory / "report-running"
            if self.lent.spoiled_mark.exists():
                raise _KernelNotUsable("it was spoiled by an earlier report")
            if unfinished.exists():
                self._spoil()
                raise _KernelNotUsable("the previous report on it never finished (its process was killed)")
            if not _running(self.pid):
                self._spoil()
                raise _KernelNotUsable("it is not running")
            unfinished.touch()
            self.cells_started = False
            manager = _LentKernelManager(self.lent.manager.get_connection_info(), self.pid)
            try:
                asyncio.run(_run_report(manager, self, notebook, working_dir, timeout))
            except BaseException as error:
                self._spoil()
                if isinstance(error, Exception) and not self.cells_started:
                    raise _KernelNotUsable(f"{type(error).__name__}: {error}") from error
                raise
            unfinished.unlink()
            # One byte per report served: a process killed while appending cannot garble the count.
            with contextlib.suppress(OSError), open(directory / "reports-served", "ab") as served:
                served.write(b".")

    def _spoil(self) -> None:
        """Never use the lent kernel again in this run, and stop whatever it may still be running."""
        self.lent.spoiled_mark.touch()
        if self.pid is not None and _running(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


# How long a report waits for its turn on the lent kernel when reports have no cell timeout.
_LONGEST_TURN_WAIT = 600


@contextlib.contextmanager
def _turn(lock_file: Path, wait_seconds: float) -> Iterator[None]:
    """Hold the lent kernel alone: one report at a time, whatever the task processes do. Raises
    :class:`_KernelNotUsable` when the kernel is not free within ``wait_seconds``."""
    with open(lock_file, "a") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _KernelNotUsable(
                        f"another report held it for more than {wait_seconds:g}s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _running(pid: int | None) -> bool:
    """Whether ``pid`` is a live process; a zombie (dead, not yet reaped by its parent) is not."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel whether the process exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


# A Unix socket's path has room for 107 bytes (sun_path); the kernel adds "kernel-<n>-<port>" to the dir.
_MAX_SOCKET_DIR = 80


def _private_socket_dir() -> Path:
    """A new directory only this user can enter, short enough for socket paths: under $TMPDIR when that
    is short, else under /tmp (a long $TMPDIR made the kernel fail with "File name too long")."""
    directory = Path(tempfile.mkdtemp(prefix="churn-report-kernel-"))
    if len(str(directory)) <= _MAX_SOCKET_DIR:
        return directory
    directory.rmdir()
    return Path(tempfile.mkdtemp(prefix="report-kernel-", dir="/tmp"))


_current: _Kernel | None = None
# The kernel this process started for the task processes it forks (start_for_task_processes).
_lent: _Kernel | None = None
_lending_failed_pid: int | None = None
_borrowed: _Borrowed | None = None
# Kernels of a parent process, inherited by fork: kept referenced so that the child never finalizes
# (closes) the parent's sockets; the parent shuts them down.
_inherited: list[_Kernel] = []
_exit_hooks_pid: int | None = None
_reuse_logged_pid: int | None = None


def execute(notebook: Any, *, working_dir: Path, environment: dict[str, str], timeout: int) -> Any:
    """Run every cell of ``notebook`` with ``environment``: on the kernel the parent process lent for its
    task processes when there is one, else in this process's own kernel (started if needed).

    Raises what nbclient raises (``CellExecutionError`` for a raising cell, ``CellTimeoutError``,
    ``DeadKernelError``); after any failure the kernel is shut down (a lent one killed), and the next
    report starts a new one.
    """
    borrowed = _borrowed_for(environment)
    if borrowed is not None:
        try:
            borrowed.execute(notebook, working_dir, timeout)
        except _KernelNotUsable as reason:
            log.warning(
                "the report kernel this run started for its task processes (pid %s) cannot serve this "
                "report (%s): a kernel of this process",
                borrowed.pid,
                reason,
            )
        else:
            log.info(
                "report executed on the kernel (pid %s) this run started for its task processes, its "
                "namespace cleared before",
                borrowed.pid,
            )
            return notebook
    return _execute_on_own_kernel(notebook, working_dir, environment, timeout)


def _execute_on_own_kernel(
    notebook: Any, working_dir: Path, environment: dict[str, str], timeout: int
) -> Any:
    global _reuse_logged_pid
    kernel = _kernel_for(environment)
    reused = kernel.reports > 0
    try:
        # A fresh event loop per report, all of it awaited on this thread: the synchronous API parks
        # nested calls on a helper thread that a forked worker (luigi --workers N) inherits dead.
        asyncio.run(kernel.execute(notebook, working_dir, timeout))
    except Exception as error:
        _shutdown_own()
        if not reused or kernel.cells_started:
            raise
        # The kept kernel failed before any cell ran (it died between reports and nothing noticed, or
        # could not be reset): this report gets a fresh kernel, as it would have without reuse.
        log.warning("the reused report kernel failed before the report ran (%s): a new kernel", error)
        kernel = _kernel_for(environment)
        reused = False
        try:
            asyncio.run(kernel.execute(notebook, working_dir, timeout))
        except BaseException:
            _shutdown_own()
            raise
    except BaseException:
        _shutdown_own()
        raise
    kernel.reports += 1
    if reused and _reuse_logged_pid != os.getpid():
        _reuse_logged_pid = os.getpid()
        log.info(
            "reusing the report kernel (pid %s) of this process: one kernel start for all its reports, "
            "its namespace cleared before each",
            kernel.pid,
        )
    return notebook


def start_for_task_processes(environment: dict[str, str], working_dir: Path) -> None:
    """Start a kernel with ``environment`` in this process and lend it to the task processes it forks
    (``luigi --workers N``): their reports take turns on it instead of starting a kernel each. A no-op when
    this process already lent one; the kernel is shut down when this process exits."""
    global _lent, _lending_failed_pid
    if (_lent is not None and _lent.owner_pid == os.getpid()) or _lending_failed_pid == os.getpid():
        return
    kernel = _lent = _Kernel(environment)
    _register_exit_hooks()
    try:
        working_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(kernel.start(working_dir))
    except BaseException:
        _lending_failed_pid = os.getpid()  # tried once: each report then starts its own, as without it
        _shutdown_lent()
        raise
    log.info(
        "started the report kernel (pid %s) for this run's task processes: they take turns on it", kernel.pid
    )


def lent_kernel_pid() -> int | None:
    """The process id of the kernel this process lent to its task processes, None without one running."""
    kernel = _lent
    if kernel is None or kernel.owner_pid != os.getpid() or not kernel.alive():
        return None
    return kernel.pid


def reports_served() -> int:
    """How many reports the current kernel of this process has executed (0: none running)."""
    kernel = _current
    return kernel.reports if kernel is not None and kernel.owner_pid == os.getpid() else 0


def kernel_pid() -> int | None:
    """The process id of this process's kernel, None when it has none running."""
    kernel = _current
    if kernel is None or kernel.owner_pid != os.getpid() or not kernel.alive():
        return None
    return kernel.pid


def shutdown() -> None:
    """Shut the kernels this process started down (a no-op without any); the next report starts a new one."""
    _shutdown_own()
    _shutdown_lent()


def _shutdown_own() -> None:
    global _current
    kernel, _current = _current, None
    if kernel is None or not _started_here(kernel):
        return
    if kernel.reports > 1:
        log.info("the report kernel (pid %s) served %d reports in this process", kernel.pid, kernel.reports)
    _stop(kernel)


def _shutdown_lent() -> None:
    global _lent
    kernel, _lent = _lent, None
    if kernel is None or not _started_here(kernel):
        return
    served = kernel.sockets / "reports-served"
    log.info(
        "the report kernel (pid %s) served %d report(s) of this run's task processes",
        kernel.pid,
        served.stat().st_size if served.exists() else 0,
    )
    _stop(kernel)


def _started_here(kernel: _Kernel) -> bool:
    """Whether this process started ``kernel``. A parent's kernel, inherited by fork, is left to the parent
    and kept referenced, so that this process never finalizes (closes) the parent's sockets."""
    if kernel.owner_pid == os.getpid():
        return True
    _inherited.append(kernel)
    return False


def _stop(kernel: _Kernel) -> None:
    try:
        asyncio.run(kernel.shutdown())
    except Exception:
        # Whatever went wrong: this runs at exit or after a failed report, so it falls back to killing the
        # process rather than masking the report's error or leaving an orphan.
        log.warning("could not shut the report kernel (pid %s) down cleanly", kernel.pid, exc_info=True)
        process = getattr(kernel.manager.provisioner, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _borrowed_for(environment: dict[str, str]) -> _Borrowed | None:
    """This task process's turn on the kernel its parent lent, when it lent one for this environment."""
    global _borrowed
    lent = _lent
    if lent is None or lent.owner_pid == os.getpid() or lent.environment != environment:
        return None
    if _borrowed is None or _borrowed.lent is not lent:
        _borrowed = _Borrowed(lent)
    return _borrowed


def _kernel_for(environment: dict[str, str]) -> _Kernel:
    global _current, _lent
    kernel = _current
    if kernel is not None and not _started_here(kernel):
        kernel = _current = None
    lent = _lent
    if (
        kernel is None
        and lent is not None
        and lent.owner_pid == os.getpid()
        and lent.environment == environment
        and lent.alive()
        and not lent.spoiled_mark.exists()
    ):
        # The process that started a kernel for its task processes runs the reports itself after all
        # (luigi.build(..., workers=1) where luigi.cfg says more): they use that kernel, not a second one.
        kernel, _current, _lent = lent, lent, None
    if kernel is not None and (kernel.environment != environment or (kernel.reports and not kernel.alive())):
        if kernel.environment != environment:
            log.info("the report needs another kernel environment (another warehouse): a new kernel")
        else:
            log.warning("the report kernel (pid %s) died between reports: a new kernel", kernel.pid)
        _shutdown_own()
        kernel = None
    if kernel is None:
        kernel = _current = _Kernel(environment)
        _register_exit_hooks()
    return kernel


def _register_exit_hooks() -> None:
    global _exit_hooks_pid
    if _exit_hooks_pid == os.getpid():
        return
    import multiprocessing.util

    _exit_hooks_pid = os.getpid()
    atexit.register(shutdown)
    # A multiprocessing child (a luigi task process) exits with os._exit after running these, not atexit.
    multiprocessing.util.Finalize(None, shutdown, exitpriority=10)
