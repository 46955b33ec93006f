"""Dense search whose results do not depend on the other queries: what it costs on Faiss CPU.

Faiss scores a batch with BLAS from ``distance_compute_blas_threshold`` on (in Faiss 1.15: 20 values,
queries x dimensions, so even a single query), and BLAS's sums for one query change with the batch around
it; lyre's dense search makes Faiss CPU score every query alone (``indexes/dense_search.py``). This
measures a flat index both ways, through ``DenseIndex.search``: the queries per second of one call with
every query, of queries searched one at a time, and how many scores of 10 queries searched alone differ
from their scores among all of them (at three places in the batch).

"BLAS batches" is lyre before the change: the same code with Faiss's own threshold (20) put back.

Vectors: seeded random unit vectors of ``--rows`` x ``--dim`` (default 5,183 x 1,024, SciFact's size at
lychee-embed's dimension), stored as float16 like lyre stores them, and the index at ``--index`` when given
(e.g. SciFact encoded with MiniLM). Queries: normalised midpoints of two random stored vectors.

    python benchmarks/dense_invariance.py [--index INDEX] [--rows N --dim D] [--queries Q] [--k K]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lyre.indexes.dense_search import DenseIndex

RESULTS = Path(__file__).parent / "results" / "dense_invariance.md"
FAISS_DEFAULT_THRESHOLD = 20
"""``faiss.cvar.distance_compute_blas_threshold`` as Faiss ships it."""


def synthetic_index(folder: Path, rows: int, dim: int, seed: int) -> Path:
    """A flat dense index over seeded random unit vectors, built through lyre's dense stage."""
    from lyre.indexes.dense_stage import DenseOptions, build_dense
    from lyre.indexes.embeddings import EmbeddingStore, StoreSpec
    from lyre.indexes.manifest import record_stage
    from lyre.indexes.metadata import StageRecord
    from lyre.models.recipes import builtin_recipe

    vectors = np.random.default_rng(seed).standard_normal((rows, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    spec = StoreSpec(num_rows=rows, dim=dim, chunk_rows=8192, model="synthetic", recipe={})
    store = EmbeddingStore.create_or_resume(folder / "embeddings", spec)
    for chunk in range(spec.num_chunks):
        start, stop = spec.chunk_bounds(chunk)
        store.write_chunk(chunk, vectors[start:stop].astype(np.float16))
    recipe = builtin_recipe("lychee-embed").to_dict()
    params = {"model": "synthetic", "recipe": recipe, "dim": dim}
    record_stage(folder, "embeddings", StageRecord("synthetic vectors", params, {"documents": rows}))
    build_dense(folder, DenseOptions(index_type="flat"))
    return folder


def midpoint_queries(index: DenseIndex, count: int, seed: int) -> np.ndarray:
    store = index.store
    pairs = np.random.default_rng(seed + 1).integers(0, store.spec.num_rows, size=(2, count))
    queries = store.fetch(pairs[0]) + store.fetch(pairs[1])
    return (queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def best_of(repeats: int, function: Callable[[], object]) -> float:
    function()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - began)
    return best


def differing(index: DenseIndex, queries: np.ndarray, k: int) -> int:
    """Scores of 10 queries searched alone that differ (bitwise) from theirs among all the queries."""
    _, scores = index.search(queries, k)
    found = 0
    for start in (0, len(queries) // 2, len(queries) - 10):
        _, alone = index.search(queries[start : start + 10], k)
        found += int((alone != scores[start : start + 10]).sum())
    return found


SCORINGS = (("BLAS batches (before)", FAISS_DEFAULT_THRESHOLD), ("each query alone", 2**31 - 1))
"""The two ways measured, by the BLAS threshold set around each search."""


def measure(name: str, scoring: str, index: DenseIndex, queries: np.ndarray, args: argparse.Namespace) -> str:
    """One table row. Queries one at a time are timed first: BLAS threads still spinning after a batched
    call would slow the single queries that follow it on a small machine."""
    singles = queries[: args.singles]
    single = best_of(
        max(1, args.repeats // 2),
        lambda: [index.search(query[None], args.k) for query in singles],
    )
    batch = best_of(args.repeats, lambda: index.search(queries, args.k))
    return (
        f"| {name} | {scoring} | {len(queries) / batch:,.0f} | {len(singles) / single:,.0f} | "
        f"{differing(index, queries, args.k)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None, help="also an index folder with a dense stage")
    parser.add_argument("--rows", type=int, default=5183)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--singles", type=int, default=100, help="queries searched one at a time")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import faiss
    from lyre.basics import progress
    from lyre.basics.atomic import write_text_atomic
    from lyre.indexes import dense_search
    from lyre.indexes.dense_search import DenseIndex

    progress.set_quiet(True)
    rows = [
        "| index | scoring | queries/s, one call | queries/s, one at a time | scores differing alone |",
        "|---|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        indexes = {f"{args.rows:,} x {args.dim:,} random": synthetic_index(
            Path(scratch) / "synthetic", args.rows, args.dim, args.seed
        )}  # fmt: skip
        if args.index is not None:
            indexes[str(args.index)] = args.index
        for name, folder in indexes.items():
            index = DenseIndex.open(folder, device="cpu")
            queries = midpoint_queries(index, args.queries, args.seed)
            for scoring, threshold in SCORINGS:
                dense_search.NEVER_BLAS = threshold
                rows.append(measure(f"{name} ({index.dim} dims)", scoring, index, queries, args))
    lines = [
        "# Dense search independent of the other queries: the cost on Faiss CPU",
        "",
        f"Command: `python benchmarks/dense_invariance.py {' '.join(sys.argv[1:])}`",
        "",
        f"Flat indexes, {args.queries} midpoint queries, k={args.k}, `DenseIndex.search` on the CPU; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; faiss {faiss.__version__}. Best of {args.repeats} after a warm-up. "
        "Scores differing alone: of 3 x 10 queries x k scores, how many differ bitwise between the 10 "
        "searched alone and the same 10 among all.",
        "",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
