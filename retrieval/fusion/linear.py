"""Linear (CombSUM-style) fusion: a weighted sum of per-query normalised scores.

A document absent from a list contributes nothing from that list (its term is 0 after normalisation),
as in ranx's weighted sum. With ``min_max`` that is the bottom of the list's range; with ``zscore`` it
is the list's mean, so a document found by one system only can outrank one found by both but scored below
average by one of them — choose ``min_max`` (the default) when that matters.
"""

from __future__ import annotations

from collections.abc import Sequence

from basics.errors import LyreError
from formats.records import Run
from retrieval.normalization import normalize_run

DEFAULT_NORMALIZATION = "min_max"
"""Absent documents then sit at the bottom of a list's range (see the module note on ``zscore``)."""


def linear(
    runs: Sequence[Run], weights: Sequence[float] | None = None, normalization: str = DEFAULT_NORMALIZATION
) -> Run:
    """Fuse ``runs`` as ``sum_i weights[i] * norm(run_i)[qid][docid]``; weights default to equal (sum 1)."""
    if weights is None:
        weights = [1.0 / len(runs)] * len(runs) if runs else []
    if len(weights) != len(runs):
        raise LyreError(
            f"linear fusion got {len(weights)} weights for {len(runs)} runs; give one weight per run"
        )
    fused: Run = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, doc_scores in normalize_run(run, normalization).items():
            sums = fused.setdefault(qid, {})
            for docid, score in doc_scores.items():
                sums[docid] = sums.get(docid, 0.0) + weight * score
    return fused
