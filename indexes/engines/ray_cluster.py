"""The Ray engine: the missing chunks of an encode job handed to actors of a Ray cluster.

One actor per GPU (or a few CPU actors) loads the model once, then takes whole chunks from the driver, one
at a time, and writes them straight into ``INDEX/embeddings`` with the engines' one
:func:`~indexes.engines.job.encode_chunk`. So the index folder must sit on a filesystem that every node
mounts at the same path, and a Ray-encoded chunk is byte for byte a locally encoded one.

Handing out one chunk at a time to whichever actor is free balances fast and slow GPUs by itself. A chunk
is idempotent (atomic files, completion record last), so Ray may rerun it after a lost worker, and a
killed job resumes from the finished chunks exactly like the local engine.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.progress import Counts, ProgressSink
from lyre.indexes.embeddings import STORE_FILE, EmbeddingStore
from lyre.indexes.engines.job import EncodeJob, encode_chunk
from lyre.indexes.manifest import DOCSTORE, EMBEDDINGS

#: Environment variables that decide where models are found; remote workers do not inherit the driver's.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE")
#: Object store of a local Ray: only chunk numbers and counts travel through it, vectors go to disk.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
#: Ray may restart a crashed actor and rerun its chunk this often (safe: a chunk is idempotent).
MAX_RETRIES = 2
RESUME_HINT = "rerun the same command to resume from the finished chunks"


@dataclass(frozen=True)
class ActorPlan:
    """How many model replicas to start and what each one reserves."""

    count: int
    device: str
    num_gpus: int
    num_cpus: int


def plan_actors(
    resources: dict[str, float], node_cpus: list[float], chunks: int, cpu_actors: int | None
) -> ActorPlan:
    """One actor per GPU of the cluster; without GPUs, ``cpu_actors`` (default: one per node, each taking
    the cores of the smallest node). Never more actors than chunks, nor more CPU actors than cores,
    since an actor that cannot be placed would leave its chunk waiting forever."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return ActorPlan(count=max(min(gpus, chunks), 1), device="cuda", num_gpus=1, num_cpus=1)
    cores = int(resources.get("CPU", 0))
    if cores < 1 or not node_cpus:
        raise LyreError("the Ray cluster has no CPU or GPU to run on; check `ray status`")
    if cpu_actors is None:
        count, per_actor = len(node_cpus), int(min(node_cpus))
    else:
        if cpu_actors < 1:
            raise OptionError("ray_cpu_actors", cpu_actors, "use at least 1")
        count = min(cpu_actors, cores)
        per_actor = cores // count
    return ActorPlan(count=max(min(count, chunks), 1), device="cpu", num_gpus=0, num_cpus=max(per_actor, 1))


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
        if self.parts is None:
            from lyre.indexes.docstore import DocStore
            from lyre.models.embedder import Embedder
            from lyre.models.loading import model_fingerprint, resolve_model
            from lyre.models.recipes import EmbedRecipe

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
        return socket.gethostname()

    def encode(self, chunk: int) -> tuple[int, int]:
        """Encode and write ``chunk``; returns its (documents, tokens). Per-batch progress stays in the
        actor; the driver advances its bar per finished chunk."""
        self.load()
        embedder, docstore, store = self.parts  # type: ignore[misc]
        counts = Counts()
        encode_chunk(embedder, docstore, store, chunk, counts)
        return counts.tokenized_items, counts.tokenized_tokens


def placed_actor_class(ray: Any, actor: type, work_items: int, cpu_actors: int | None) -> tuple[Any, Any]:
    """(the actor plan, ``actor`` as a Ray actor class with the resources each replica takes), planned
    from the live cluster: one replica per GPU, or per node's CPUs; restarted on failure, spread out."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    node_cpus = [node["Resources"].get("CPU", 0.0) for node in nodes if node["Resources"].get("CPU")]
    plan = plan_actors(ray.cluster_resources(), node_cpus, work_items, cpu_actors)
    actor_class = ray.remote(actor).options(
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
        max_restarts=MAX_RETRIES,
        max_task_retries=MAX_RETRIES,
        scheduling_strategy="SPREAD",
    )
    return plan, actor_class


def connect(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a quiet local Ray on this process's cores. Returns whether
    this call started Ray (and so must stop it); an already running Ray (a test's, a notebook's) is used."""
    import ray
    from lyre.models.loading import cpu_threads

    if ray.is_initialized():
        return False
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "runtime_env": {"env_vars": env} if env else None,
    }
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError) as error:
            raise LyreError(
                f"could not reach the Ray cluster at {address} ({str(error).splitlines()[0]}); start it with "
                "`ray start --head` and pass its HEAD:6379 address"
            ) from None
    else:
        ray.init(
            address="local", num_cpus=cpu_threads(), object_store_memory=LOCAL_OBJECT_STORE_BYTES, **options
        )
    return True


def ray_result(ray: Any, ref: Any, role: str = "encoding", resume_hint: str = RESUME_HINT) -> Any:
    """``ray.get(ref)`` with a worker's failure turned into one line (a LyreError passes through as is);
    ``role`` names the actors (encoding, reranking), ``resume_hint`` says how to resume."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = error.cause
        if isinstance(cause, LyreError):
            raise LyreError(str(cause)) from None
        failure = f"{type(cause).__name__}: {cause}"
        raise LyreError(f"a Ray {role} worker failed: {failure}; {resume_hint}") from None
    except ray.exceptions.RayActorError as error:
        first = str(error).strip().splitlines()[0]
        raise LyreError(f"a Ray {role} actor died ({first}); {resume_hint}") from None


@dataclass(frozen=True)
class RayRunner:
    """``address``: the cluster's HEAD:6379 (default: a local Ray on this process's cores);
    ``cpu_actors``: model replicas on a cluster without GPUs (see :func:`plan_actors`)."""

    address: str | None = None
    cpu_actors: int | None = None

    def run(self, job: EncodeJob, progress: ProgressSink) -> None:
        import ray
        from lyre.models.loading import model_fingerprint

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
    from lyre.basics.progress import say

    say(
        f"ray: {plan.count} {plan.device} actor(s) on {len(set(hosts))} node(s), "
        f"{plan.num_gpus or plan.num_cpus} {'GPU' if plan.num_gpus else 'CPU'}(s) each"
    )
