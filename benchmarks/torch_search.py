"""torch flat search vs Faiss flat: same rows, and how long each takes.

lyre searches a flat index with torch where torch sees a CUDA GPU and Faiss does not (PyPI's faiss-gpu is
a CUDA 12 build; see indexes/torch_search.py). This measures both engines on the same float16-stored
vectors: Faiss ``IndexFlatIP`` on the CPU (float32 copies, as lyre's flat shards hold them) against
``TorchFlatSearch`` on the CPU and, when visible, on the GPU (float16 resident, float32 products).

Vectors: the embedding store of ``--index`` when given (e.g. SciFact encoded with MiniLM), else seeded
random unit vectors of ``--rows`` x ``--dim`` (default SciFact's 5,183 x 384). Queries: normalised
midpoints of two random stored vectors (they lie among the documents, like real queries). Equality: the
rows each engine returns in lyre's order (score descending, then row ascending); where they differ, the
scores at those ranks must agree to float32 rounding (a near-tie ordered differently by summation order).

    python benchmarks/torch_search.py [--index INDEX] [--rows N --dim D] [--queries Q] [--k 100 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "torch_search.md"


def stored_vectors(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """float16 vectors as lyre stores them, and where they came from."""
    if args.index is not None:
        from lyre.indexes.embeddings import EmbeddingStore

        store = EmbeddingStore.open(args.index / "embeddings")
        vectors = np.concatenate([np.asarray(chunk) for _, chunk in store.iter_chunks()])
        return vectors.astype(np.float16), f"embedding store of {args.index} ({store.spec.model})"
    rng = np.random.default_rng(args.seed)
    vectors = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16), f"seeded random unit vectors (seed {args.seed})"


def midpoint_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    pairs = rng.integers(0, len(vectors), size=(2, count))
    queries = vectors[pairs[0]].astype(np.float32) + vectors[pairs[1]].astype(np.float32)
    return queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)


def best_of(repeats: int, function: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[tuple, float]:
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - began)
    return result, best


def agreement(found: tuple[np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray]) -> str:
    """'identical' or how many ranks differ, with the largest score gap at those ranks."""
    rows, scores = found
    true_rows, true_scores = truth
    differ = rows != true_rows
    max_diff = float(np.abs(scores - true_scores).max())
    if not differ.any():
        return f"identical rows; max score diff {max_diff:.1e}"
    gap = float(np.abs(scores[differ] - true_scores[differ]).max())
    same_sets = sum(set(a.tolist()) == set(b.tolist()) for a, b in zip(rows, true_rows, strict=True))
    return (
        f"{int(differ.sum())} of {differ.size} ranks differ (in {int(differ.any(axis=1).sum())} queries), "
        f"score gap there <= {gap:.1e} (near-ties); same row set in {same_sets} of {len(rows)} queries; "
        f"max score diff {max_diff:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None, help="an index folder with embeddings")
    parser.add_argument("--rows", type=int, default=5183)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cpu-torch", action="store_true", help="skip torch on the CPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import faiss
    import torch
    from lyre.basics.atomic import write_text_atomic
    from lyre.indexes.dense_search import top_k
    from lyre.indexes.torch_search import TorchFlatSearch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    vectors, source = stored_vectors(args)
    queries = midpoint_queries(vectors, args.queries, args.seed)
    began = time.perf_counter()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors.astype(np.float32))
    faiss_load = time.perf_counter() - began
    engines: dict[str, tuple[Callable[[int], tuple[np.ndarray, np.ndarray]], float]] = {}

    def faiss_search(k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = index.search(queries, k)
        return top_k(rows, scores, k)

    engines[f"Faiss IndexFlatIP, CPU, {args.threads} threads"] = (faiss_search, faiss_load)
    devices = ([] if args.skip_cpu_torch else ["cpu"]) + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        began = time.perf_counter()
        searcher = TorchFlatSearch.from_arrays(vectors, args.shard_rows, [device])
        if device == "cuda":
            torch.cuda.synchronize()
        load = time.perf_counter() - began
        label = (
            f"torch, {torch.cuda.get_device_name()}"
            if device == "cuda"
            else f"torch, CPU, {args.threads} threads"
        )

        def torch_search(k: int, searcher: TorchFlatSearch = searcher) -> tuple[np.ndarray, np.ndarray]:
            return searcher.search(queries, k)  # host arrays back: the timing includes the device sync

        engines[label] = (torch_search, load)

    lines = [
        "# torch flat search vs Faiss flat",
        "",
        f"Command: `python benchmarks/torch_search.py {' '.join(sys.argv[1:])}`",
        "",
        f"{len(vectors):,} x {vectors.shape[1]} float16 vectors ({source}), {len(queries)} midpoint queries; "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; torch {torch.__version__}, faiss {faiss.__version__}. "
        f"{'A CUDA GPU was visible.' if torch.cuda.is_available() else 'CPU only: no GPU was visible.'} "
        f"Times: best of {args.repeats} (after one warm-up), results copied back to the host.",
        "",
        "| engine | k | load s | search s | queries/s | agreement with Faiss flat |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for k in args.k:
        reference = None
        for label, (search, load) in engines.items():
            search(k)  # warm-up
            result, seconds = best_of(args.repeats, lambda search=search, k=k: search(k))
            if reference is None:
                reference = result
                agree = "(reference)"
            else:
                agree = agreement(result, reference)
            lines.append(
                f"| {label} | {k} | {load:.3f} | {seconds:.4f} | {len(queries) / seconds:,.0f} | {agree} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
