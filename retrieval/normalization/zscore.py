"""Z-score normalisation of one query's scores: distance from the list's mean in standard deviations."""

from __future__ import annotations

import math

import numpy as np


def zscore(scores: np.ndarray) -> np.ndarray:
    """``(score - mean) / std`` with the population standard deviation of the list (float64, in order).

    The sums are exact (``math.fsum``), so the result does not depend on the order of the list. A constant
    list (one hit, or all tied) has no spread; every document sits at the mean and gets 0.0 rather than a
    division by zero.
    """
    if not len(scores):
        return scores.astype(np.float64)
    n = len(scores)
    mean = math.fsum(scores.tolist()) / n
    deviations = scores - mean
    std = math.sqrt(math.fsum((deviations * deviations).tolist()) / n)
    if std == 0.0:
        return np.zeros(n)
    return deviations / std
