"""The next pieces of a sequence (a bulk load, usage pages) are produced in a background thread, in order,
and a failure producing one is raised where the pieces are consumed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pipeline.prefetch import Prefetched


class Broken(Exception):
    pass


def test_pieces_come_in_order_produced_by_another_thread() -> None:
    producers: list[str] = []

    def pieces() -> Iterator[int]:
        for number in range(50):
            producers.append(threading.current_thread().name)
            yield number

    with Prefetched(pieces(), ahead=2) as prefetched:
        assert list(prefetched) == list(range(50))
    assert set(producers) == {"bulk-load-prefetch"}  # the default name; Prefetched(..., name=) another


def test_the_next_piece_is_produced_while_the_current_one_is_being_loaded() -> None:
    second_piece_started = threading.Event()

    def pieces() -> Iterator[int]:
        yield 1
        second_piece_started.set()
        yield 2

    with Prefetched(pieces()) as prefetched:
        consumed = iter(prefetched)
        assert next(consumed) == 1
        # The consumer holds piece 1 (its load) and has not asked for piece 2: it is under way anyway.
        assert second_piece_started.wait(timeout=10)
        assert list(consumed) == [2]


@pytest.mark.parametrize(
    "failure",
    # SystemExit is no Exception: a producer ended by it must not leave the consumer waiting either
    [Broken("chunk 3 cannot be read"), SystemExit("chunk 3 cannot be read")],
)
def test_a_failure_producing_a_piece_is_raised_to_the_consumer_after_the_pieces_before_it(
    failure: BaseException,
) -> None:
    def pieces() -> Iterator[int]:
        yield 1
        yield 2
        raise failure

    received = []
    with Prefetched(pieces()) as prefetched, pytest.raises(type(failure), match="chunk 3"):
        for piece in prefetched:
            received.append(piece)
    assert received == [1, 2]


def test_closing_early_stops_the_producer_at_its_next_piece() -> None:
    produced: list[int] = []

    def pieces() -> Iterator[int]:
        for number in range(1_000):
            produced.append(number)
            yield number

    prefetched = Prefetched(pieces(), ahead=1)
    first = next(iter(prefetched))
    prefetched.close()
    assert first == 0
    assert len(produced) <= 3  # the one consumed, the one queued, the one waiting to be queued
    assert not prefetched._thread.is_alive()


def test_closing_without_waiting_returns_while_a_piece_is_in_progress_and_the_thread_ends_by_itself() -> None:
    """A usage fetch that fails does not wait for the next page's request, which may retry for minutes."""
    in_progress, release = threading.Event(), threading.Event()
    produced: list[int] = []

    def pieces() -> Iterator[int]:
        yield 1
        in_progress.set()
        release.wait(timeout=30)  # a request that takes its time
        produced.append(2)
        yield 2
        produced.append(3)
        yield 3

    prefetched = Prefetched(pieces(), wait_on_close=False)
    assert next(iter(prefetched)) == 1
    assert in_progress.wait(timeout=10)
    prefetched.close()  # returns at once: the producer is still inside piece 2
    assert prefetched._thread.is_alive()
    release.set()
    prefetched._thread.join(timeout=10)
    assert not prefetched._thread.is_alive()
    assert produced == [2]  # it ended when it offered piece 2, and produced nothing after it
