"""Who encodes the missing chunks of an encode job (:class:`~indexes.encode_job.EncodeJob`), by engine name
(:data:`models.engines.ENGINES`):

- ``local``: :class:`InProcessRunner`, one model in this process on one device (several visible GPUs and
  more than one chunk: :class:`DeviceProcessRunner`);
- ``gpus``: :class:`DeviceProcessRunner`, one spawned process per GPU, each encoding its interleaved share;
- ``ray``: :class:`RayRunner`, one actor per GPU (or a few CPU actors) of a Ray cluster, each taking whole
  chunks from the driver and writing them straight into ``INDEX/embeddings``.

Every runner writes a chunk through :func:`~indexes.encode_job.encode_chunk`. Processes, not threads: each
worker owns one device and one CUDA context, and a crash in one leaves the finished chunks of all of them
on disk (rerun to resume). Progress travels back and is replayed into the caller's sink, so the bar and the
ETA look the same under every engine. torch and ray are imported only by the runner that needs them.
"""

from __future__ import annotations

import queue
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.progress import Counts, ProgressSink
from lyre.indexes.docstore import DocStore
from lyre.indexes.embeddings import STORE_FILE, EmbeddingStore
from lyre.indexes.encode_job import ChunkRunner, EncodeJob, encode_chunk
from lyre.indexes.manifest import DOCSTORE, EMBEDDINGS
from lyre.models.embedder import Embedder
from lyre.models.engines import ENGINES, visible_gpus
from lyre.models.engines.device_pool import QueueSink
from lyre.models.engines.ray_cluster import ActorPlan, connect, placed_actor_class, ray_result
from lyre.models.loading import cpu_threads, model_fingerprint, resolve_model
from lyre.models.recipes import EmbedRecipe

RESUME_HINT = "rerun the same command to resume from the finished chunks"
POLL_SECONDS = 2.0
"""How often the parent looks for a dead worker while no message arrives."""


def runner_for(
    engine: str,
    *,
    device: str | None = None,
    chunks: int = 1,
    ray_address: str | None = None,
    ray_cpu_actors: int | None = None,
) -> ChunkRunner:
    """The runner for ``engine``. ``local`` on a machine with several GPUs, and no device pinned, runs one
    process per GPU (what a user of one multi-GPU node wants without asking); with one chunk to encode
    there is nothing to spread, and the model loads in this process."""
    if engine == "ray":
        return RayRunner(address=ray_address, cpu_actors=ray_cpu_actors)
    gpus = visible_gpus() if device in (None, "auto", "cuda") else 0
    if engine == "gpus" and not gpus:
        raise OptionError("engine", engine, "no CUDA GPU is visible to this process; use local")
    if engine == "gpus" or (engine == "local" and gpus > 1 and chunks > 1):
        return DeviceProcessRunner(devices=[f"cuda:{rank}" for rank in range(gpus)])
    if engine == "local":
        return InProcessRunner(device=device)
    raise OptionError("engine", engine, f"use one of {', '.join(ENGINES)}")


# --- this process ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InProcessRunner:
    """``device``: cpu, cuda, cuda:N (default: CUDA when visible); ``num_threads``: CPU threads (default:
    the cores this process may use)."""

    device: str | None = None
    num_threads: int | None = None

    def run(self, job: EncodeJob, progress: ProgressSink) -> None:
        embedder = Embedder.from_pretrained(
            job.model_folder,
            recipe=job.recipe,
            device=self.device,
            token_budget=job.token_budget,
            num_threads=self.num_threads,
        )
        docstore, store = job.open_store()
        for chunk in job.chunks:
            encode_chunk(embedder, docstore, store, chunk, progress)


# --- one process per device ------------------------------------------------------------------------


def _worker(rank: int, device: str, job: EncodeJob, threads: int, messages: Any) -> None:
    """One device's share of the chunks (``job.chunks`` is that share), in a spawned process. A
    :class:`LyreError` goes back as its one line; anything else kills the worker, which the parent sees."""
    progress.set_quiet(True)
    try:
        InProcessRunner(device=device, num_threads=threads).run(job, QueueSink(messages))
    except LyreError as error:
        messages.put(("failed", rank, str(error)))
        return
    messages.put(("finished", rank, 0))


@dataclass(frozen=True)
class DeviceProcessRunner:
    """``devices``: one worker each (``cuda:0``, ``cuda:1``, ... or ``cpu`` for CPU workers, which runs the
    same path on a CPU machine, or in the tests)."""

    devices: Sequence[str]

    def run(self, job: EncodeJob, progress: ProgressSink) -> None:
        """Spread ``job.chunks`` over the workers (disjoint, interleaved lists), relaying their progress."""
        import torch.multiprocessing as mp  # heavy: only this runner starts processes

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


# --- Ray -------------------------------------------------------------------------------------------


class ChunkEncoder:
    """A Ray actor: one model replica that encodes whole chunks into the shared embedding store.

    Loading happens in :meth:`load`, not in ``__init__``: Ray keeps the exception of a method call but
    only a printed traceback of a failed constructor, and the user deserves the one-line error. A node
    uses the driver's model folder when it sees it, else resolves the model the store records (a hub id in
    its own cache), and refuses a copy whose fingerprint differs from the driver's: every chunk of one
    store must come from the same weights.
    """

    def __init__(
        self,
        index_dir: str,
        model: str,
        fingerprint: str,
        recipe: dict[str, Any],
        device: str,
        token_budget: int | None,
        threads: int,
        store: str = DOCSTORE,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.store = store
        self.options = (model, fingerprint, recipe, device, token_budget, threads)
        self.parts: tuple[Any, Any, EmbeddingStore] | None = None

    def load(self) -> str:
        """Load model, docstore and store once; returns the node's name (for the status line)."""
        self._loaded()
        return socket.gethostname()

    def _loaded(self) -> tuple[Any, Any, EmbeddingStore]:
        """The model, docstore and store, loaded on first use."""
        if self.parts is None:
            progress.set_quiet(True)
            embeddings = self.index_dir / EMBEDDINGS
            if not (embeddings / STORE_FILE).exists():
                raise LyreError(
                    f"{embeddings} is not visible on Ray node {socket.gethostname()}; put the index on a "
                    "filesystem that every node mounts at the same path"
                )
            model, fingerprint, recipe, device, token_budget, threads = self.options
            store = EmbeddingStore.open(embeddings)
            folder = Path(model) if Path(model).is_dir() else resolve_model(store.spec.model)
            if model_fingerprint(folder) != fingerprint:
                raise LyreError(
                    f"Ray node {socket.gethostname()} has another copy of {store.spec.model} in {folder} "
                    "(different config or weights); give every node the same model files"
                )
            embedder = Embedder.from_pretrained(
                folder,
                recipe=EmbedRecipe.from_dict(recipe),
                device=device,
                token_budget=token_budget,
                num_threads=threads if device == "cpu" else None,
            )
            self.parts = (embedder, DocStore.open(self.index_dir / self.store), store)
        return self.parts

    def encode(self, chunk: int) -> tuple[int, int]:
        """Encode and write ``chunk``; returns its (documents, tokens). Per-batch progress stays in the
        actor; the driver advances its bar per finished chunk."""
        embedder, docstore, store = self._loaded()
        counts = Counts()
        encode_chunk(embedder, docstore, store, chunk, counts)
        return counts.tokenized_items, counts.tokenized_tokens


@dataclass(frozen=True)
class RayRunner:
    """``address``: the cluster's HEAD:6379 (default: a local Ray on this process's cores);
    ``cpu_actors``: model replicas on a cluster without GPUs (see
    :func:`models.engines.ray_cluster.plan_actors`)."""

    address: str | None = None
    cpu_actors: int | None = None

    def run(self, job: EncodeJob, progress: ProgressSink) -> None:
        import ray  # heavy: only this runner loads it

        index_dir = job.index_dir.resolve()
        fingerprint = model_fingerprint(job.model_folder)
        started = connect(self.address)
        actors: list[Any] = []
        try:
            plan, actor_class = placed_actor_class(ray, ChunkEncoder, len(job.chunks), self.cpu_actors)
            args = (
                str(index_dir),
                str(job.model_folder),
                fingerprint,
                job.recipe.to_dict(),
                plan.device,
                job.token_budget,
                plan.num_cpus,
                job.store,
            )
            actors = [actor_class.remote(*args) for _ in range(plan.count)]
            hosts = [ray_result(ray, ref) for ref in [actor.load.remote() for actor in actors]]
            _say_plan(plan, hosts)
            waiting = list(job.chunks)
            running: dict[Any, Any] = {}
            for actor in actors:
                if waiting:
                    running[actor.encode.remote(waiting.pop(0))] = actor
            while running:
                [ref], _ = ray.wait(list(running), num_returns=1)
                actor = running.pop(ref)
                docs, tokens = ray_result(ray, ref)
                progress.tokenized(docs, tokens)
                progress.advance(docs, tokens)
                if waiting:
                    running[actor.encode.remote(waiting.pop(0))] = actor
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            if started:
                ray.shutdown()


def _say_plan(plan: ActorPlan, hosts: list[str]) -> None:
    progress.say(
        f"ray: {plan.count} {plan.device} actor(s) on {len(set(hosts))} node(s), "
        f"{plan.num_gpus or plan.num_cpus} {'GPU' if plan.num_gpus else 'CPU'}(s) each"
    )
