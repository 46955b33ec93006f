"""Linear (CombSUM-style) fusion: a weighted sum of per-query normalised scores.

A document absent from a list contributes nothing from that list (its term is 0 after normalisation),
as in ranx's weighted sum. With ``min_max`` that is the bottom of the list's range; with ``zscore`` it
is the list's mean, so a document found by one system only can outrank one found by both but scored below
average by one of them — choose ``min_max`` (the default) when that matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from lyre.basics.errors import LyreError
from lyre.formats.records import Run
from lyre.retrieval.fusion.aligned import Aligned, fuse_runs
from lyre.retrieval.normalization import normalizer

DEFAULT_NORMALIZATION = "min_max"
"""Absent documents then sit at the bottom of a list's range (see the module note on ``zscore``)."""


def linear(
    runs: Sequence[Run], weights: Sequence[float] | None = None, normalization: str = DEFAULT_NORMALIZATION
) -> Run:
    """Fuse ``runs`` as ``sum_i weights[i] * norm(run_i)[qid][docid]``; weights default to equal (sum 1)."""
    weights = _weights(len(runs), weights)
    normalizer(normalization)  # an unknown name fails before any query
    return fuse_runs(runs, lambda aligned: linear_scores(aligned, weights, normalization))


def linear_scores(
    aligned: Aligned, weights: Sequence[float] | None = None, normalization: str = DEFAULT_NORMALIZATION
) -> np.ndarray:
    """One query's fused scores (one per aligned document): each run's list normalised on its own."""
    normalize = normalizer(normalization)
    fused = np.zeros(len(aligned.docids))
    for run, weight in enumerate(_weights(aligned.runs, weights)):
        found = aligned.present[run]
        if found.any():
            fused[found] += weight * normalize(aligned.scores[run, found])
    return fused


def _weights(runs: int, weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0 / runs] * runs if runs else []
    if len(weights) != runs:
        raise LyreError(f"linear fusion got {len(weights)} weights for {runs} runs; give one weight per run")
    return weights
