"""Bo1: Bose-Einstein term weighting of the feedback documents (Divergence From Randomness).

Amati (PhD thesis, 2003; Amati and van Rijsbergen, TOIS 2002) weighs a term of the feedback documents by
how far its frequency there departs from what its collection frequency predicts:

    w(t) = tf_x * log2((1 + P) / P) + log2(1 + P),   P = F / N

``tf_x``: the term's occurrences in the feedback documents together, ``F``: in the whole collection, ``N``:
the collection's documents. lyre follows Terrier's ``QueryExpansion`` with ``DFRBagExpansionTerms`` and
its default parameter-free Bo1, step by step:

1. with two feedback documents or more, a term held by fewer than two of them gets weight 0, unless it is a
   query term (Terrier's ``expansion.mindocuments``);
2. every weight divided by the parameter-free normaliser ``tf_m * log2((1 + f) / f) + log2(1 + f)``,
   ``f = tf_m / N``, ``tf_m`` the feedback frequency of the heaviest term;
3. the ``max(terms, distinct query terms)`` heaviest terms kept;
4. the expanded query: each query term's count divided by the largest count, times ``weight``, plus the
   kept terms' normalised weights (Terrier adds them to the query's term weights).

Terrier's defaults (``expansion.documents 3``, ``expansion.terms 10``, PyTerrier's ``Bo1QueryExpansion``
``fb_docs=3, fb_terms=10``) are lyre's; ``weight`` 1 keeps the query's weights as Terrier does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lyre.retrieval.feedback.term_vectors import FeedbackSet, TermVector, combined, ranked, top

MIN_DOCUMENTS = 2
"""Terrier's ``expansion.mindocuments``: feedback documents a new term must occur in."""


def bose_einstein(within: float, frequency: float, documents: int) -> float:
    """Bo1's weight of a term seen ``within`` times in the feedback documents and ``frequency`` times in
    a collection of ``documents`` documents."""
    p = frequency / documents
    return within * math.log2((1 + p) / p) + math.log2(1 + p)


def term_weights(feedback: FeedbackSet) -> TermVector:
    """Steps 1 and 2: every feedback term's normalised Bo1 weight (terms the collection does not count
    are left out: they cannot be searched)."""
    within: dict[str, int] = {}
    holding: dict[str, int] = {}
    for document in feedback.feedback:
        for term, count in document.terms.items():
            within[term] = within.get(term, 0) + count
            holding[term] = holding.get(term, 0) + 1
    minimum = MIN_DOCUMENTS if len(feedback.feedback) >= MIN_DOCUMENTS else 0
    query = set(feedback.query)
    weights: TermVector = {}
    for term, count in within.items():
        frequency = feedback.collection_frequency.get(term, 0)
        if frequency == 0:
            continue
        rare = holding[term] < minimum and term not in query
        weights[term] = 0.0 if rare else bose_einstein(count, frequency, feedback.documents)
    if not weights:
        return {}
    heaviest = next(iter(ranked(weights)))
    normaliser = bose_einstein(within[heaviest], within[heaviest], feedback.documents)
    return {term: weight / normaliser for term, weight in weights.items()}


def expand(feedback: FeedbackSet, settings: Mapping[str, Any]) -> TermVector:
    """The expanded query (steps 3 and 4), heaviest term first."""
    query = feedback.query_counts()
    largest = max(query.values(), default=1.0)
    query = {term: count / largest for term, count in query.items()}
    kept = top(term_weights(feedback), max(settings["prf_terms"], len(query)))
    return ranked(combined([(settings["prf_weight"], query), (1.0, kept)]))
