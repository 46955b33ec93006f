"""One spawned process per device, each holding one model, handing back numbered work items as they finish.

A worker builds its model once (``factory(device, threads)``), says it is ready (with whatever the
factory reports, e.g. the settings the model loaded with), then takes items from its own inbox until told
to stop. The parent hands every worker :data:`AHEAD` items at first and one more each time a result comes
back, so a worker always has its next item waiting while it computes, a fast device takes more items than
a slow one, and the parent prepares at most ``AHEAD`` items per worker ahead of time. Results come back in
the order they finish, each with its number: the caller puts them in place, so nothing it writes depends on
which worker was fastest.

Progress (``tokenized``/``advance``) travels through the result queue and is replayed into the caller's
sink, so a bar looks the same as in-process. A :class:`~basics.errors.LyreError` in a worker comes back as
its one line; anything else kills the worker, which the parent notices and reports as one line too.
Devices are a parameter, so the same path runs with CPU workers (tests, or a CPU machine split in two).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from lyre.basics import progress
from lyre.basics.errors import LyreError
from lyre.basics.progress import ProgressSink
from lyre.models.loading import cpu_threads

POLL_SECONDS = 2.0
"""How often the parent looks for a dead worker while no message arrives."""
AHEAD = 2
"""Items a worker holds at once: the one it computes and the next, already in its inbox."""


class DeviceWorker(Protocol):
    """A model loaded on one device: handles one item, reporting its progress to ``progress``."""

    def handle(self, item: Any, progress: ProgressSink) -> Any: ...


WorkerFactory = Callable[[str, int], tuple[DeviceWorker, Any]]
"""``factory(device, cpu_threads)`` -> (the worker, what it reports when ready); must be picklable."""


class QueueSink:
    """A worker's progress sink: every report goes to the parent through ``messages``."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages

    def tokenized(self, items: int, tokens: int) -> None:
        self.messages.put(("tokenized", items, tokens))

    def advance(self, items: int, tokens: int) -> None:
        self.messages.put(("advance", items, tokens))


def _serve(rank: int, device: str, threads: int, factory: WorkerFactory, inbox: Any, messages: Any) -> None:
    """A worker process: build, say ready, then handle ``(number, item)`` until ``None`` arrives. A
    LyreError goes back as its message with its option markers (the parent renders them as flags)."""
    progress.set_quiet(True)
    try:
        worker, ready = factory(device, threads)
        messages.put(("ready", rank, ready))
        sink = QueueSink(messages)
        while (task := inbox.get()) is not None:
            number, item = task
            messages.put(("done", rank, (number, worker.handle(item, sink))))
    except LyreError as error:
        messages.put(("failed", rank, error.args[0]))


class DevicePool:
    """Workers on ``devices`` (``cuda:0``, ``cuda:1``, ... or ``cpu``), started and loaded on creation.

    ``role`` names them in errors ("reranking worker on cuda:1 died ..."); ``resume_hint`` says what a
    user does after a failure. :attr:`ready` holds each worker's ready report, in device order. Use as a
    context manager or call :meth:`close`; after a failure the pool is closed and cannot be used again.
    """

    def __init__(self, devices: Sequence[str], factory: WorkerFactory, role: str, resume_hint: str) -> None:
        import torch.multiprocessing as mp  # heavy: imported by a pool being started, never by --help

        if not devices:
            raise ValueError("a device pool needs at least one device")
        self.devices = list(devices)
        self.role = role
        self.resume_hint = resume_hint
        context = mp.get_context("spawn")
        self.messages = context.Queue()
        self.inboxes = [context.Queue() for _ in self.devices]
        cpu_workers = sum(device == "cpu" for device in self.devices)
        threads = max(cpu_threads() // max(cpu_workers, 1), 1)
        self.workers = [
            context.Process(
                target=_serve,
                args=(rank, device, threads, factory, self.inboxes[rank], self.messages),
                daemon=True,
            )
            for rank, device in enumerate(self.devices)
        ]
        for worker in self.workers:
            worker.start()
        self.closed = False
        self.ready: list[Any] = [None] * len(self.workers)
        try:
            for _ in self.workers:
                _, rank, report = self._next()  # nothing else comes before every worker is ready
                self.ready[rank] = report
        except BaseException:
            self._stop()
            raise

    def map(self, items: Iterable[tuple[int, Any]], progress: ProgressSink) -> Iterator[tuple[int, Any]]:
        """``(number, result)`` of every ``(number, item)``, in the order they finish. ``items`` is read
        lazily, at most :data:`AHEAD` per worker ahead of the results."""
        if self.closed:
            raise LyreError(f"the {self.role} workers were stopped by an earlier failure; {self.resume_hint}")
        pending = iter(items)
        held = [0] * len(self.workers)

        def hand_to(rank: int) -> None:
            task = next(pending, None)
            if task is not None:
                self.inboxes[rank].put(task)
                held[rank] += 1

        try:
            for _ in range(AHEAD):
                for rank in range(len(self.workers)):
                    hand_to(rank)
            while any(held):
                kind, first, second = self._next()
                if kind == "tokenized":
                    progress.tokenized(first, second)
                elif kind == "advance":
                    progress.advance(first, second)
                else:  # "done": the worker is free for one more before its result is used
                    held[first] -= 1
                    hand_to(first)
                    yield second
        except BaseException:
            self._stop()
            raise

    def _next(self) -> tuple[str, Any, Any]:
        """The next message; a worker's failure or death raised as one line."""
        while True:
            try:
                kind, first, second = self.messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._raise_if_dead()
                continue
            if kind == "failed":
                raise LyreError(second)
            return kind, first, second

    def _raise_if_dead(self) -> None:
        for rank, worker in enumerate(self.workers):
            if worker.exitcode is not None:  # a live worker never exits before it is told to stop
                raise LyreError(
                    f"{self.role} worker on {self.devices[rank]} died (exit code {worker.exitcode}); "
                    f"{self.resume_hint}"
                )

    def close(self) -> None:
        """Tell the (idle) workers to finish, and wait for them."""
        if self.closed:
            return
        self.closed = True
        for inbox in self.inboxes:
            inbox.put(None)
        for worker in self.workers:
            worker.join()

    def _stop(self) -> None:
        """After a failure: the workers terminated at once, whatever they hold (their items are lost;
        finished ones were handed back already)."""
        self.closed = True
        for inbox in self.inboxes:
            inbox.cancel_join_thread()  # items no worker will read must not hold this process at exit
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        if error_type is None:
            self.close()
        else:
            self._stop()
