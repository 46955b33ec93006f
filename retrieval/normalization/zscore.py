"""Z-score normalisation of one query's scores: distance from the list's mean in standard deviations."""

from __future__ import annotations

import math


def zscore(doc_scores: dict[str, float]) -> dict[str, float]:
    """``(score - mean) / std`` with the population standard deviation of the list.

    A constant list (one hit, or all tied) has no spread; every document sits at the mean and gets 0.0
    rather than a division by zero.
    """
    if not doc_scores:
        return {}
    n = len(doc_scores)
    mean = math.fsum(doc_scores.values()) / n
    std = math.sqrt(math.fsum((score - mean) ** 2 for score in doc_scores.values()) / n)
    if std == 0.0:
        return dict.fromkeys(doc_scores, 0.0)
    return {docid: (score - mean) / std for docid, score in doc_scores.items()}
