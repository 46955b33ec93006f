"""What a BM25-side feedback method reads, and the term-vector arithmetic the published methods share.

A :class:`FeedbackSet` is one query's feedback: its analysed terms, its first-stage documents (best first,
each with its score and its terms' frequencies, analysed with the index's own analyzer so stems match the
index), and the collection statistics of those terms. The methods (:mod:`retrieval.feedback.rm3`,
``rocchio``, ``bo1``) are pure functions of it, so each can be checked against its published formula on a
hand-made set.

Term vectors are plain ``{term: weight}`` dicts. Where a method keeps the top ``n`` terms, ties are broken
by the term itself (Anserini's ``FeatureVector.pruneToSize`` and Terrier's sort leave them to hash order),
so an expansion is the same in every process.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TermVector = dict[str, float]


@dataclass(frozen=True)
class FeedbackDocument:
    """One feedback document: its first-stage score and how often each of its index terms occurs in it."""

    score: float
    terms: Mapping[str, int]


@dataclass(frozen=True)
class FeedbackSet:
    """One query's feedback (see the module note). ``document_frequency`` and ``collection_frequency``
    cover every term of the query and of the documents (``collection_frequency`` is empty when the method
    does not read it); ``documents`` counts the collection."""

    query: Sequence[str]
    feedback: Sequence[FeedbackDocument]
    documents: int
    document_frequency: Mapping[str, int]
    collection_frequency: Mapping[str, int]

    def query_counts(self) -> TermVector:
        """The query's terms and how often each occurs, in first-occurrence order."""
        return {term: float(count) for term, count in Counter(self.query).items()}

    def common(self, term: str, share: float) -> bool:
        """Whether ``term`` occurs in more than ``share`` of the collection's documents (Anserini's cut of
        collection-wide stopwords from feedback terms)."""
        return self.document_frequency.get(term, 0) / self.documents > share


def ranked(vector: Mapping[str, float]) -> TermVector:
    """The vector in its reading order: weight descending, then term ascending."""
    return dict(sorted(vector.items(), key=lambda item: (-item[1], item[0])))


def top(vector: Mapping[str, float], count: int) -> TermVector:
    """The ``count`` heaviest terms (ties by term), in :func:`ranked` order."""
    return dict(list(ranked(vector).items())[:count])


def l1_norm(vector: Mapping[str, float]) -> float:
    return sum(abs(weight) for weight in vector.values())


def l2_norm(vector: Mapping[str, float]) -> float:
    return math.sqrt(sum(weight * weight for weight in vector.values()))


def scaled(vector: Mapping[str, float], norm: float) -> TermVector:
    """``vector`` divided by ``norm`` (an all-zero or empty vector stays as it is)."""
    return {term: weight / norm for term, weight in vector.items()} if norm > 0 else dict(vector)


def combined(parts: Sequence[tuple[float, Mapping[str, float]]]) -> TermVector:
    """``sum(weight * vector)`` over ``parts``, each term once (first-seen order), terms of weight 0 left
    out: they would change no score."""
    total: TermVector = {}
    for weight, vector in parts:
        for term, value in vector.items():
            total[term] = total.get(term, 0.0) + weight * value
    return {term: value for term, value in total.items() if value != 0}
