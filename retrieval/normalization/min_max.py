"""Min-max normalisation of one query's scores to [0, 1], so lists on different scales can be summed."""

from __future__ import annotations

import numpy as np


def min_max(scores: np.ndarray) -> np.ndarray:
    """Map the list's lowest score to 0 and its highest to 1 (float64, in the list's order).

    A constant list (one hit, or all tied) has no spread to scale by; every document is then that system's
    best answer and gets 1.0, so a query with a single hit still gives that hit full credit in a fusion.
    """
    if not len(scores):
        return scores.astype(np.float64)
    low = scores.min()
    high = scores.max()
    if high == low:
        return np.ones(len(scores))
    if high / 2 - low / 2 > np.finfo(np.float64).max / 2:  # the range itself overflows: its halves fit
        return (scores / 2 - low / 2) / (high / 2 - low / 2)
    return (scores - low) / (high - low)
