"""MaxP (Dai & Callan, 2019): a document scores as its best passage.

The default for a passage index: one relevant passage makes a relevant document, however much filler
surrounds it, which is what splitting is for.
"""

from __future__ import annotations

from collections.abc import Mapping

from lyre.retrieval.aggregation.grouping import by_document


def maxp(passage_scores: Mapping[str, float]) -> dict[str, float]:
    """One query's ``DOCID#N -> score`` as ``DOCID -> best passage score``."""
    return {docid: max(score for _, score in scores) for docid, scores in by_document(passage_scores).items()}
