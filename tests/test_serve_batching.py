"""The micro-batcher of ``lyre serve`` (:mod:`serve.batching`): queries arriving together are answered in
one call of the worker, bounded, grouped by settings, without repeated ids; a bad query fails only its own
request; the worker lives and dies in the batching thread.

The worker here is a small real implementation of the protocol (it squares numbers and records each call),
so what is checked is the batching itself; the search worker is exercised through HTTP in
``test_serve_api.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Future

import pytest
from lyre.serve.batching import MicroBatcher, unique_groups


class Squares:
    """Squares each item; refuses negative ones (the whole call fails, as a model would)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Hashable, list[int]]] = []
        self.threads = {"open": threading.get_ident()}

    def run_batch(self, key: Hashable, items: Sequence[int]) -> list[int]:
        if any(item < 0 for item in items):
            raise ValueError(f"negative item in {list(items)}")
        self.calls.append((key, list(items)))
        return [item * item for item in items]

    def close(self) -> None:
        self.threads["close"] = threading.get_ident()


def started(window_s: float, batch_size: int) -> tuple[MicroBatcher, Squares]:
    made: list[Squares] = []

    def open_worker() -> Squares:  # called in the batching thread
        made.append(Squares())
        return made[-1]

    batcher = MicroBatcher(open_worker, window_s, batch_size)
    batcher.start()
    return batcher, made[0]


def test_queries_arriving_within_the_window_are_one_call() -> None:
    batcher, worker = started(window_s=0.5, batch_size=16)
    futures = [batcher.submit("k", n, n) for n in range(10)]
    assert [future.result(10) for future in futures] == [n * n for n in range(10)]
    batcher.stop()
    assert worker.calls == [("k", list(range(10)))]


def test_a_call_holds_at_most_batch_size_queries_in_arrival_order() -> None:
    batcher, worker = started(window_s=0.5, batch_size=16)
    futures = [batcher.submit("k", n, n) for n in range(40)]
    assert [future.result(10) for future in futures] == [n * n for n in range(40)]
    batcher.stop()
    assert [items for _, items in worker.calls] == [list(range(16)), list(range(16, 32)), list(range(32, 40))]


def test_each_call_holds_one_key_and_no_repeated_name() -> None:
    batcher, worker = started(window_s=0.5, batch_size=16)
    futures = [batcher.submit(("k", n % 2), n % 3, n) for n in range(8)]  # names 0, 1, 2 repeat
    assert [future.result(10) for future in futures] == [n * n for n in range(8)]
    batcher.stop()
    assert worker.calls == [(("k", 0), [0, 2, 4]), (("k", 0), [6]), (("k", 1), [1, 3, 5]), (("k", 1), [7])]


def test_unique_groups_keeps_arrival_order_within_each_call() -> None:
    from lyre.serve.batching import Pending

    entries = [
        Pending(key, name, index) for index, (key, name) in enumerate(["aq", "ar", "bq", "aq", "ar", "aq"])
    ]
    groups = [[entry.item for entry in group] for group in unique_groups(entries)]
    assert groups == [[0, 1], [3, 4], [5], [2]]


def test_a_bad_query_fails_only_its_own_request() -> None:
    batcher, worker = started(window_s=0.5, batch_size=16)
    futures = [batcher.submit("k", n, n) for n in (1, 2, -3, 4)]
    assert [futures[i].result(10) for i in (0, 1, 3)] == [1, 4, 16]
    with pytest.raises(ValueError, match=r"negative item in \[-3\]"):
        futures[2].result(10)
    batcher.stop()
    assert [items for _, items in worker.calls] == [[1], [2], [4]]  # the batch failed; each retried alone


def test_a_lone_query_waits_at_most_the_window() -> None:
    batcher, _ = started(window_s=0.05, batch_size=16)
    started_at = time.monotonic()
    assert batcher.submit("k", 0, 3).result(10) == 9
    assert time.monotonic() - started_at < 2  # the window (50 ms), not a wait for a full batch
    batcher.stop()


def test_tasks_run_in_the_batching_thread_without_a_window() -> None:
    batcher, worker = started(window_s=5.0, batch_size=16)
    started_at = time.monotonic()
    thread = batcher.call(lambda opened: (opened is worker, threading.get_ident())).result(10)
    assert time.monotonic() - started_at < 2.5
    batcher.stop()
    assert thread[0] and thread[1] == worker.threads["open"] == worker.threads["close"]
    assert worker.threads["open"] != threading.get_ident()


def test_stop_answers_what_is_queued_then_closes_the_worker() -> None:
    batcher, worker = started(window_s=0.5, batch_size=4)
    futures: list[Future[int]] = [batcher.submit("k", n, n) for n in range(6)]
    batcher.stop()
    assert [future.result(0) for future in futures] == [n * n for n in range(6)]
    assert "close" in worker.threads


def test_an_error_opening_the_worker_is_raised_by_start() -> None:
    def fail() -> Squares:
        raise OSError("model folder unreadable")

    with pytest.raises(OSError, match="model folder unreadable"):
        MicroBatcher(fail, 0.01, 4).start()
