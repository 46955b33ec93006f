"""Z-score normalisation of one query's scores: distance from the list's mean in standard deviations."""

from __future__ import annotations

import math

import numpy as np

SAFE_MAGNITUDE = 1e100
"""Scores up to this size square and sum without overflow; larger lists are scaled first."""


def zscore(scores: np.ndarray) -> np.ndarray:
    """``(score - mean) / std`` with the population standard deviation of the list (float64, in order).

    The sums are exact (``math.fsum``), so the result does not depend on the order of the list. A constant
    list (one hit, or all tied) has no spread; every document sits at the mean and gets 0.0 rather than a
    division by zero.
    """
    if not len(scores):
        return scores.astype(np.float64)
    largest = float(np.max(np.abs(scores)))
    if largest > SAFE_MAGNITUDE:  # squared deviations would overflow; z-scores do not change with scale
        scores = np.ldexp(scores.astype(np.float64), -math.frexp(largest)[1])  # a power of two: exact
    n = len(scores)
    mean = math.fsum(scores.tolist()) / n
    deviations = scores - mean
    std = math.sqrt(math.fsum((deviations * deviations).tolist()) / n)
    if std == 0.0:
        return np.zeros(n)
    return deviations / std
