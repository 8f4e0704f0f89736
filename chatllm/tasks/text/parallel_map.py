"""An ordered concurrent map for the work that splits (batch rows, classified lines, summary chunks).

Each worker owns one resource, in practice its own engine connection: an engine keeps per-call state (last_stats, a
token memo), so two threads never share one. Results come back in input order whatever order they finish in.
`in_input_order` does the same for results an engine's own batch hands back as they finish (several sequences per
decode, in one thread).
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W")
_WAIT = 0.1  # seconds between checks of the stop flag while blocked


def ordered_map(fn: Callable[[W, T], R], items: Iterable[T], workers: Sequence[W], *, ahead: int | None = None) -> Iterator[R]:
    """fn(worker, item) for every item, one thread per worker; results yielded in input order as each comes due.

    One worker runs everything in the calling thread, exactly as a plain loop. With more, a feeder thread reads the
    input (so a slow stdin does not hold finished results back) and at most `ahead` items (default: two per worker)
    are in flight or waiting past the one due. The first error, in input order, is raised after every result before
    it was yielded; later items are not started. Ctrl-C in the caller (or closing this iterator) stops handing out
    work at once: workers are daemon threads, so a request in flight finishes on its own or dies with the process.
    """
    if not workers:
        raise ValueError("ordered_map needs at least one worker")
    if len(workers) == 1:
        for item in items:
            yield fn(workers[0], item)
        return
    pool = _Pool(fn, list(workers), items, ahead or 2 * len(workers))
    try:
        yield from pool.results()
    finally:
        pool.stop()


def in_input_order(results: Iterable[R], index: Callable[[R], int], start: int = 0) -> Iterator[R]:
    """Results that arrive in any order (each knows its input index), yielded in input order as each comes due."""
    held: dict[int, R] = {}
    due = start
    for result in results:
        held[index(result)] = result
        while due in held:
            yield held.pop(due)
            due += 1
    for i in sorted(held):  # an input that never ran leaves a gap: what came after it still goes out, in order
        yield held.pop(i)


class _Pool(Generic[W, T, R]):
    def __init__(self, fn: Callable[[W, T], R], workers: list[W], items: Iterable[T], window: int):
        self._fn = fn
        self._todo: queue.SimpleQueue[tuple[int, T] | None] = queue.SimpleQueue()
        self._done: dict[int, tuple[bool, object]] = {}
        self._cond = threading.Condition()
        self._room = threading.Semaphore(max(window, len(workers)))
        self._stop = threading.Event()
        self._end: int | None = None  # how many items there are, once the feeder has read them all
        self._failed: int | None = None  # the lowest index that failed: nothing after it is started
        self._workers = len(workers)
        threading.Thread(target=self._feed, args=(items,), name="chatllm-feed", daemon=True).start()
        for i, worker in enumerate(workers):
            threading.Thread(target=self._work, args=(worker,), name=f"chatllm-worker-{i}", daemon=True).start()

    def _feed(self, items: Iterable[T]) -> None:
        index = 0
        try:
            for item in items:
                while not self._room.acquire(timeout=_WAIT):
                    if self._stop.is_set():
                        return
                if self._stop.is_set() or self._failed is not None:
                    return
                self._todo.put((index, item))
                index += 1
        except BaseException as exc:  # the input's own error, raised in order after the items read before it
            self._finish(index, False, exc)
            index += 1
        finally:
            with self._cond:
                self._end = index
                self._cond.notify_all()
            for _ in range(self._workers):
                self._todo.put(None)

    def _work(self, worker: W) -> None:
        while True:
            job = self._todo.get()
            if job is None or self._stop.is_set():
                return
            index, item = job
            if self._failed is not None and index > self._failed:
                self._finish(index, True, None)  # never yielded: the error before it is raised first
                continue
            try:
                outcome: tuple[bool, object] = (True, self._fn(worker, item))
            except BaseException as exc:
                outcome = (False, exc)
            self._finish(index, *outcome)

    def _finish(self, index: int, ok: bool, value: object) -> None:
        with self._cond:
            self._done[index] = (ok, value)
            if not ok and (self._failed is None or index < self._failed):
                self._failed = index
            self._cond.notify_all()

    def results(self) -> Iterator[R]:
        """Yield the results in input order; raise the first failure in that order."""
        due = 0
        while True:
            with self._cond:
                while due not in self._done and (self._end is None or due < self._end):
                    self._cond.wait(_WAIT)
                if due not in self._done:
                    return
                ok, value = self._done.pop(due)
            self._room.release()
            if not ok:
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
            due += 1

    def stop(self) -> None:
        """Hand out no more work; idle workers and the feeder exit, busy ones after their current item."""
        self._stop.set()
        for _ in range(self._workers):
            self._todo.put(None)
