"""Shared builders for the dense tests: clustered unit vectors (the structure IVF relies on, like text
embeddings), an index folder holding them as a recorded embeddings stage, and numpy's exact top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lyre.indexes.embeddings import EmbeddingStore, StoreSpec
from lyre.indexes.manifest import record_stage
from lyre.indexes.metadata import StageRecord
from lyre.models.recipes import builtin_recipe

N, DIM, CHUNK = 3000, 32, 500
IVFPQ = {"index_type": "ivfpq", "nlist": 16, "pq_m": 8, "tune_queries": 100}


def clustered(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Unit vectors around 20 centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_store(index_dir: Path, vectors: np.ndarray, skip: tuple[int, ...] = (), chunk: int = CHUNK) -> Path:
    """``vectors`` as the embeddings stage of ``index_dir`` (recorded unless chunks ``skip`` are missing)."""
    dim = vectors.shape[1]
    spec = StoreSpec(num_rows=len(vectors), dim=dim, chunk_rows=chunk, model="synthetic", recipe={})
    store = EmbeddingStore.create_or_resume(index_dir / "embeddings", spec)
    for number in range(spec.num_chunks):
        if number not in skip:
            start, stop = spec.chunk_bounds(number)
            store.write_chunk(number, vectors[start:stop].astype(np.float16))
    if not skip:
        params = {"model": "synthetic", "recipe": builtin_recipe("lychee-embed").to_dict(), "dim": dim}
        record_stage(
            index_dir, "embeddings", StageRecord("synthetic vectors", params, {"documents": len(vectors)})
        )
    return index_dir


def numpy_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows and scores of the float16-stored ``vectors``, ties by row."""
    scores = queries @ vectors.astype(np.float16).astype(np.float32).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """The index's vectors: N clustered unit vectors."""
    return clustered(N, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    """40 query vectors around the same centres."""
    return clustered(40, seed=2)


@pytest.fixture
def index_dir(tmp_path: Path, vectors: np.ndarray) -> Path:
    """A fresh index folder whose embeddings stage holds ``vectors``."""
    return write_store(tmp_path / "idx", vectors)
