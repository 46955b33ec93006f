"""A query's passage scores grouped by parent document: what every aggregation rule starts from."""

from __future__ import annotations

from collections.abc import Mapping

from lyre.indexes.passages import parse_passage_id

PassageScores = list[tuple[int, float]]
"""(passage number, score) pairs of one document, in no particular order."""


def by_document(passage_scores: Mapping[str, float]) -> dict[str, PassageScores]:
    """``DOCID#N -> score`` regrouped as ``DOCID -> [(N, score), ...]``; a non-passage id is a one-line
    error (a document index's run has nothing to aggregate)."""
    grouped: dict[str, PassageScores] = {}
    for identifier, score in passage_scores.items():
        docid, number = parse_passage_id(identifier)
        grouped.setdefault(docid, []).append((number, score))
    return grouped
