"""Where a model's replicas run, for the two jobs that spread one model over several devices: encoding an
index's chunks (:mod:`indexes.encode_runners`) and scoring rerank groups (:mod:`retrieval.rerank_workers`).

Both take the same engine names (:data:`ENGINES`):

- ``local``: this process, one model on one device (several visible GPUs: one process per GPU);
- ``gpus``: one spawned process per GPU of this machine (:mod:`~models.engines.device_pool`);
- ``ray``: one actor per GPU (or a few CPU actors) of a Ray cluster (:mod:`~models.engines.ray_cluster`).

What is computed, and where each result is kept, stays with the job: an engine only decides who holds a
replica and hands it work, so a result does not depend on the engine that computed it.
"""

from __future__ import annotations

ENGINES = ("local", "gpus", "ray")


def visible_gpus() -> int:
    """CUDA devices this process may use (0 without CUDA)."""
    import torch  # heavy: only a command that spreads a model over devices loads it

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
