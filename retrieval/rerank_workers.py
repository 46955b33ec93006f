"""Who scores the rerank groups: this process, one worker process per GPU, or the actors of a Ray cluster.

:func:`retrieval.rerank.rerank` decides *what* is scored: the groups of queries, which of them an earlier,
killed run already finished, and where each finished group is kept (:mod:`retrieval.rerank_parts`). The
reranker this module opens decides only *who* scores the missing groups, with the engine names of
encoding (:mod:`models.engines`):

- ``local``: the reranker in this process; with several GPUs visible, one worker process per GPU;
- ``gpus``: one worker process per GPU (with a single GPU, that is this process);
- ``ray``: one actor per GPU (or ``ray_cpu_actors`` CPU actors) of a Ray cluster.

Every replica loads the model once, on its device, in its dtype, and scores whole groups with the same
:meth:`~models.reranker.Reranker.score_pairs` as the in-process reranker, so a group's scores do not depend
on who scored it (on one kind of device; and a pair's score does not depend on the other pairs it was
scored with, see :mod:`models.batching`). Groups come back in the order they finish and are put in place
by their number, so neither the kept groups nor the run depend on which worker was fastest, and a run
killed under one engine resumes under another. Texts travel to the workers with each group: workers need
no docstore, and the parts folder stays beside the run the driver writes.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from lyre.basics import progress
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.numbers import count
from lyre.basics.progress import Counts, ProgressSink
from lyre.models.engines import visible_gpus
from lyre.models.engines.device_pool import AHEAD, DevicePool
from lyre.models.engines.ray_cluster import connect, placed_actor_class, ray_result
from lyre.models.loading import model_fingerprint, resolve_model
from lyre.models.reranker import Reranker, RerankerSettings

if TYPE_CHECKING:
    from lyre.retrieval.options import RerankOptions

Pairs = Sequence[tuple[str, str]]
"""The (query text, document text) pairs of one group, in the group's order."""
RESUME_HINT = "rerun the same command to resume from the finished groups"
RAY_REPLICAS_UNBOUNDED = sys.maxsize
"""The groups are not known when the reranker opens: every GPU of the cluster gets a replica."""


@runtime_checkable
class GroupScorer(Protocol):
    """Replicas of one reranker in other processes: scores whole groups, returned as they finish."""

    settings: RerankerSettings

    def score_groups(
        self, groups: Iterable[tuple[int, Pairs]], progress: ProgressSink
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(number, scores)`` of every ``(number, pairs)``, as they finish; ``groups`` is read lazily,
        a few ahead, so only the groups being scored are held in memory."""
        ...

    def close(self) -> None: ...


def check_engine(options: RerankOptions) -> None:
    """The engine against this machine and the Ray options against the engine, before anything loads."""
    if options.engine != "ray":
        for name in ("ray_address", "ray_cpu_actors"):
            value = getattr(options, name)
            if value is not None:
                raise OptionError(name, value, f"applies only with {opt('engine')} ray")
    if options.engine == "gpus" and visible_gpus() == 0:
        raise OptionError("engine", options.engine, "no CUDA GPU is visible to this process; use local")


def worker_devices(engine: str) -> list[str]:
    """The devices that get a worker process each: every GPU when several are visible (engine ``local``
    or ``gpus``); none when there is one GPU or none, since then this process reranks as before."""
    gpus = visible_gpus() if engine in ("local", "gpus") else 0
    return [f"cuda:{rank}" for rank in range(gpus)] if gpus > 1 else []


def open_reranker(folder: Path, options: RerankOptions) -> Reranker | GroupScorer:
    """The reranker in ``folder`` loaded where ``options.engine`` says (validated by :func:`check_engine`)."""
    if options.engine == "ray":
        return RayRerankers.start(folder, options)
    devices = worker_devices(options.engine)
    if devices:
        return DeviceRerankers.start(devices, folder, options)

    return Reranker.from_pretrained(folder, template=options.rerank_template, instruction=options.instruction)


def release(reranker: Reranker | GroupScorer) -> None:
    """Stop a reranker's workers (nothing to do for one in this process)."""
    if isinstance(reranker, GroupScorer):
        reranker.close()


def device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``: replicas on GPUs of one machine score alike, so a group's key names the
    kind of device, and a group scored on one GPU (or engine) is reused on another."""
    return device.split(":")[0]


def common_settings(reports: Sequence[dict[str, Any]], places: Sequence[str]) -> RerankerSettings:
    """The settings every replica loaded with (the device by its kind). Replicas that differ would score
    the groups differently, so they are refused."""
    settings = [{**report, "device": device_kind(report["device"])} for report in reports]
    for place, other in zip(places, settings, strict=True):
        changed = sorted(name for name in other if other[name] != settings[0][name])
        if changed:
            raise LyreError(
                f"the reranker on {place} loaded with other settings than on {places[0]} "
                f"({', '.join(changed)}); give every worker the same model files and kind of device"
            )
    return RerankerSettings(**settings[0])


# --- one worker process per device -----------------------------------------------------------------


@dataclass(frozen=True)
class ScoringWorker:
    """A worker process's reranker: one group of pairs at a time."""

    reranker: Reranker

    def handle(self, pairs: Pairs, progress: ProgressSink) -> np.ndarray:
        return self.reranker.score_pairs(pairs, progress=progress)


@dataclass(frozen=True)
class RerankerReplica:
    """Loads the reranker in a worker process (picklable, so a spawned process can take it)."""

    folder: Path
    template: str
    instruction: str | None

    def __call__(self, device: str, threads: int) -> tuple[ScoringWorker, dict[str, Any]]:
        import torch

        if device == "cpu":
            torch.set_num_threads(threads)
        reranker = Reranker.from_pretrained(
            self.folder, template=self.template, instruction=self.instruction, device=device
        )
        return ScoringWorker(reranker), reranker.settings.to_dict()


class DeviceRerankers:
    """One worker process per device (``cuda:0``, ``cuda:1``, ... or ``cpu`` in tests), each holding a
    replica; open with :meth:`start`."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.settings = common_settings(pool.ready, pool.devices)

    @classmethod
    def start(cls, devices: Sequence[str], folder: Path, options: RerankOptions) -> DeviceRerankers:
        """Start and load every worker (in parallel); returns once all are ready."""
        replica = RerankerReplica(folder, options.rerank_template, options.instruction)
        pool = DevicePool(devices, replica, "reranking", RESUME_HINT)
        try:
            scorers = cls(pool)
        except BaseException:
            pool.close()
            raise
        progress.say(f"rerank: {count(len(devices), 'workers')} on {', '.join(devices)}")
        return scorers

    def score_groups(
        self, groups: Iterable[tuple[int, Pairs]], progress: ProgressSink
    ) -> Iterator[tuple[int, np.ndarray]]:
        return self.pool.map(groups, progress)

    def close(self) -> None:
        self.pool.close()


# --- Ray -------------------------------------------------------------------------------------------


class RerankActor:
    """A Ray actor holding one replica. Like the encode actors, it loads in :meth:`load` (so a failure is
    a one-line error, not a printed traceback), uses the driver's model folder when its node sees it, else
    resolves the model on its node, and refuses a copy whose fingerprint differs from the driver's."""

    def __init__(
        self,
        folder: str,
        model: str,
        fingerprint: str,
        template: str,
        instruction: str | None,
        device: str,
        threads: int,
    ) -> None:
        self.options = (folder, model, fingerprint, template, instruction, device, threads)
        self.reranker: Reranker | None = None

    def load(self) -> tuple[dict[str, Any], str]:
        """Load once; returns the replica's settings (named by the driver's folder) and its node."""
        settings = self._loaded().settings.to_dict()
        return {**settings, "model": self.options[0]}, socket.gethostname()

    def _loaded(self) -> Reranker:
        """The reranker, loaded on first use."""
        folder, model, fingerprint, template, instruction, device, threads = self.options
        if self.reranker is None:
            import torch

            progress.set_quiet(True)
            seen = Path(folder).is_dir()
            local = Path(folder) if seen else resolve_model(model, option=opt("rerank_model"))
            if model_fingerprint(local) != fingerprint:
                raise LyreError(
                    f"Ray node {socket.gethostname()} has another copy of {model} in {local} "
                    "(different config or weights); give every node the same model files"
                )
            if device == "cpu":
                torch.set_num_threads(threads)
            self.reranker = Reranker.from_pretrained(
                local, template=template, instruction=instruction, device=device
            )
        return self.reranker

    def score(self, pairs: Pairs) -> tuple[np.ndarray, int]:
        """One group's scores and its tokens (progress per batch stays in the actor)."""
        counts = Counts()
        scores = self._loaded().score_pairs(pairs, progress=counts)
        return scores, counts.tokenized_tokens


class RayRerankers:
    """Replicas on the actors of a Ray cluster; open with :meth:`start`."""

    def __init__(self, actors: list[Any], started: bool, settings: RerankerSettings) -> None:
        self.actors = actors
        self.started = started
        self.settings = settings

    @classmethod
    def start(cls, folder: Path, options: RerankOptions) -> RayRerankers:
        """Join the cluster (or start a local Ray), start one actor per GPU and load them all."""
        import ray

        fingerprint = model_fingerprint(folder)
        started = connect(options.ray_address)
        actors: list[Any] = []
        try:
            plan, actor_class = placed_actor_class(
                ray, RerankActor, RAY_REPLICAS_UNBOUNDED, options.ray_cpu_actors
            )
            args = (
                str(folder),
                options.rerank_model,
                fingerprint,
                options.rerank_template,
                options.instruction,
                plan.device,
                plan.num_cpus,
            )
            actors = [actor_class.remote(*args) for _ in range(plan.count)]
            loads = [actor.load.remote() for actor in actors]
            loaded = [ray_result(ray, ref, "reranking", RESUME_HINT) for ref in loads]
            hosts = [host for _, host in loaded]
            places = [f"Ray node {host}" for host in hosts]
            settings = common_settings([report for report, _ in loaded], places)
        except BaseException:
            _stop_ray(ray, actors, started)
            raise
        actors_on = f"{count(plan.count, plan.device + ' actors')} on {count(len(set(hosts)), 'nodes')}"
        progress.say(f"rerank: ray, {actors_on}")
        return cls(actors, started, settings)

    def score_groups(
        self, groups: Iterable[tuple[int, Pairs]], progress: ProgressSink
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Each actor holds two groups at a time (one scoring, one queued); a finished actor gets the next."""
        import ray

        if not self.actors:
            raise LyreError(f"the Ray reranking actors were stopped by an earlier failure; {RESUME_HINT}")
        pending = iter(groups)
        running: dict[Any, tuple[Any, int, int]] = {}

        def hand_to(actor: Any) -> None:
            task = next(pending, None)
            if task is not None:
                number, pairs = task
                running[actor.score.remote(pairs)] = (actor, number, len(pairs))

        try:
            for _ in range(AHEAD):
                for actor in self.actors:
                    hand_to(actor)
            while running:
                [ref], _ = ray.wait(list(running), num_returns=1)
                actor, number, size = running.pop(ref)
                scores, tokens = ray_result(ray, ref, "reranking", RESUME_HINT)
                hand_to(actor)
                progress.tokenized(size, tokens)
                progress.advance(size, tokens)
                yield number, np.array(scores, dtype=np.float32)  # owned, not a view of the object store
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill the actors, and stop Ray if :meth:`start` started it."""
        import ray

        _stop_ray(ray, self.actors, self.started)
        self.actors, self.started = [], False


def _stop_ray(ray: Any, actors: list[Any], started: bool) -> None:
    for actor in actors:
        ray.kill(actor, no_restart=True)
    if started:
        ray.shutdown()
