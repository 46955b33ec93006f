"""Rocchio: the query vector moved toward the mean of the feedback documents' vectors.

Rocchio (1971), in the form of Manning, Raghavan and Schütze's *Introduction to Information Retrieval*
(section 9.1.1): ``q' = alpha * q + beta * mean(relevant documents)`` (the ``- gamma * mean(non-relevant)``
term is off by default in Anserini, ``-rocchio.useNegative``, and not offered here). lyre follows Anserini's
``RocchioReranker`` step by step:

1. the query vector ``q``: each analysed query term's count, scaled to unit L2 norm;
2. each feedback document (the first ``docs`` of the first stage) as a vector of its terms' frequencies,
   keeping only terms of 2 to 20 characters held by at most 10% of the collection's documents, each
   document scaled to unit L2 norm (a document whose norm is not above 0.001 adds nothing but still
   counts in the mean);
3. their mean, pruned to its ``terms`` heaviest terms and scaled to unit L2 norm;
4. the expanded query ``alpha * q + beta * mean``, terms of positive weight (``alpha``: the ``weight``
   setting; ``beta``: ``rocchio_beta``).

Anserini's defaults (``-rocchio.topFbDocs 10 -rocchio.topFbTerms 10 -rocchio.alpha 1 -rocchio.beta 0.75``,
the textbook's values) are lyre's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lyre.retrieval.feedback.term_vectors import (
    FeedbackSet,
    TermVector,
    combined,
    l2_norm,
    ranked,
    scaled,
    top,
)

SHORTEST, LONGEST = 2, 20
"""Anserini's feedback terms are 2 to 20 characters long."""
COMMON_SHARE = 0.1
"""A term held by more than this share of the collection's documents is no feedback term (Anserini)."""
EMPTY_NORM = 0.001
"""A document whose vector's L2 norm is not above this adds nothing (Anserini)."""


def feedback_terms(feedback: FeedbackSet) -> set[str]:
    """The terms of the feedback documents Rocchio may weigh (step 2's cut), each checked once."""
    seen = {term for document in feedback.feedback for term in document.terms}
    return {
        term for term in seen if SHORTEST <= len(term) <= LONGEST and not feedback.common(term, COMMON_SHARE)
    }


def mean_document(feedback: FeedbackSet, terms: int) -> TermVector:
    """Steps 2 and 3: the feedback documents' mean unit vector, ``terms`` terms, unit L2 norm."""
    usable = feedback_terms(feedback)
    total: TermVector = {}
    for document in feedback.feedback:
        vector = {term: float(count) for term, count in document.terms.items() if term in usable}
        norm = l2_norm(vector)
        if norm <= EMPTY_NORM:
            continue
        for term, count in vector.items():
            total[term] = total.get(term, 0.0) + count / norm
    mean = {term: weight / len(feedback.feedback) for term, weight in total.items()}
    pruned = top(mean, terms)
    return scaled(pruned, l2_norm(pruned))


def expand(feedback: FeedbackSet, settings: Mapping[str, Any]) -> TermVector:
    """The expanded query (step 4), heaviest term first."""
    query = feedback.query_counts()
    query = scaled(query, l2_norm(query))
    mean = mean_document(feedback, settings["prf_terms"])
    moved = combined([(settings["prf_weight"], query), (settings["rocchio_beta"], mean)])
    return ranked({term: weight for term, weight in moved.items() if weight > 0})
