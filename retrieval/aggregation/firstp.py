"""FirstP (Dai & Callan, 2019): a document scores as its first passage.

In the literature the document is represented by its first passage only. A first stage over a passage
index does not always retrieve passage 0 of a document it retrieved; then the document scores as the
lowest-numbered passage that was retrieved, its earliest passage in the candidates. The alternative,
dropping the document, would make first-stage depth count fewer documents than asked and lose documents
whose opening was merely outranked by their own later passages; with passage 0 present (always the case
when a document's passages are all scored, as in reranking) both readings agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from lyre.retrieval.aggregation.grouping import by_document


def firstp(passage_scores: Mapping[str, float]) -> dict[str, float]:
    """One query's ``DOCID#N -> score`` as ``DOCID -> score of its lowest-numbered passage present``."""
    return {docid: min(scores)[1] for docid, scores in by_document(passage_scores).items()}
