"""Rerank splice: put the reranked head on top of the first-stage list and keep the untouched tail below.

Reranking only the top K leaves documents K+1.. with first-stage scores on another scale; written as is,
trec_eval would interleave them with the reranked head. The tail therefore gets new scores strictly below
the lowest reranked score, strictly decreasing in first-stage order: ``lowest - (i + 1)`` for the i-th
tail document. Unit steps are exact in floating point and survive any printed precision, so the run's
deep metrics (R@1000) are the first stage's and its top (nDCG@10) is the reranker's.
"""

from __future__ import annotations

from lyre.formats.runs import rank_order


def splice(first_stage: list[tuple[str, float]], reranked: dict[str, float]) -> list[tuple[str, float]]:
    """Return the reranked documents in evaluated order, then the rest of ``first_stage`` in its order.

    ``first_stage`` is one query's list in ranked order (as ``rank_order`` gives it); ``reranked`` maps the
    docids of its top K to reranker scores. With nothing reranked the first stage is returned unchanged.
    """
    if not reranked:
        return list(first_stage)
    head = rank_order(reranked)
    lowest = head[-1][1]
    tail = [docid for docid, _ in first_stage if docid not in reranked]
    return head + [(docid, lowest - (i + 1)) for i, docid in enumerate(tail)]
