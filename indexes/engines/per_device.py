"""The one-process-per-GPU engine: a spawned worker per device, each loading the model once and encoding
its own interleaved share of the chunks.

Processes, not threads: each worker owns one device and one CUDA context, and a crash in one leaves the
finished chunks of all of them on disk (rerun to resume). Progress travels back through a queue and is
replayed into the caller's sink, so the bar and the ETA look exactly as with the in-process engine. The
devices are a parameter, so the same path runs with CPU workers (tests, or a CPU machine split in two).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from lyre.basics import progress
from lyre.basics.errors import LyreError
from lyre.basics.progress import ProgressSink
from lyre.indexes.engines.device_pool import QueueSink
from lyre.indexes.engines.job import EncodeJob

RESUME_HINT = "rerun the same command to resume from the finished chunks"
POLL_SECONDS = 2.0
"""How often the parent looks for a dead worker while no message arrives."""


def _worker(rank: int, device: str, job: EncodeJob, threads: int, messages: Any) -> None:
    """One device's share of the chunks (``job.chunks`` is that share), in a spawned process. A
    :class:`LyreError` goes back as its one line; anything else kills the worker, which the parent sees."""
    from lyre.indexes.engines.in_process import InProcessRunner

    progress.set_quiet(True)
    try:
        InProcessRunner(device=device, num_threads=threads).run(job, QueueSink(messages))
    except LyreError as error:
        messages.put(("failed", rank, str(error)))
        return
    messages.put(("finished", rank, 0))


@dataclass(frozen=True)
class DeviceProcessRunner:
    """``devices``: one worker each (``cuda:0``, ``cuda:1``, ... or ``cpu`` for CPU workers)."""

    devices: Sequence[str]

    def run(self, job: EncodeJob, progress: ProgressSink) -> None:
        """Spread ``job.chunks`` over the workers (disjoint, interleaved lists), relaying their progress."""
        import torch.multiprocessing as mp
        from lyre.models.loading import cpu_threads

        count = min(len(self.devices), len(job.chunks))
        if count == 0:
            return
        context = mp.get_context("spawn")
        messages = context.Queue()
        cpu_workers = sum(device == "cpu" for device in self.devices[:count])
        threads = max(cpu_threads() // max(cpu_workers, 1), 1)
        workers = [
            context.Process(
                target=_worker,
                args=(rank, device, _share(job, rank, count), threads, messages),
                daemon=True,
            )
            for rank, device in enumerate(self.devices[:count])
        ]
        for worker in workers:
            worker.start()
        finished = 0
        try:
            while finished < count:
                try:
                    kind, first, second = messages.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    _raise_if_dead(workers, self.devices)
                    continue
                if kind == "tokenized":
                    progress.tokenized(first, second)
                elif kind == "advance":
                    progress.advance(first, second)
                elif kind == "failed":
                    raise LyreError(second)
                else:
                    finished += 1
        finally:
            for worker in workers:
                worker.join(timeout=None if finished == count else 0)
                if worker.is_alive():
                    worker.terminate()
                    worker.join()


def _share(job: EncodeJob, rank: int, count: int) -> EncodeJob:
    """Worker ``rank``'s chunks: every ``count``-th, so each worker sees early and late chunks alike."""
    return replace(job, chunks=job.chunks[rank::count])


def _raise_if_dead(workers: list[Any], devices: Sequence[str]) -> None:
    for rank, worker in enumerate(workers):
        if worker.exitcode not in (None, 0):
            raise LyreError(
                f"encoding worker on {devices[rank]} died (exit code {worker.exitcode}); {RESUME_HINT}"
            )
