"""Where a dense search runs: Faiss on the GPUs it sees, torch on CUDA GPUs Faiss cannot use, or Faiss on
the CPU, and the one line that says which and why.

PyPI's faiss-gpu wheels are CUDA 12 builds, so a machine may have GPUs that only torch can use: a flat
index is then searched by torch (:mod:`indexes.torch_search`) and IVF-PQ's exact refine runs there, while
its PQ scan stays on Faiss CPU (torch has no IVF-PQ). Whatever cannot be placed where it was meant to (a
shard too large for a GPU, a failing copy) falls back to the CPU with the reason in that line.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.indexes.dense_files import (
    FAISS_DISTRIBUTIONS,
    DenseParams,
    faiss_module,
    load_cpu_shards,
    read_flags,
)
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.manifest import DENSE, EMBEDDINGS
from lyre.indexes.torch_search import DeviceMemoryError, TorchFlatSearch

DEVICES = ("auto", "cpu", "cuda")
"""Where dense search may run (see :func:`place`)."""
ENGINES = ("auto", "faiss", "torch")
"""What searches (see :func:`place`)."""


@dataclass
class Placement:
    """Where each part of a dense search runs, and the line that says so."""

    shards: list[Any]
    """Faiss indexes (empty when torch searches a flat index)."""
    on_gpu: list[bool]
    line: str
    torch_flat: TorchFlatSearch | None = None
    refine_device: str | None = None
    """The torch device of the exact refine (None: numpy on the CPU)."""


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _gpu_support(faiss: Any) -> tuple[int, str]:
    """(GPUs Faiss can use, why none when 0)."""
    if not hasattr(faiss, "StandardGpuResources"):
        installed = [name for name in FAISS_DISTRIBUTIONS if _installed(name)]
        return 0, f"faiss has no GPU support ({', '.join(installed) or 'faiss'} installed)"
    gpus = faiss.get_num_gpus()
    return gpus, "" if gpus else "faiss has GPU support but sees no GPU"


def _torch_gpus() -> list[str]:
    """The CUDA devices torch can use ("cuda:0", ...); none without CUDA torch."""
    try:
        import torch  # heavy: only a search that places itself loads it
    except ImportError:
        return []
    return [f"cuda:{gpu}" for gpu in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _cpu_placement(
    dense_dir: Path, params: DenseParams, reason: str, refine_device: str | None = None
) -> Placement:
    indexes = load_cpu_shards(dense_dir, params)
    line = f"dense search: {params.index_type}, Faiss CPU ({reason})"
    if refine_device:
        line += f"; exact refine with torch on {refine_device}"
    return Placement(indexes, [False] * len(indexes), line, refine_device=refine_device)


def _torch_placement(index_dir: Path, params: DenseParams, devices: list[str], reason: str) -> Placement:
    """Flat: every shard's float16 vectors on the torch devices (Faiss CPU when they do not fit).
    IVF-PQ: the PQ scan stays on Faiss CPU (torch has no IVF-PQ), the exact refine runs on the device."""
    dense_dir = index_dir / DENSE
    if params.index_type != "flat":
        return _cpu_placement(dense_dir, params, reason, refine_device=devices[0])
    store = EmbeddingStore.open(index_dir / EMBEDDINGS)
    try:
        flat = TorchFlatSearch.load(store, [shard.rows for shard in params.shards], devices)
    except DeviceMemoryError as error:
        return _cpu_placement(dense_dir, params, f"{reason}; torch refused: {error}")
    return Placement([], [], f"dense search: flat, torch on {', '.join(flat.devices)} ({reason})", flat)


def _gpu_placement(dense_dir: Path, params: DenseParams, faiss: Any, gpus: int) -> Placement:
    """Shard i on Faiss GPU i % gpus; a shard whose copy fails stays on Faiss CPU, said in the line."""
    options = faiss.GpuClonerOptions()
    options.useFloat16 = params.float16_lookup_tables  # IVF-PQ: float16 lookup tables
    resources = [faiss.StandardGpuResources() for _ in range(gpus)]
    flags = read_flags(faiss, params.index_type)
    shards = params.shards
    indexes: list[Any] = []
    on_gpu: list[bool] = []
    failures: list[str] = []
    for number, shard in enumerate(shards):
        path = str(dense_dir / shard.file)
        gpu = number % gpus
        try:
            indexes.append(faiss.index_cpu_to_gpu(resources[gpu], gpu, faiss.read_index(path), options))
            on_gpu.append(True)
        except (RuntimeError, MemoryError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:120]
            failures.append(f"{shard.file} on GPU {gpu}: {reason}")
            indexes.append(faiss.read_index(path, flags))
            on_gpu.append(False)
    tables = ", float16 lookup tables" if options.useFloat16 else ""
    line = (
        f"dense search: {params.index_type}, faiss-gpu on {min(gpus, len(shards))} GPU(s): "
        f"{count(sum(on_gpu))} of {count(len(shards), 'shards')}{tables}"
    )
    if failures:
        line += f"; {count(len(failures))} on Faiss CPU because the GPU copy failed ({failures[0]})"
    return Placement(indexes, on_gpu, line)


def place(index_dir: Path, params: DenseParams, device: str, engine: str) -> Placement:
    """faiss-gpu where it sees GPUs; else torch on CUDA GPUs (flat search, IVF-PQ's exact refine); else
    Faiss on the CPU. ``engine`` forces Faiss or torch (torch on the CPU with ``device="cpu"``)."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: use one of {', '.join(DEVICES)}")
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    faiss = faiss_module()
    dense_dir = index_dir / DENSE
    gpus, why = _gpu_support(faiss)
    torch_gpus = [] if device == "cpu" else _torch_gpus()
    if engine == "torch":
        if device == "cuda" and not torch_gpus:
            raise LyreError("torch sees no CUDA GPU for the dense search; search on a GPU machine or the CPU")
        return _torch_placement(index_dir, params, torch_gpus or ["cpu"], "engine torch asked for")
    if device == "cpu":
        return _cpu_placement(dense_dir, params, "device cpu asked for")
    if not gpus and torch_gpus and engine == "auto":
        return _torch_placement(index_dir, params, torch_gpus, why)
    if not gpus:
        if device == "cuda":
            raise LyreError(f"{why}; install faiss-gpu-cu12 on a GPU machine, or search on the CPU")
        return _cpu_placement(dense_dir, params, why)
    return _gpu_placement(dense_dir, params, faiss, gpus)
