"""RM3: a relevance model estimated from the feedback documents, interpolated with the query.

Lavrenko and Croft (SIGIR 2001) estimate P(t|R) from the top documents; Abdul-Jaleel et al. (TREC 2004)
interpolate it with the query (RM3). lyre follows Anserini's ``Rm3Reranker`` (Lin et al.), which produced
the published BM25+RM3 regressions, step by step:

1. the query vector ``q``: each analysed query term's count, scaled to unit L1 norm;
2. each feedback document ``d`` (the first ``docs`` of the first stage) as a vector of its terms'
   frequencies, keeping only terms of 2 to 20 characters matching ``[a-z0-9]+`` and held by at most 10% of
   the collection's documents (Anserini's stopword cut), then pruned to its ``terms`` most frequent terms;
3. the relevance model ``rm(t) = sum_d tf(t, d) / |d| * score(d)`` over the documents with ``|d|`` (the
   pruned vector's L1 norm) above 0.001, ``score(d)`` the document's first-stage BM25 score;
4. ``rm`` pruned to its ``terms`` heaviest terms and scaled to unit L1 norm;
5. the expanded query ``weight * q + (1 - weight) * rm`` (``weight``: Anserini's originalQueryWeight).

Anserini's defaults (``-rm3.fbDocs 10 -rm3.fbTerms 10 -rm3.originalQueryWeight 0.5``) are lyre's. The
``[a-z0-9]+`` filter is Anserini's English one: on an index of another script RM3 finds no expansion term
(rocchio and bo1 have no such filter).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lyre.retrieval.feedback.term_vectors import (
    FeedbackSet,
    TermVector,
    combined,
    l1_norm,
    ranked,
    scaled,
    top,
)

TERM = re.compile(r"[a-z0-9]{2,20}")
"""Anserini's feedback terms: 2 to 20 characters, lowercase ASCII letters and digits."""
COMMON_SHARE = 0.1
"""A term held by more than this share of the collection's documents is no feedback term (Anserini)."""
EMPTY_NORM = 0.001
"""Anserini skips a feedback document whose pruned vector's L1 norm is not above this."""


def feedback_terms(feedback: FeedbackSet) -> set[str]:
    """The terms of the feedback documents RM3 may weigh (step 2's cut), each checked once."""
    seen = {term for document in feedback.feedback for term in document.terms}
    return {term for term in seen if TERM.fullmatch(term) and not feedback.common(term, COMMON_SHARE)}


def relevance_model(feedback: FeedbackSet, terms: int) -> TermVector:
    """Steps 2 to 4: the relevance model of the feedback documents, ``terms`` terms, unit L1 norm."""
    usable = feedback_terms(feedback)
    model: TermVector = {}
    for document in feedback.feedback:
        vector = top({term: float(count) for term, count in document.terms.items() if term in usable}, terms)
        norm = l1_norm(vector)
        if norm <= EMPTY_NORM:
            continue
        for term, count in vector.items():
            model[term] = model.get(term, 0.0) + count / norm * document.score
    pruned = top(model, terms)
    return scaled(pruned, l1_norm(pruned))


def expand(feedback: FeedbackSet, settings: Mapping[str, Any]) -> TermVector:
    """The expanded query (step 5), heaviest term first."""
    query = feedback.query_counts()
    query = scaled(query, l1_norm(query))
    weight = settings["prf_weight"]
    model = relevance_model(feedback, settings["prf_terms"])
    return ranked(combined([(weight, query), (1.0 - weight, model)]))
