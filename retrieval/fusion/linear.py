"""Linear (CombSUM-style) fusion: a weighted sum of per-query normalised scores.

A document absent from a list contributes nothing from that list (its term is 0 after normalisation),
as in ranx's weighted sum. With ``min_max`` that is the bottom of the list's range; with ``zscore`` it
is the list's mean, so a document found by one system only can outrank one found by both but scored below
average by one of them — choose ``min_max`` (the default) when that matters.

Weights are finite, non-negative and not all zero (all zero would rank every document by its id alone),
and their sum is finite. A fused score beyond the float range (large weights times large scores with
``none``) is refused with one line, never written as ``inf``: no run file holds a score that ``lyre eval``
or ``lyre fuse`` would then refuse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.numbers import count
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
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, in one line
        for run, weight in enumerate(_weights(aligned.runs, weights)):
            found = aligned.present[run]
            if found.any():
                fused[found] += weight * normalize(aligned.scores[run, found])
    if not np.isfinite(fused).all():
        raise OptionError(
            "weights",
            ",".join(f"{weight:g}" for weight in _weights(aligned.runs, weights)),
            f"give fused scores beyond the float range ({normalization} normalisation); use smaller weights "
            "(weights summing to 1 rank the same)",
        )
    return fused


def check_weights(weights: Sequence[float], runs: int, text: str | None = None) -> None:
    """One finite, non-negative weight per run, not all zero, with a finite sum; ``text``: the weights as
    the user typed them, for the message."""
    shown = text if text is not None else ",".join(f"{weight:g}" for weight in weights)
    if len(weights) != runs:
        raise OptionError(
            "weights",
            shown,
            f"has {count(len(weights), 'values')} for {count(runs, 'runs')}; give one per run",
        )
    if any(not (math.isfinite(weight) and weight >= 0) for weight in weights):
        raise OptionError("weights", shown, "must not be negative (each a finite number >= 0)")
    if not any(weights):
        raise OptionError(
            "weights", shown, "are all zero, which ranks every document by its id alone; give one above 0"
        )
    if not math.isfinite(sum(weights)):
        raise OptionError("weights", shown, "sum beyond the float range; use smaller ones, e.g. summing to 1")


def parse_weights(text: str | None, runs: int) -> list[float] | None:
    """``--weights 0.3,0.7``: one weight per run, checked by :func:`check_weights` (None: equal weights)."""
    if text is None:
        return None
    try:
        weights = [float(value) for value in text.split(",")]
    except ValueError:
        raise OptionError("weights", text, "must be comma-separated numbers, e.g. 0.3,0.7") from None
    check_weights(weights, runs, text)
    return weights


def _weights(runs: int, weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0 / runs] * runs if runs else []
    if len(weights) != runs:
        raise LyreError(
            f"linear fusion got {count(len(weights), 'weights')} for {count(runs, 'runs')}; "
            "give one weight per run"
        )
    check_weights(weights, runs)
    return weights
