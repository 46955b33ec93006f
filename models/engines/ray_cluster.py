"""Ray, as the engines use it: joining (or starting) a cluster, planning one model replica per GPU (or a few
CPU replicas), and turning a worker's failure into one line.

An actor loads its model once and takes whole work items (an encode chunk, a rerank group) from the
driver. Results travel back through Ray's object store, or, for encoding, are written by the actor into
the index folder, which must then sit on a filesystem every node mounts at the same path. Ray may rerun an
item after a lost worker (:data:`MAX_RETRIES`): every item is idempotent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from lyre.basics.errors import LyreError, OptionError
from lyre.models.loading import cpu_threads

FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE")
"""Environment variables that decide where models are found; remote workers do not inherit the driver's."""
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
"""Object store of a local Ray: only item numbers, counts and scores travel through it."""
MAX_RETRIES = 2
"""Ray may restart a crashed actor and rerun its item this often (safe: an item is idempotent)."""
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
    the cores of the smallest node). Never more actors than work items (``chunks``), nor more CPU actors
    than cores, since an actor that cannot be placed would leave its item waiting forever."""
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
    import ray  # heavy: only the ray engine loads it

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
