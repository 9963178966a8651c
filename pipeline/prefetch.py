"""Produce the next pieces of a sequence in a background thread while the current one is used.

Reading a chunk of a CSV file on columns (pyarrow) and loading the previous one (the database's own
process; the driver waits for it without the GIL) use different cores, so a load of chunks costs about
the larger of the two rather than their sum. Likewise the API's server builds the next usage page while
this process checks and lands the one before.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

Piece = TypeVar("Piece")

_DONE = object()
_POLL_SECONDS = 0.1


class Prefetched(Generic[Piece]):
    """Iterate ``pieces`` with up to ``ahead`` of them produced in advance by a daemon thread.

    An exception raised by ``pieces`` (any, ``SystemExit`` too: the consumer must never wait for a thread
    that has ended) is raised by this iterator, in the consuming thread, where it would have been raised
    without the thread. :meth:`close` (also on leaving a ``with`` block) stops the producer at its next
    piece, so a load that fails does not leave a thread reading the rest of a file; it waits for the piece
    in progress unless ``wait_on_close`` is false (a request that may retry for minutes: the daemon thread
    ends by itself once it has it, and whatever it produced is dropped).
    """

    def __init__(
        self,
        pieces: Iterable[Piece],
        ahead: int = 1,
        *,
        name: str = "bulk-load-prefetch",
        wait_on_close: bool = True,
    ) -> None:
        self._queue: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=ahead)
        self._stopped = threading.Event()
        self._wait_on_close = wait_on_close
        self._thread = threading.Thread(target=self._produce, args=(iter(pieces),), name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Piece]:
        while True:
            piece, error = self._queue.get()
            if error is not None:
                raise error
            if piece is _DONE:
                return
            yield piece

    def close(self) -> None:
        self._stopped.set()
        if not self._wait_on_close:
            return  # the producer sees the stop when it next hands a piece over, within _POLL_SECONDS
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # a producer blocked on a full queue sees the stop
                self._queue.get(timeout=_POLL_SECONDS)
        self._thread.join()

    def __enter__(self) -> Prefetched[Piece]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _produce(self, pieces: Iterator[Piece]) -> None:
        try:
            for piece in pieces:
                if not self._put((piece, None)):
                    return
        except BaseException as error:  # handed over to the consuming thread, raised there
            self._put((None, error))
            return
        self._put((_DONE, None))

    def _put(self, item: tuple[Any, BaseException | None]) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
