"""Default Faiss settings chosen from the corpus size N and the vector dimension, as pure functions.

Every choice follows a published rule of thumb so that a user who overrides one knows what they
override: nlist near 4 x sqrt(N) (Faiss guidelines say 4..16 x sqrt(N)), never more lists than the
training sample supports (k-means wants >= 39 points per centroid), a PQ code of m bytes with m a
divisor of the dimension that GPU IVF-PQ accepts, 8-bit codes (the only width GPU IVF-PQ supports),
and float16 lookup tables whenever m is too large for float32 tables in 48 KiB of GPU shared memory.
Small corpora get exact search: below :data:`FLAT_MAX_ROWS` vectors an exact scan costs milliseconds
per query and IVF-PQ would only lose recall.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

#: Sub-quantizer counts (bytes per vector at 8 bits) that GPU IVF-PQ implements.
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
#: Largest m whose float32 lookup tables (256 x m x 4 bytes) fit in 48 KiB of GPU shared memory.
FLOAT32_TABLES_MAX_M = 48
#: k-means needs this many training points per centroid (Faiss warns below it).
MIN_POINTS_PER_CENTROID = 39
#: ``index_type="auto"`` builds an exact flat index below this many vectors.
FLAT_MAX_ROWS = 100_000
#: At most this many vectors train the quantizers: 64 x 4096 lists, about a minute of k-means on 2 cores.
MAX_TRAIN_SAMPLE = 262_144
#: Dimensions per PQ sub-vector aimed for; 4 keeps overlap@100 with exact search high on text embeddings.
DIMS_PER_SUBQUANTIZER = 4
#: PQ code width; GPU IVF-PQ supports only 8.
NBITS = 8
#: Index types one can ask for: ``auto`` picks flat or ivfpq from the number of vectors.
INDEX_TYPES = ("auto", "flat", "ivfpq")
#: The index types a dense stage is built as (what ``auto`` resolves to).
IndexType = Literal["flat", "ivfpq"]


@dataclass(frozen=True)
class IvfPqParams:
    """The shape of one IVF-PQ index: everything needed to build the Faiss factory string."""

    nlist: int
    m: int
    nbits: int
    train_sample: int
    float16_lookup_tables: bool

    @property
    def factory(self) -> str:
        return f"IVF{self.nlist},PQ{self.m}x{self.nbits}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "factory": self.factory}


def choose_index_type(num_rows: int, requested: str = "auto") -> IndexType:
    """ "flat" or "ivfpq": ``auto`` is flat below :data:`FLAT_MAX_ROWS` vectors, IVF-PQ from there."""
    if requested == "flat":
        return "flat"
    if requested == "ivfpq":
        return "ivfpq"
    if requested != "auto":
        raise ValueError(f"index type must be auto, flat or ivfpq, not {requested!r}")
    return "flat" if num_rows < FLAT_MAX_ROWS else "ivfpq"


def floor_power_of_two(value: float) -> int:
    """Largest power of two <= value (1 for anything below 2)."""
    return 1 << max(0, math.floor(math.log2(value))) if value >= 1 else 1


def nearest_power_of_two(value: float) -> int:
    """Power of two nearest to value in log scale (ties go up)."""
    return 1 << max(0, round(math.log2(value))) if value >= 1 else 1


def target_nlist(num_rows: int) -> int:
    """4 x sqrt(N) rounded to a power of two, before the training-sample cap."""
    return nearest_power_of_two(4 * math.sqrt(max(num_rows, 1)))


def default_train_sample(num_rows: int) -> int:
    """64 training points per wanted list, capped by N and :data:`MAX_TRAIN_SAMPLE`."""
    return min(num_rows, 64 * target_nlist(num_rows), MAX_TRAIN_SAMPLE)


def max_nlist(train_sample: int) -> int:
    """Most lists a sample trains well: a power of two with >= 39 points per list."""
    return floor_power_of_two(max(1, train_sample // MIN_POINTS_PER_CENTROID))


def default_nlist(num_rows: int, train_sample: int) -> int:
    """:func:`target_nlist`, lowered to what ``train_sample`` supports."""
    return min(target_nlist(num_rows), max_nlist(train_sample))


def default_m(dim: int) -> int:
    """Largest GPU-legal m dividing dim with >= 4 dims per sub-vector (1 if none)."""
    legal = [m for m in GPU_PQ_M if dim % m == 0 and m * DIMS_PER_SUBQUANTIZER <= dim]
    return max(legal, default=1)


def needs_float16_tables(m: int) -> bool:
    """GPU IVF-PQ with 8-bit codes and m > 48 only runs with float16 lookup tables."""
    return m > FLOAT32_TABLES_MAX_M


def check_m(m: int, dim: int, nbits: int = NBITS) -> None:
    """Refuse PQ settings no index (or no GPU index) can hold, with the legal alternatives."""
    if dim % m:
        raise ValueError(f"PQ m={m} does not divide the dimension {dim}; pick one of {legal_m(dim)}")
    if m not in GPU_PQ_M:
        raise ValueError(f"PQ m={m} is not supported by GPU IVF-PQ; pick one of {legal_m(dim)}")
    if nbits != NBITS:
        raise ValueError(f"PQ codes of {nbits} bits are not supported by GPU IVF-PQ; use {NBITS}")


def legal_m(dim: int) -> list[int]:
    """Every GPU-legal m that divides dim."""
    return [m for m in GPU_PQ_M if dim % m == 0]


def ivfpq_params(
    num_rows: int,
    dim: int,
    *,
    nlist: int | None = None,
    m: int | None = None,
    nbits: int = NBITS,
    train_sample: int | None = None,
) -> IvfPqParams:
    """Defaults for N vectors of ``dim`` dimensions, with any of them overridden (and checked)."""
    if num_rows < 1:
        raise ValueError("an IVF-PQ index needs at least one vector")
    sample = min(num_rows, train_sample if train_sample is not None else default_train_sample(num_rows))
    lists = nlist if nlist is not None else default_nlist(num_rows, sample)
    if not 1 <= lists <= sample:
        raise ValueError(f"nlist={lists} needs 1..{sample} (the training sample); use <= {max_nlist(sample)}")
    code = m if m is not None else default_m(dim)
    check_m(code, dim, nbits)
    return IvfPqParams(lists, code, nbits, sample, needs_float16_tables(code))


GPU_MAX_K = 2048
"""GPU Faiss returns at most this many results per query and probes at most this many lists."""


def nprobe_candidates(nlist: int, gpu_limit: int = GPU_MAX_K) -> list[int]:
    """Powers of two up to nlist (and the GPU's 2048 limit), then nlist itself."""
    top = min(nlist, gpu_limit)
    values = [1 << i for i in range(int(math.log2(top)) + 1)]
    return values if values[-1] == top else [*values, top]


#: Refine depths tried by build-time tuning, smallest first (0 = PQ scores only); <= 2048 for GPU top-k.
REFINE_DEPTHS = (0, 128, 256, 512, 1024, 2048)
