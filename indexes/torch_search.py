"""Exact inner-product search and exact re-scoring with torch, for GPUs that Faiss cannot use.

PyPI's faiss-gpu wheels are CUDA 12 builds: on a CUDA 13 machine only faiss-cpu installs, and a flat index
would be searched on the CPU next to an idle GPU. Here the stored float16 vectors stay on the device (half
the memory of float32) and are searched with blocked matrix products. Each block of vectors is widened to
float32 and multiplied with a block of float32 queries, which is how Faiss flat scores the same
float16-rounded vectors, so the rows found are Faiss flat's (scores differ only by float32 summation order).
Memory beyond the resident vectors is bounded by a declared working budget, which sets the block sizes.
Ties are broken as everywhere in lyre: score descending, then row ascending, independent of block layout.

A query's scores do not depend on the queries searched with it: a matrix library picks its kernels, and so
the order of its sums, by the shape of the product, so every product here has :data:`QUERY_BLOCK` query
rows, the last block padded with copies of its last query (:func:`fixed_blocks`).

Everything runs on any torch device: the tests check equality with Faiss flat on CPU torch. No faiss here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from lyre.basics import numbers
from lyre.basics.errors import LyreError
from lyre.indexes.embeddings import EmbeddingStore

if TYPE_CHECKING:
    import torch

QUERY_BLOCK = 64
"""Query rows of every product (flat search and exact refine; also of every GPU Faiss search). Measured at
1,024 dimensions with OpenBLAS: a query's scores in a block of at most 96 rows do not depend on its row in
the block; in blocks of 128 or more, some do. A single query costs this many queries' work."""
#: Working memory of one search on a GPU beyond the resident vectors (score block, widened vectors, sorts).
CUDA_WORK_BYTES = 2 << 30
#: The same on the CPU, where torch's blocks live in host memory next to everything else.
CPU_WORK_BYTES = 256 << 20
#: At most this many queries per block: beyond it a larger block no longer speeds up the product.
MAX_QUERY_BLOCK = 4096
#: Vector blocks shorter than this make the per-block top-k dominate; the query block shrinks instead.
MIN_VECTOR_BLOCK = 4096
#: Resident vectors plus the working budget must fit in this share of a GPU's free memory.
FREE_MEMORY_SHARE = 0.9
#: Bytes per (query, candidate) pair of the running top-k merge: two stable sorts over [scores, rows]
#: (float32 + int64 values, int64 sort indices, gathered copies) of 2 k candidates.
MERGE_BYTES_PER_SLOT = 2 * (4 + 8 + 8 + 4 + 8)
#: Bytes per (query, vector) pair of a block: the float32 score and the boolean tie check.
SCORE_BYTES = 4 + 1


class DeviceMemoryError(LyreError):
    """The vectors (plus the working budget) do not fit in a device's free memory."""


def work_bytes_for(device: str) -> int:
    """The default working budget of a search on ``device``."""
    return CUDA_WORK_BYTES if device.startswith("cuda") else CPU_WORK_BYTES


def plan_blocks(queries: int, vectors: int, dim: int, k: int, work_bytes: int) -> tuple[int, int]:
    """(query block, vector block) whose working memory stays within ``work_bytes``.

    Working memory of one step: the widened float32 vector block (v x dim x 4), the score block and its
    tie check (q x v x 5), and the running merge (q x 2k slots). The query block is as large as allowed
    while vector blocks keep at least MIN_VECTOR_BLOCK rows (or the whole shard, when it is smaller).
    """
    q = max(1, min(queries, MAX_QUERY_BLOCK))
    min_v = max(1, min(vectors, MIN_VECTOR_BLOCK))

    def fitting_vectors(q_block: int) -> int:
        left = work_bytes - q_block * 2 * k * MERGE_BYTES_PER_SLOT
        return left // (4 * dim + SCORE_BYTES * q_block)

    while q > 1 and fitting_vectors(q) < min_v:
        q //= 2
    v = min(vectors, fitting_vectors(q))
    if v < 1:
        raise LyreError(
            f"k={k} needs more than the {numbers.size(work_bytes)} working budget of torch search "
            "for even one query; ask for fewer results"
        )
    return q, max(1, v)


def fixed_blocks(size: int, *arrays: np.ndarray) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """``(start, count, blocks)`` over the rows of ``arrays`` (of one length), each block exactly ``size``
    rows: the last one's ``count`` real rows followed by copies of its last row. So a computation over a
    block has the same shape whatever the number of rows, and a caller keeps the first ``count`` results."""
    total = len(arrays[0])
    for start in range(0, total, size):
        count = min(size, total - start)
        blocks = [values[start : start + size] for values in arrays]
        if count < size:
            blocks = [
                np.concatenate([block, np.repeat(block[-1:], size - count, axis=0)]) for block in blocks
            ]
        yield start, count, blocks


def block_bytes(q_block: int, v_block: int, dim: int, k: int) -> int:
    """Working memory of one step of :func:`plan_blocks`' blocks (the quantity it bounds)."""
    return 4 * v_block * dim + SCORE_BYTES * q_block * v_block + q_block * 2 * k * MERGE_BYTES_PER_SLOT


def merge_top(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best k columns of each row: score descending, ties by row ascending (misses, row -1, last)."""
    import torch

    scores = torch.where(rows < 0, torch.full_like(scores, -torch.inf), scores)
    by_row = torch.sort(torch.where(rows < 0, torch.iinfo(torch.int64).max, rows), dim=1, stable=True)[1]
    scores, rows = scores.gather(1, by_row), rows.gather(1, by_row)
    by_score = torch.sort(scores, dim=1, descending=True, stable=True)[1][:, :k]
    return scores.gather(1, by_score), rows.gather(1, by_score)


def block_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns) of the best ``k`` of each row, the lowest columns winning ties at the cut.

    ``torch.topk`` picks arbitrarily among values equal to the k-th; rows where more values reach the
    k-th than ``k`` are redone with a stable sort, so the same rows are chosen on every device.
    """
    import torch

    values, columns = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    tied = torch.nonzero((scores >= values[:, -1:]).sum(dim=1, dtype=torch.int32) > k).flatten()
    step = max(1, scores.shape[0] // 3)  # a stable sort needs ~12 bytes per score: bounded by the block's
    for start in range(0, len(tied), step):
        chosen = tied[start : start + step]
        order = torch.sort(scores[chosen], dim=1, descending=True, stable=True)[1][:, :k]
        columns[chosen] = order
        values[chosen] = scores[chosen].gather(1, order)
    return values, columns


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """float32 products in full precision on CUDA (no TF32), whatever the process set, restored after."""
    import torch

    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    else:
        saved_tf32 = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = saved_tf32


@dataclass
class TorchShard:
    """Rows [first_row, first_row + len(vectors)) resident on one device (float16 from the store)."""

    first_row: int
    vectors: torch.Tensor

    def search(self, queries: torch.Tensor, k: int, work_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, rows) of the best min(k, rows) vectors for each float32 query, on this device."""
        import torch

        count, dim = self.vectors.shape
        keep = min(k, count)
        q_block, v_block = plan_blocks(len(queries), count, dim, keep, work_bytes)
        scores_out = torch.empty((len(queries), keep), dtype=torch.float32, device=self.vectors.device)
        rows_out = torch.empty((len(queries), keep), dtype=torch.int64, device=self.vectors.device)
        with exact_float32(self.vectors.device):
            for q_start in range(0, len(queries), q_block):
                block_queries = queries[q_start : q_start + q_block]
                best_scores = torch.empty((len(block_queries), 0), dtype=torch.float32, device=queries.device)
                best_rows = torch.empty((len(block_queries), 0), dtype=torch.int64, device=queries.device)
                for v_start in range(0, count, v_block):
                    widened = self.vectors[v_start : v_start + v_block].float()
                    values, columns = block_top(block_queries @ widened.T, min(keep, len(widened)))
                    best_scores, best_rows = merge_top(
                        torch.cat([best_scores, values], dim=1),
                        torch.cat([best_rows, columns + (self.first_row + v_start)], dim=1),
                        keep,
                    )
                scores_out[q_start : q_start + q_block] = best_scores
                rows_out[q_start : q_start + q_block] = best_rows
        return scores_out, rows_out


def _load_shard(store: EmbeddingStore, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """float16 vectors of rows [start, stop) on ``device``, copied chunk by chunk from the store."""
    import torch

    out = torch.empty((stop - start, store.spec.dim), dtype=torch.float16, device=device)
    chunk_rows = store.spec.chunk_rows
    for chunk in range(start // chunk_rows, (stop - 1) // chunk_rows + 1):
        _, vectors = store.chunk(chunk)
        first = chunk * chunk_rows
        lo, hi = max(start, first), min(stop, first + len(vectors))
        piece = torch.from_numpy(np.array(vectors[lo - first : hi - first], dtype=np.float16))
        out[lo - start : hi - start] = piece.to(device, non_blocking=False)
    return out


def _check_fits(device: torch.device, needed: int, what: str) -> None:
    """Refuse (before allocating) when ``needed`` bytes exceed the usable free memory of a GPU."""
    import torch

    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    if needed > FREE_MEMORY_SHARE * free:
        raise DeviceMemoryError(
            f"{what} need {numbers.size(needed)} on {device} but {numbers.size(free)} are free"
        )


class TorchFlatSearch:
    """Exact top-k over shards of float16 vectors spread round-robin over torch devices."""

    def __init__(self, shards: list[TorchShard], work_bytes: int | None = None) -> None:
        self.shards = shards
        self.work_bytes = work_bytes

    @classmethod
    def load(
        cls,
        store: EmbeddingStore,
        ranges: Sequence[tuple[int, int]],
        devices: Sequence[str],
        work_bytes: int | None = None,
    ) -> TorchFlatSearch:
        """The rows of each (start, stop) range as float16 on ``devices[i % len(devices)]``.

        Raises :class:`DeviceMemoryError` before copying a shard that would not fit next to the working
        budget (the caller then searches on the CPU instead).
        """
        return cls._place(
            ranges,
            devices,
            store.spec.dim * 2,
            lambda start, stop, device: _load_shard(store, start, stop, device),
            work_bytes,
        )

    @classmethod
    def from_arrays(
        cls, vectors: np.ndarray, shard_rows: int, devices: Sequence[str], work_bytes: int | None = None
    ) -> TorchFlatSearch:
        """In-memory vectors (kept in their float16 or float32 dtype) in shards of ``shard_rows`` rows."""
        import torch

        count = len(vectors)
        ranges = [(start, min(start + shard_rows, count)) for start in range(0, count, shard_rows)]

        def make(start: int, stop: int, device: torch.device) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(vectors[start:stop])).to(device)

        return cls._place(ranges, devices, vectors.shape[1] * vectors.dtype.itemsize, make, work_bytes)

    @classmethod
    def _place(
        cls,
        ranges: Sequence[tuple[int, int]],
        devices: Sequence[str],
        row_bytes: int,
        make: Callable[[int, int, torch.device], torch.Tensor],
        work_bytes: int | None,
    ) -> TorchFlatSearch:
        import torch

        if not devices:
            raise LyreError("torch search needs at least one device")
        shards: list[TorchShard] = []
        for number, (start, stop) in enumerate(ranges):
            device = torch.device(devices[number % len(devices)])
            needed = (stop - start) * row_bytes
            what = f"shard {number} ({numbers.count(stop - start, 'vectors')})"
            if number < len(devices):  # the first shard on a device also reserves its working budget
                needed += work_bytes if work_bytes is not None else work_bytes_for(str(device))
                what += " and the search's working memory"
            _check_fits(device, needed, what)
            shards.append(TorchShard(start, make(start, stop, device)))
        return cls(shards, work_bytes)

    @property
    def devices(self) -> list[str]:
        """The devices holding shards, in first-use order."""
        return list(dict.fromkeys(str(shard.vectors.device) for shard in self.shards))

    @property
    def resident_bytes(self) -> int:
        return sum(shard.vectors.numel() * shard.vectors.element_size() for shard in self.shards)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and float32 inner products per query; row -1 and score -inf past the last vector.
        Queries are searched in blocks of exactly :data:`QUERY_BLOCK` (see the module docstring)."""
        if k < 1:
            raise LyreError(f"k={k}: ask for at least one result")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        for start, count, (block,) in fixed_blocks(QUERY_BLOCK, queries):
            found_rows, found_scores = self._search_block(block, k)
            rows[start : start + count], scores[start : start + count] = (
                found_rows[:count],
                found_scores[:count],
            )
        return rows, scores

    def _search_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one block of queries over every shard, merged."""
        import torch

        host = torch.from_numpy(queries)
        found: list[tuple[torch.Tensor, torch.Tensor]] = []
        on_device: dict[torch.device, torch.Tensor] = {}
        for shard in self.shards:
            device = shard.vectors.device
            if device not in on_device:
                on_device[device] = host.to(device)
            budget = self.work_bytes if self.work_bytes is not None else work_bytes_for(str(device))
            found.append(shard.search(on_device[device], k, budget))
        scores = torch.cat([part_scores.cpu() for part_scores, _ in found], dim=1)
        rows = torch.cat([part_rows.cpu() for _, part_rows in found], dim=1)
        if rows.shape[1] < k:
            missing = k - rows.shape[1]
            scores = torch.cat([scores, torch.full((len(host), missing), -torch.inf)], dim=1)
            rows = torch.cat([rows, torch.full((len(host), missing), -1, dtype=torch.int64)], dim=1)
        scores, rows = merge_top(scores, rows, k)
        return rows.numpy(), scores.numpy()


def exact_scores(
    queries: np.ndarray,
    rows: np.ndarray,
    fetch: Callable[[np.ndarray], np.ndarray],
    device: str,
    work_bytes: int | None = None,
) -> np.ndarray:
    """float32 inner products of each query with its candidate rows (-inf where the row is -1).

    ``fetch`` returns the stored vectors of unique rows (read on the host, e.g. from the memory-mapped
    store); they travel to ``device`` as float16, which is exact since they were stored as float16. Every
    product has the same number of queries (:func:`fixed_blocks`), so a query's scores do not depend on the
    queries refined with it.
    """
    import torch

    target = torch.device(device)
    budget = work_bytes if work_bytes is not None else work_bytes_for(device)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = np.full(rows.shape, -np.inf, dtype=np.float32)
    depth, dim = max(1, rows.shape[1]), queries.shape[1]
    step = max(1, min(QUERY_BLOCK, budget // (depth * dim * (4 + 2))))  # gathered float32 + float16 upload
    with exact_float32(target):
        for start, count, (batch, block) in fixed_blocks(step, queries, rows):
            unique, inverse = np.unique(np.maximum(block, 0), return_inverse=True)
            vectors = torch.from_numpy(fetch(unique).astype(np.float16)).to(target)
            gathered = vectors[torch.from_numpy(inverse.reshape(block.shape)).to(target)].float()
            on_device = torch.from_numpy(batch).to(target)
            scores = torch.bmm(gathered, on_device[:, :, None])[..., 0].cpu().numpy()[:count]
            exact[start : start + count] = np.where(block[:count] >= 0, scores, -np.inf)
    return exact
