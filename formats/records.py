"""Plain records passed between lyre's stages (ir_measures style: small NamedTuples, no behaviour)."""

from __future__ import annotations

from typing import NamedTuple


class Document(NamedTuple):
    """One corpus document as stored in the docstore; its row number there is its internal id."""

    docid: str
    title: str
    text: str


class Query(NamedTuple):
    qid: str
    text: str


class Qrel(NamedTuple):
    qid: str
    docid: str
    relevance: int


Run = dict[str, dict[str, float]]
"""A run in memory: qid -> docid -> score (the shape pytrec_eval, ranx and ir_measures share)."""


def document_text(doc: Document) -> str:
    """The text every model and BM25 sees: title + " " + text (BEIR/Anserini practice), no stray space."""
    if doc.title:
        return f"{doc.title} {doc.text}" if doc.text else doc.title
    return doc.text
