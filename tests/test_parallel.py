"""The ordered concurrent map (chatllm.tasks.text.parallel_map) and the tasks that use it, on fake engines (no model, no server)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from chatllm.errors import ChatllmError, EngineUnavailable
from chatllm.settings import Sampling
from chatllm.tasks.ask import batch
from chatllm.tasks.summarize import Summarizer, SummaryOptions
from chatllm.tasks.text.parallel_map import ordered_map
from tests.fakes import FakeEngine


def slow_square(worker: str, x: int) -> tuple[str, int]:
    time.sleep(random.Random(x).uniform(0, 0.02))  # finish out of order
    return worker, x * x


def test_results_keep_input_order_and_every_worker_takes_a_share():
    out = list(ordered_map(slow_square, range(60), ["a", "b", "c", "d"]))
    assert [x for _, x in out] == [i * i for i in range(60)]
    assert {w for w, _ in out} == {"a", "b", "c", "d"}


def test_one_worker_runs_in_the_calling_thread():
    seen = []
    list(ordered_map(lambda w, x: seen.append(threading.current_thread()), range(3), ["only"]))
    assert seen == [threading.main_thread()] * 3


def test_at_most_two_items_per_worker_are_read_ahead():
    read, running, peak = [0], [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(40):
            read[0] += 1
            yield i

    def work(w, x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return x

    for i, x in enumerate(ordered_map(work, items(), [0, 1])):
        assert x == i
        assert read[0] <= i + 1 + 4 + 1  # the one due, the window of 4, one held by the feeder
    assert peak[0] <= 2


def test_the_first_error_in_input_order_comes_after_the_results_before_it():
    started = []

    def work(w, x):
        started.append(x)
        time.sleep(0.01 if x != 5 else 0.03)
        if x in (5, 7):
            raise ChatllmError(f"item {x} failed")
        return x

    got = []
    with pytest.raises(ChatllmError, match="item 5 failed"):
        for x in ordered_map(work, range(100), [0, 1, 2]):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    assert max(started) < 5 + 3 * 2 + 3  # nothing much past the failure was started


def test_an_error_reading_the_input_is_raised_in_its_place():
    def items():
        yield 1
        yield 2
        raise ValueError("bad input line")

    got = []
    with pytest.raises(ValueError, match="bad input line"):
        for x in ordered_map(lambda w, x: x, items(), [0, 1]):
            got.append(x)
    assert got == [1, 2]


def test_stopping_early_hands_out_no_more_work():
    started = []

    def work(w, x):
        started.append(x)
        time.sleep(0.02)
        return x

    results = ordered_map(work, range(1000), [0, 1])
    for x in results:
        if x == 3:
            break  # as Ctrl-C in the caller does: the generator is closed
    results.close()
    time.sleep(0.1)
    count = len(started)
    time.sleep(0.1)
    assert len(started) == count and count < 12  # stopped, and the workers went idle


def test_a_keyboard_interrupt_in_the_caller_stops_the_workers():
    started = []

    def work(w, x):
        started.append(x)
        time.sleep(0.02)
        return x

    with pytest.raises(KeyboardInterrupt):
        for x in ordered_map(work, range(1000), [0, 1, 2]):
            if x == 2:
                raise KeyboardInterrupt
    deadline = time.monotonic() + 2
    while any(t.name.startswith("chatllm-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name.startswith("chatllm-") for t in threading.enumerate())  # every worker and the feeder ended
    assert len(started) < 15


# -- the tasks on several fake engines -------------------------------------------------------------


def test_batch_rows_on_several_engines_match_one_engine():
    rows = [batch.Row(i, i, f"phrase number {i}") for i in range(1, 21)]
    one = [r.answer.text for r in batch.run_rows(FakeEngine(), iter(rows), Sampling(temperature=0), compose=str)]
    engines = [FakeEngine(on_piece=lambda i: time.sleep(0.002)) for _ in range(3)]
    many = list(batch.run_rows(engines[0], iter(rows), Sampling(temperature=0), compose=str, workers=engines))
    assert [r.row.id for r in many] == list(range(1, 21))
    assert [r.answer.text for r in many] == one
    assert all(e.streamed for e in engines)  # every connection answered some rows


def test_an_unreachable_engine_stops_the_batch_but_a_row_error_does_not():
    class Gone(FakeEngine):
        def stream(self, prompt, sampling):
            raise EngineUnavailable("cannot connect to srv: connection refused", "is the server running?")

    class Picky(FakeEngine):
        def stream(self, prompt, sampling):
            raise ChatllmError("refused this row", "")

    rows = [batch.Row(i, i, f"p {i}") for i in range(1, 6)]
    results = list(batch.run_rows(Picky(), iter(rows), Sampling(), compose=str))
    assert [r.error for r in results] == ["refused this row"] * 5
    with pytest.raises(EngineUnavailable, match="connection refused"):
        list(batch.run_rows(Gone(), iter(rows), Sampling(), compose=str, workers=[Gone(), Gone()]))


def test_summarize_map_calls_on_workers_give_the_one_engine_summary():
    text = "\n\n".join(f"Paragraph {i} tells of event {i} in the town, and of what the people said." for i in range(80))
    options = SummaryOptions(length="short", chunk_tokens=96)

    def run(workers):
        main = FakeEngine(n_ctx=400, reply=lambda n: f"note {n} about the town")
        s = Summarizer(main, Sampling(temperature=0, max_tokens=40), options, workers=workers)
        return s.summarize([text]), main

    alone, _ = run([])
    helpers = [FakeEngine(n_ctx=400, reply="a note about the town", on_piece=lambda i: time.sleep(0.002)) for _ in range(3)]
    shared, main = run(helpers)
    assert shared.chunks == alone.chunks > 3 and shared.calls == alone.calls
    assert all(h.streamed for h in helpers)  # the map calls went to the workers
    map_prompts = [p for h in helpers for p in h.streamed]
    assert len(map_prompts) == shared.chunks and len(main.streamed) == shared.calls - shared.chunks
