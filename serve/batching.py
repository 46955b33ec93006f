"""Micro-batching: the queries of concurrent requests searched together, by one thread that owns the models.

Every query a request brings becomes a :class:`Pending` entry on one queue. A single worker thread takes
the first entry, waits at most ``window_s`` for others (none when entries are already queued, which is
the case under load: requests arrive while the models run), takes up to ``batch_size`` entries, groups
them by their settings, and hands each group to the worker in one call, so the query encoder and the
reranker see batches as ``lyre search`` would. One thread also means the models, the docstore and the
cache's SQLite connection are only ever used from the thread that opened them.

Other work that must run beside the models (fetching documents) goes on the same queue as a
:class:`Task` and runs without waiting for a window. When a batch fails, each of its queries is retried
alone, so one bad query fails only its own request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

Item = TypeVar("Item")
Taken = TypeVar("Taken", contravariant=True)
"""The items a :class:`BatchWorker` takes (contravariant: a worker of any item serves a queue of strings)."""


class BatchWorker(Protocol[Taken]):
    """What the batching thread drives: one call per group of entries with the same key."""

    def run_batch(self, key: Hashable, items: Sequence[Taken]) -> list[Any]:
        """One result per item, in order."""

    def close(self) -> None:
        """Release what the worker opened (called in the batching thread, when it stops)."""


@dataclass
class Pending(Generic[Item]):
    """One query waiting: searched with the others of its ``key``; ``name`` must be unique in a call."""

    key: Hashable
    name: Hashable
    item: Item
    future: Future[Any] = field(default_factory=Future)


@dataclass
class Task:
    """Work that needs the worker but no batching: ``call(worker)``, answered through ``future``."""

    call: Callable[[Any], Any]
    future: Future[Any] = field(default_factory=Future)

    def results(self, worker: Any) -> list[Any]:
        """The call's result alone in a list, as :func:`_answer` takes a batch's."""
        return [self.call(worker)]


_STOP = object()


def unique_groups(entries: Sequence[Pending[Any]]) -> list[list[Pending[Any]]]:
    """The entries split by key, and each key's entries into calls without a repeated name (a second
    query with the same id goes to a later call), each call in arrival order."""
    calls: dict[Hashable, list[tuple[set[Hashable], list[Pending[Any]]]]] = {}
    for entry in entries:
        slots = calls.setdefault(entry.key, [])
        slot = next((slot for slot in slots if entry.name not in slot[0]), None)
        if slot is None:
            slot = (set(), [])
            slots.append(slot)
        slot[0].add(entry.name)
        slot[1].append(entry)
    return [entries for slots in calls.values() for _, entries in slots]


class MicroBatcher:
    """The batching thread; :meth:`start` opens the worker in it and :meth:`stop` closes it there."""

    def __init__(self, open_worker: Callable[[], BatchWorker[Any]], window_s: float, batch_size: int) -> None:
        self._open_worker = open_worker
        self.window_s = window_s
        self.batch_size = batch_size
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._serve, name="lyre-serve-batcher", daemon=True)
        self.batches = 0
        """Calls made to the worker so far (the tests read it to see that batches formed)."""
        self.largest = 0
        """The most entries one call held."""

    def start(self) -> None:
        """Start the thread and wait until the worker is open; its opening error is raised here."""
        self._thread.start()
        self._opened.result()

    def stop(self) -> None:
        """Answer what is queued, then close the worker and end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, key: Hashable, name: Hashable, item: Any) -> Future[Any]:
        """Queue one query; its future holds the worker's result for it."""
        entry = Pending(key, name, item)
        self._queue.put(entry)
        return entry.future

    def call(self, function: Callable[[Any], Any]) -> Future[Any]:
        """Run ``function(worker)`` in the batching thread."""
        task = Task(function)
        self._queue.put(task)
        return task.future

    def _serve(self) -> None:
        try:
            worker = self._open_worker()
        except BaseException as error:  # the caller of start() raises it
            self._opened.set_exception(error)
            return
        self._opened.set_result(None)
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                entries, stopping = self._gather(first)
                self._run(worker, entries)
        finally:
            worker.close()

    def _gather(self, first: Any) -> tuple[list[Any], bool]:
        """``first`` and what follows it within the window (queued entries at once), up to a batch."""
        if isinstance(first, Task):
            return [first], False
        entries = [first]
        deadline = time.monotonic() + self.window_s
        while len(entries) < self.batch_size:
            left = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return entries, True
            entries.append(entry)
        return entries, False

    def _run(self, worker: BatchWorker[Any], entries: list[Any]) -> None:
        live = [entry for entry in entries if entry.future.set_running_or_notify_cancel()]
        for task in (entry for entry in live if isinstance(entry, Task)):
            _answer([task.future], partial(task.results, worker))
        pending = [entry for entry in live if isinstance(entry, Pending)]
        for group in unique_groups(pending):
            self.batches += 1
            self.largest = max(self.largest, len(group))
            key, items = group[0].key, [entry.item for entry in group]
            futures = [entry.future for entry in group]
            if not _answer(futures, partial(worker.run_batch, key, items)) and len(group) > 1:
                for entry in group:  # one bad query fails only its own request
                    _answer([entry.future], partial(worker.run_batch, entry.key, [entry.item]))


def _answer(futures: list[Future[Any]], compute: Callable[[], list[Any]]) -> bool:
    """Set each future to its result of ``compute()``; on an error, only a single future gets it (a
    group is retried query by query). Whether ``compute`` succeeded."""
    try:
        results = compute()
    except Exception as error:
        if len(futures) == 1:
            futures[0].set_exception(error)
        return False
    for future, result in zip(futures, results, strict=True):
        future.set_result(result)
    return True
