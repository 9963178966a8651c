"""One notebook kernel per process, reused by every report that process executes.

Starting an IPython kernel costs about 2.5 s, more than the report's own cells on a small warehouse; a
backfill with the report on would pay it once per day. So the kernel is started lazily by the first
report of a process and kept for the next ones (``luigi`` with one worker runs every ``RenderReport``
of a ``RangeDaily`` in its own process). Each report starts by clearing the kernel's namespace (IPython's
``reset``, as ``%reset -f``), its execution counter, its open figures, and by moving it into the day's
folder, so nothing one day defines is visible to the next and the executed notebook is the one a fresh
kernel writes.

A new kernel is started instead of reusing the current one when:

* the process is not the one that started it: ``luigi --workers N`` forks a process per task, and a
  forked child must not talk over its parent's sockets (the parent owns and shuts down its kernel);
* the report needs another environment (another warehouse): the environment is fixed at kernel start;
* the kernel died, or the previous report failed in any way (a cell error, a cell timeout with the cell
  possibly still running, a dead kernel): the failed kernel is shut down and not trusted again.

The kernel is shut down when the process exits: ``atexit`` for the process ``luigi`` runs in, and
multiprocessing's exit finalizers for the task processes it forks (they leave with ``os._exit``, which
skips ``atexit``). It talks over Unix sockets in a private temporary directory, removed with it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
import time
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

    def alive(self) -> bool:
        process = getattr(self.manager.provisioner, "process", None)
        return process is not None and process.poll() is None

    async def execute(self, notebook: Any, working_dir: Path, timeout: int) -> None:
        from nbclient import NotebookClient

        self.cells_started = False
        if not self.manager.has_kernel:
            self.started_at = time.monotonic()
            await self.manager.start_kernel(
                # History in memory, as nbclient starts its kernels: no SQLite file under ~/.ipython.
                extra_arguments=["--HistoryManager.hist_file=:memory:"],
                cwd=str(working_dir),
                env=self.environment,
            )
        client = NotebookClient(
            notebook, km=self.manager, timeout=timeout, resources={"metadata": {"path": str(working_dir)}}
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
            self.cells_started = True
            await client.async_execute(cleanup_kc=False)
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
                client.kc = None

    async def shutdown(self) -> None:
        try:
            if self.manager.has_kernel:
                # now: the kernel holds nothing worth a graceful goodbye, and a hung one would not answer.
                await self.manager.shutdown_kernel(now=True)
            else:
                await self.manager.cleanup_resources()
        finally:
            shutil.rmtree(self.sockets, ignore_errors=True)


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
# Kernels of a parent process, inherited by fork: kept referenced so that the child never finalizes
# (closes) the parent's sockets; the parent shuts them down.
_inherited: list[_Kernel] = []
_exit_hooks_pid: int | None = None
_reuse_logged_pid: int | None = None


def execute(notebook: Any, *, working_dir: Path, environment: dict[str, str], timeout: int) -> Any:
    """Run every cell of ``notebook`` in this process's kernel (started if needed) with ``environment``.

    Raises what nbclient raises (``CellExecutionError`` for a raising cell, ``CellTimeoutError``,
    ``DeadKernelError``); after any failure the kernel is shut down, and the next report starts a new one.
    """
    global _reuse_logged_pid
    kernel = _kernel_for(environment)
    reused = kernel.reports > 0
    try:
        # A fresh event loop per report, all of it awaited on this thread: the synchronous API parks
        # nested calls on a helper thread that a forked worker (luigi --workers N) inherits dead.
        asyncio.run(kernel.execute(notebook, working_dir, timeout))
    except Exception as error:
        shutdown()
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
            shutdown()
            raise
    except BaseException:
        shutdown()
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
    """Shut this process's kernel down (a no-op without one); the next report starts a new one."""
    global _current
    kernel, _current = _current, None
    if kernel is None:
        return
    if kernel.owner_pid != os.getpid():
        _inherited.append(kernel)
        return
    if kernel.reports > 1:
        log.info("the report kernel (pid %s) served %d reports in this process", kernel.pid, kernel.reports)
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


def _kernel_for(environment: dict[str, str]) -> _Kernel:
    global _current
    kernel = _current
    if kernel is not None and kernel.owner_pid != os.getpid():
        _inherited.append(kernel)
        kernel = _current = None
    if kernel is not None and (kernel.environment != environment or (kernel.reports and not kernel.alive())):
        if kernel.environment != environment:
            log.info("the report needs another kernel environment (another warehouse): a new kernel")
        else:
            log.warning("the report kernel (pid %s) died between reports: a new kernel", kernel.pid)
        shutdown()
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
