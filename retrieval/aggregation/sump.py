"""SumP (Dai & Callan, 2019): a document scores as the sum of its passages' scores in the list.

Only passages present in the passage run count (the top depth of the first stage, or the passages that
were reranked), so a document with several strong passages rises above one with a single one. Meant for
non-negative scores (BM25, probabilities, RRF): with cosine scores below zero, more passages lower a
document. The sum is exact (``math.fsum``), so it does not depend on the order passages come in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lyre.retrieval.aggregation.grouping import by_document


def sump(passage_scores: Mapping[str, float]) -> dict[str, float]:
    """One query's ``DOCID#N -> score`` as ``DOCID -> sum of its passages' scores``."""
    return {
        docid: math.fsum(score for _, score in scores)
        for docid, scores in by_document(passage_scores).items()
    }
