"""Min-max normalisation of one query's scores to [0, 1], so lists on different scales can be summed."""

from __future__ import annotations


def min_max(doc_scores: dict[str, float]) -> dict[str, float]:
    """Map the list's lowest score to 0 and its highest to 1.

    A constant list (one hit, or all tied) has no spread to scale by; every document is then that system's
    best answer and gets 1.0, so a query with a single hit still gives that hit full credit in a fusion.
    """
    if not doc_scores:
        return {}
    low = min(doc_scores.values())
    high = max(doc_scores.values())
    if high == low:
        return dict.fromkeys(doc_scores, 1.0)
    span = high - low
    return {docid: (score - low) / span for docid, score in doc_scores.items()}
