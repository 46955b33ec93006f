"""Tuning IVF-PQ's search at build time: the nprobe and exact-refine depth that reach a recall target,
measured as overlap with exact search on queries made from the stored vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
from lyre.basics import progress
from lyre.basics.numbers import measure
from lyre.indexes import faiss_params
from lyre.indexes.dense_search import DenseIndex, top_k
from lyre.indexes.embeddings import EmbeddingStore

DEFAULT_TUNE_QUERIES = 500
"""Tuning queries (midpoints of stored vectors): more give a steadier estimate and cost more searches."""
RECALL_DEPTH = 100
"""Recall is measured as overlap of the top-100 with exact search, the depth rerankers and R@100 see."""
NPROBE_MARGIN = 2
"""Tuned nprobe is this multiple of the one reaching the target on build-time queries (see :func:`tune`)."""


def overlap_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top rows that ``found`` also returns (recall vs exact search)."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def exact_search(store: EmbeddingStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over every stored vector, one chunk in memory at a time."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.full((len(queries), 0), -1, dtype=np.int64)
    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for chunk_rows, vectors in store.iter_chunks():
        chunk_scores = queries @ np.asarray(vectors, dtype=np.float32).T
        keep = min(k, chunk_scores.shape[1])
        part = np.argpartition(-chunk_scores, keep - 1, axis=1)[:, :keep]
        rows = np.concatenate([rows, chunk_rows[part]], axis=1)
        scores = np.concatenate([scores, np.take_along_axis(chunk_scores, part, axis=1)], axis=1)
        rows, scores = top_k(rows, scores, min(k, rows.shape[1]))
    return top_k(rows, scores, k)


def tune(
    searcher: DenseIndex,
    store: EmbeddingStore,
    *,
    target: float,
    nprobe: int | None,
    refine: int | None,
    queries: int,
    seed: int,
) -> dict[str, Any]:
    """Smallest refine depth, then smallest nprobe, whose overlap@100 with exact search reaches ``target``.

    Queries are built from stored vectors: the normalised midpoint of two random ones (seeded). A stored
    vector itself finds itself and sits inside its cluster, which overstates the recall real queries get
    (SciFact, MiniLM, nprobe 32 + refine 200: 0.962 for stored vectors, 0.946 for midpoints, 0.933 for
    the real test queries). A sweep stops when more probes stop helping (the PQ ceiling); a deeper exact
    re-scoring is tried next. Even midpoints overstate real queries on collections whose queries lie far
    from every document (NFCorpus: 0.988 vs 0.946 at nprobe 32 + refine 200), so the nprobe that reaches
    the target is multiplied by NPROBE_MARGIN (capped at nlist). Values given by the caller are measured,
    not tuned.
    """
    depth = min(RECALL_DEPTH, store.spec.num_rows)
    rng = np.random.default_rng(seed + 1)
    pairs = rng.integers(0, store.spec.num_rows, size=(2, queries))
    sample = store.fetch(pairs[0]) + store.fetch(pairs[1])
    sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    truth, _ = exact_search(store, sample, depth)
    nlist = searcher.params.nlist or 1
    probes = [nprobe] if nprobe is not None else faiss_params.nprobe_candidates(nlist)
    depths = (
        [refine] if refine is not None else [r for r in faiss_params.REFINE_DEPTHS if r == 0 or r > depth]
    )
    table: list[dict[str, Any]] = []
    for refine_depth in depths:
        previous = -1.0
        for probe in probes:
            found, _ = searcher.search(sample, depth, nprobe=probe, refine=refine_depth)
            recall = overlap_at(found, truth)
            table.append({"nprobe": probe, "refine": refine_depth, "recall": round(recall, 4)})
            if recall >= target:
                if nprobe is not None or probe >= nlist:
                    return {"nprobe": probe, "refine": refine_depth, "recall": recall, "tuning": table}
                safe = min(probe * NPROBE_MARGIN, nlist)
                found, _ = searcher.search(sample, depth, nprobe=safe, refine=refine_depth)
                recall = overlap_at(found, truth)
                table.append(
                    {"nprobe": safe, "refine": refine_depth, "recall": round(recall, 4), "margin": True}
                )
                return {
                    "nprobe": safe,
                    "nprobe_reached": probe,
                    "refine": refine_depth,
                    "recall": recall,
                    "tuning": table,
                }
            if recall - previous < 0.002:
                break
            previous = recall
    best = max(table, key=lambda row: row["recall"])
    progress.say(
        f"dense: recall target {target} not reached; using the best measured, overlap@{depth} "
        f"{measure(best['recall'])} at nprobe {best['nprobe']}, refine {best['refine']}"
    )
    return {"nprobe": best["nprobe"], "refine": best["refine"], "recall": best["recall"], "tuning": table}
