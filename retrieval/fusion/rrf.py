"""Reciprocal rank fusion (Cormack et al., 2009): each list votes ``1 / (k + rank)`` for its documents.

Ranks are 1-based and taken in the order trec_eval evaluates a list (score desc, docid desc), so ties are
broken exactly as the evaluation would see them. A document absent from a list gets nothing from it (some
implementations credit absent documents with a rank past the end, or use 0-based ranks; both change the
fused order). A run with no entry for a query, or an empty list, simply casts no votes.
"""

from __future__ import annotations

from collections.abc import Sequence

from basics.errors import LyreError
from formats.records import Run
from formats.runs import rank_order

DEFAULT_K = 60
"""The usual constant (Cormack et al.): late ranks still count, and no single list dominates."""


def rrf(runs: Sequence[Run], k: float = DEFAULT_K) -> Run:
    """Fuse ``runs`` query by query; every query present in any run is in the result (maybe empty)."""
    if k < 0:
        raise LyreError(f"RRF k must be >= 0 (got {k}); the usual value is {DEFAULT_K}")
    fused: Run = {}
    for run in runs:
        for qid, doc_scores in run.items():
            votes = fused.setdefault(qid, {})
            for rank, (docid, _) in enumerate(rank_order(doc_scores), start=1):
                votes[docid] = votes.get(docid, 0.0) + 1.0 / (k + rank)
    return fused
