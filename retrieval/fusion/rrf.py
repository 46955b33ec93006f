"""Reciprocal rank fusion (Cormack et al., 2009): each list votes ``1 / (k + rank)`` for its documents.

Ranks are 1-based and taken in the order trec_eval evaluates a list (score desc, docid desc), so ties are
broken exactly as the evaluation would see them. A document absent from a list gets nothing from it (some
implementations credit absent documents with a rank past the end, or use 0-based ranks; both change the
fused order). A run with no entry for a query, or an empty list, simply casts no votes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.formats.records import Run
from lyre.retrieval.fusion.aligned import Aligned, evaluated_order, fuse_runs

DEFAULT_K = 60
"""The usual constant (Cormack et al.): late ranks still count, and no single list dominates."""
MAX_K = 1_000_000
"""Beyond this, 1 / (k + rank) no longer tells ranks apart in a long list (every vote is about 1 / k:
the fusion becomes a count of the lists that found a document), and a huge integer k cannot be added to
the rank arrays at all."""


def rrf(runs: Sequence[Run], k: float = DEFAULT_K) -> Run:
    """Fuse ``runs`` query by query; every query present in any run is in the result (maybe empty)."""
    _check_k(k)
    return fuse_runs(runs, lambda aligned: rrf_scores(aligned, k))


def rrf_scores(aligned: Aligned, k: float = DEFAULT_K) -> np.ndarray:
    """One query's fused scores (one per aligned document)."""
    _check_k(k)
    fused = np.zeros(len(aligned.docids))
    for run in range(aligned.runs):
        positions = np.flatnonzero(aligned.present[run])
        order = evaluated_order(aligned.scores[run, positions])  # positions ascend, as docids do
        ranks = np.empty(len(positions), dtype=np.int64)
        ranks[order] = np.arange(1, len(positions) + 1)
        fused[positions] += 1.0 / (float(k) + ranks)
    return fused


def _check_k(k: float) -> None:
    if not 0 <= k <= MAX_K:
        raise LyreError(
            f"RRF k must be between 0 and {count(MAX_K)} (got {k}); the usual value is {DEFAULT_K}"
        )
