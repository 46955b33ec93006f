"""Encode engines: who encodes the missing chunks of an encode job, behind one :class:`ChunkRunner`.

The encode stage (:mod:`indexes.encode`) decides *what* is encoded: the recipe, the chunk layout, which
chunks are missing, the records and the manifest. An engine decides only *who* encodes them:

- ``local`` (:mod:`~indexes.engines.in_process`): this process, one model on one device;
- ``gpus`` (:mod:`~indexes.engines.per_device`): one spawned process per GPU of this machine;
- ``ray`` (:mod:`~indexes.engines.ray_cluster`): one actor per GPU (or a few CPU actors) of a Ray cluster.

Every engine writes a chunk through the same :func:`~indexes.engines.job.encode_chunk`, so a chunk is
byte for byte the same whoever encoded it, and a run killed under one engine resumes under another.
"""

from __future__ import annotations

from lyre.basics.errors import OptionError
from lyre.indexes.engines.job import ChunkRunner, EncodeJob, encode_chunk

__all__ = ["ENGINES", "ChunkRunner", "EncodeJob", "encode_chunk", "runner_for", "visible_gpus"]

ENGINES = ("local", "gpus", "ray")


def visible_gpus() -> int:
    """CUDA devices this process may use (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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
        from lyre.indexes.engines.ray_cluster import RayRunner

        return RayRunner(address=ray_address, cpu_actors=ray_cpu_actors)
    gpus = visible_gpus() if device in (None, "auto", "cuda") else 0
    if engine == "gpus" and not gpus:
        raise OptionError("engine", engine, "no CUDA GPU is visible to this process; use local")
    if engine == "gpus" or (engine == "local" and gpus > 1 and chunks > 1):
        from lyre.indexes.engines.per_device import DeviceProcessRunner

        return DeviceProcessRunner(devices=[f"cuda:{rank}" for rank in range(gpus)])
    if engine == "local":
        from lyre.indexes.engines.in_process import InProcessRunner

        return InProcessRunner(device=device)
    raise OptionError("engine", engine, f"use one of {', '.join(ENGINES)}")
