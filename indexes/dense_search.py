"""Searching a dense index: every shard searched where :mod:`indexes.dense_placement` put it, the per-shard
top-k lists merged exactly, and IVF-PQ candidates re-scored exactly from the stored vectors.

A query's results never depend on which other queries are searched with it, so a cached search (one query
vector computed now, the others read back) and an uncached one give the same run. That takes care, because
a matrix library computes one query's scores differently as the batch around it changes: Faiss CPU scores
a batch with BLAS from ``distance_compute_blas_threshold`` on (20 queries in older releases; in Faiss 1.15,
20 values, queries x dimensions, so even one query), and BLAS picks its kernels, and so the order of its
sums, by the shape of the product (measured at 1,024 dimensions: 397 of the scores of 10 queries differed
from their scores among 300). So:

- Faiss on the CPU scores every query alone (:func:`each_query_alone`): a flat shard or a coarse quantizer
  computes one dot product per query and vector, whatever the batch. Measured on 2 cores: a query searched
  alone is 2-7 times faster, a batch of 300 up to 40% slower (``benchmarks/results/dense_invariance.md``).
- Faiss on a GPU, and torch (:mod:`indexes.torch_search`), which have no such mode, always multiply blocks
  of exactly :data:`~indexes.torch_search.QUERY_BLOCK` queries, the last padded with copies of its last
  query, so every product has the same shape.
- The exact refine multiplies each query's candidates on their own (numpy), or in fixed blocks (torch).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics import progress
from lyre.basics.errors import LyreError, opt
from lyre.indexes import faiss_params
from lyre.indexes.dense_files import PARAMS_FILE, DenseParams, faiss_module
from lyre.indexes.dense_placement import place
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.manifest import DENSE, EMBEDDINGS, Manifest, StageFolder, load_manifest, require_record
from lyre.indexes.torch_search import QUERY_BLOCK, TorchFlatSearch, exact_scores, fixed_blocks

QUERY_BATCH = 1024
"""Queries searched at a time: bounds the merge buffers (queries x shards x depth)."""
REFINE_FETCH = 65_536
"""Candidate vectors fetched at a time for exact re-scoring (~100 MB at 384-d)."""
NEVER_BLAS = 2**31 - 1
"""Faiss's ``distance_compute_blas_threshold`` (a C int) that no call reaches, counted in queries or in
queries x dimensions (QUERY_BATCH x 2 million dimensions): every query scored alone."""

_threshold_lock = threading.Lock()


@contextlib.contextmanager
def each_query_alone(faiss: Any) -> Iterator[None]:
    """Faiss CPU searches in the block score each query on its own (no BLAS), so its scores do not depend
    on the batch. The threshold is process-wide: it is set only around searches (k-means training keeps
    BLAS), under a lock, so concurrent searches of one process never see it restored halfway."""
    with _threshold_lock:
        saved = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = NEVER_BLAS
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = saved


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each query's candidates: score descending, ties by row ascending, misses (-1) last.

    Used both to merge shards and to rank refined scores, so the order never depends on shard layout.
    """
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    best_rows = np.take_along_axis(rows, order, axis=1)
    best_scores = np.take_along_axis(scores, order, axis=1)
    if best_rows.shape[1] < k:
        pad = k - best_rows.shape[1]
        best_rows = np.pad(best_rows, ((0, 0), (0, pad)), constant_values=-1)
        best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return best_rows.astype(np.int64), best_scores


def _set_nprobe(index: Any, nprobe: int) -> None:
    ivf = faiss_module().try_extract_index_ivf(index)
    target = ivf if ivf is not None else index
    if hasattr(target, "nprobe"):
        target.nprobe = nprobe


@dataclass
class DenseIndex:
    """Every shard of one dense index, searched together; results merged exactly across shards."""

    index_dir: Path
    params: DenseParams
    shards: list[Any]
    on_gpu: list[bool] | None = None
    _store: EmbeddingStore | None = None
    torch_flat: TorchFlatSearch | None = None
    """Set when torch searches this flat index (``shards`` is then empty)."""
    refine_device: str | None = None
    """The torch device of IVF-PQ's exact refine (None: numpy on the CPU)."""
    manifest: Manifest | None = None
    """The index's manifest as the index was opened with it (None: read when needed)."""

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        device: str = "auto",
        engine: str = "auto",
        *,
        checked: bool = False,
        manifest: Manifest | None = None,
    ) -> DenseIndex:
        """Open a built index; says on one line which engine searches where, and why.

        ``device``: auto, cpu or cuda. ``engine``: auto (faiss-gpu where it sees a GPU, else torch on
        CUDA GPUs, else Faiss CPU), faiss, or torch (flat search and the exact refine; on the CPU with
        ``device="cpu"``). ``checked``: the caller already found the dense stage complete in the manifest
        it read. ``manifest``: that manifest, so it is not read again; ``params.json`` is read through the
        metadata reader, checked against what it recorded.
        """
        index_dir = Path(index_dir)
        manifest = manifest if manifest is not None else load_manifest(index_dir)
        if not checked and DENSE not in manifest.stages:
            require_record(index_dir, DENSE)  # the one line saying what is missing and how to build it
        params = StageFolder.locate(index_dir / DENSE, manifest).read(PARAMS_FILE, DenseParams)
        placement = place(index_dir, params, device, engine)
        progress.say(placement.line)
        return cls(
            index_dir,
            params,
            placement.shards,
            placement.on_gpu,
            torch_flat=placement.torch_flat,
            refine_device=placement.refine_device,
            manifest=manifest,
        )

    @property
    def dim(self) -> int:
        return self.params.dim

    @property
    def store(self) -> EmbeddingStore:
        """The embedding chunks, opened on first use (only refine needs them)."""
        if self._store is None:
            self._store = EmbeddingStore.open(self.index_dir / EMBEDDINGS, self.manifest)
        return self._store

    def search(
        self, query_vectors: np.ndarray, k: int, nprobe: int | None = None, refine: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and inner-product scores per query (row -1, score -inf where fewer hits), each query's
        the same whatever queries it is searched with.

        ``nprobe`` and ``refine`` default to the tuned values; ``refine=R`` re-scores the top R PQ
        candidates exactly from the stored float16 vectors (0 turns it off; ignored by flat indexes).
        """
        queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise LyreError(
                f"query vectors have shape {queries.shape}; this dense index needs [n, {self.dim}]"
            )
        if k < 1:
            raise LyreError(f"k={k}: ask for at least one result")
        probes = nprobe if nprobe is not None else self.params.nprobe
        depth_refine = refine if refine is not None else self.params.refine
        if self.params.index_type == "flat":
            depth_refine = 0
        depth = max(k, depth_refine)
        if self.on_gpu and any(self.on_gpu) and max(depth, probes or 0) > faiss_params.GPU_MAX_K:
            raise LyreError(
                f"GPU Faiss allows at most {faiss_params.GPU_MAX_K} results and probes; lower k, "
                f"{opt('refine')} or {opt('nprobe')}, or search on the CPU (CUDA_VISIBLE_DEVICES=)"
            )
        if probes is not None:
            for index in self.shards:
                _set_nprobe(index, int(probes))
        rows_out = np.empty((len(queries), k), dtype=np.int64)
        scores_out = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            if self.torch_flat is not None:
                rows, scores = self.torch_flat.search(batch, depth)
            else:
                rows, scores = self._search_shards(batch, depth)
            if depth_refine:
                rows, scores = self._refine(batch, rows, k)
            else:
                rows, scores = rows[:, :k], scores[:, :k]
            rows_out[start : start + len(batch)] = rows
            scores_out[start : start + len(batch)] = scores
        return rows_out, scores_out

    def _search_shards(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``depth`` of every shard, merged; on a GPU in fixed blocks of :data:`QUERY_BLOCK` queries."""
        if not any(self.on_gpu or []):
            return self._search_block(queries, depth)
        rows = np.empty((len(queries), depth), dtype=np.int64)
        scores = np.empty((len(queries), depth), dtype=np.float32)
        for start, count, (block,) in fixed_blocks(QUERY_BLOCK, queries):
            found_rows, found_scores = self._search_block(block, depth)
            rows[start : start + count], scores[start : start + count] = (
                found_rows[:count],
                found_scores[:count],
            )
        return rows, scores

    def _search_block(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``depth`` of every shard for ``queries``, merged. CPU IVF shards share one coarse quantizer,
        so the queries are assigned to lists once and every shard scans those lists (search_preassigned)
        instead of repeating the assignment per shard, which dominates at small nprobe."""
        faiss = faiss_module()
        ivfs = [faiss.try_extract_index_ivf(index) for index in self.shards]
        with each_query_alone(faiss):
            if len(self.shards) > 1 and not any(self.on_gpu or []) and all(ivf is not None for ivf in ivfs):
                coarse_scores, lists = ivfs[0].quantizer.search(queries, ivfs[0].nprobe)
                found = [ivf.search_preassigned(queries, depth, lists, coarse_scores) for ivf in ivfs]
            else:
                found = [index.search(queries, depth) for index in self.shards]
        scores = np.concatenate([f[0] for f in found], axis=1)
        rows = np.concatenate([f[1] for f in found], axis=1)
        return top_k(rows, scores, depth)

    def _refine(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of the candidates from the stored vectors, then the best k of them
        (on ``refine_device`` with torch when set, else with numpy, one query's candidates at a time)."""
        if self.refine_device is not None:
            return top_k(rows, exact_scores(queries, rows, self.store.fetch, self.refine_device), k)
        exact = np.full(rows.shape, -np.inf, dtype=np.float32)
        step = max(1, REFINE_FETCH // rows.shape[1])
        for start in range(0, len(queries), step):
            block = rows[start : start + step]
            unique, inverse = np.unique(np.maximum(block, 0), return_inverse=True)
            candidates = self.store.fetch(unique)[inverse.reshape(block.shape)]
            scores = np.matmul(candidates, queries[start : start + step, :, None])[..., 0]
            exact[start : start + step] = np.where(block >= 0, scores, -np.inf)
        return top_k(rows, exact, k)
