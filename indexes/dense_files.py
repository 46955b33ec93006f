"""The files of the dense stage, ``INDEX/dense/``: their names, the records beside the shards, and Faiss.

Layout::

    build.json              what the shards are built with (:class:`DenseBuild`); a build with other
                            settings starts again
    trained.faiss           the trained, empty IVF-PQ index (coarse quantizer + PQ codebooks), IVF-PQ only
    shard-000000.faiss      rows [0, shard_rows) added to a copy of trained.faiss with their global row ids
    params.json             build settings plus the nprobe / refine depth tuned to reach the recall target
                            (:class:`DenseParams`), read through the metadata reader by every search

IVF-PQ is trained once, on a seeded random sample, so every shard shares one quantizer: each shard can be
searched on its own (on its own GPU) and the per-shard top-k lists merge into exactly the top-k of one big
index. Flat shards (exact inner product) are the reference that IVF-PQ is tuned and measured against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lyre.basics.numbers import count

BUILD_FILE = "build.json"
PARAMS_FILE = "params.json"
TRAINED_FILE = "trained.faiss"
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu")
"""The distributions that install the ``faiss`` module (recorded in the stage's provenance)."""


def faiss_module() -> Any:
    """The Faiss module, imported on first use: `lyre --help` and a cached search never load it."""
    import faiss

    return faiss


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.faiss"


@dataclass(frozen=True)
class DenseShard:
    """One shard file and the rows [start, stop) it holds."""

    file: str
    rows: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class DenseBuild:
    """``build.json``: what the shards are built with. A build finding other settings there starts again,
    so shards made with other settings are never mixed."""

    index_type: Literal["flat", "ivfpq"]
    num_rows: int
    dim: int
    model: str
    shard_rows: int
    num_shards: int
    seed: int
    nlist: int | None = None
    m: int | None = None
    nbits: int | None = None
    train_sample: int | None = None
    float16_lookup_tables: bool = False
    factory: str | None = None

    def __post_init__(self) -> None:
        if self.num_rows < 1 or self.dim < 1 or self.shard_rows < 1:
            raise ValueError("num_rows, dim and shard_rows must be at least 1")
        if self.num_shards != -(-self.num_rows // self.shard_rows):
            raise ValueError(
                f"{count(self.num_rows, 'rows')} in shards of {count(self.shard_rows)} are not "
                f"{count(self.num_shards)}"
            )
        if self.index_type == "ivfpq" and (self.nlist is None or self.nlist < 1):
            raise ValueError("an ivfpq index needs nlist >= 1")


@dataclass(frozen=True, kw_only=True)
class DenseParams(DenseBuild):
    """``params.json``: the build settings, the shards, and the search settings tuned at build time."""

    shards: tuple[DenseShard, ...]
    recall_target: float
    nprobe: int | None = None
    refine: int = 0
    recall: float | None = None
    """Overlap@100 with exact search on build-time queries (1.0 for flat); None while tuning."""
    nprobe_reached: int | None = None
    tuning: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    index_bytes: int | None = None
    bytes_per_vector: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        expected = [
            (s * self.shard_rows, min((s + 1) * self.shard_rows, self.num_rows))
            for s in range(self.num_shards)
        ]
        if [shard.rows for shard in self.shards] != expected:
            raise ValueError(
                f"the shards do not cover rows 0..{count(self.num_rows)} in shards of "
                f"{count(self.shard_rows)}"
            )
        if any(Path(shard.file).name != shard.file for shard in self.shards):
            raise ValueError("shard files must be file names in the dense folder")


def read_flags(faiss: Any, index_type: str) -> int:
    """Faiss read flags that memory-map a shard instead of loading it (0 where unsupported)."""
    if index_type == "ivfpq":
        return getattr(faiss, "IO_FLAG_MMAP", 0)
    return getattr(faiss, "IO_FLAG_MMAP_IFC", 0)


def load_cpu_shards(dense_dir: Path, params: DenseParams) -> list[Any]:
    """Every shard of ``params`` read for Faiss on the CPU, memory-mapped where Faiss can."""
    faiss = faiss_module()
    flags = read_flags(faiss, params.index_type)
    return [faiss.read_index(str(dense_dir / shard.file), flags) for shard in params.shards]
