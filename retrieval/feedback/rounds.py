"""The feedback round of each side: a first search, its top documents read, the second query made.

BM25 side (:func:`expanded_queries`): the first search takes the top ``prf_docs`` rows of each query (all
of its hits when it has fewer, none when it has none); their texts are read from the store the index was
built from (the docstore, or a passage index's passages) and analysed with the index's own analyzer, so
every feedback term is an index term; with the collection statistics of those terms (document frequency,
and collection frequency for the methods that read it) each query's :class:`FeedbackSet` goes to the
method. A query with no hit, or with no term the index knows, gets no feedback: the method then weighs
its own terms alone, and its second search finds what the first found (nothing, for the latter).

Dense side (:func:`moved_vectors`): the first search takes the top ``dense_prf_docs`` rows of each query
through the same index (flat, or IVF-PQ with the search's nprobe and refine), their stored vectors are
read from the embedding chunks, and the method moves the query vector.

A first search never asks for more rows than the index holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from lyre.formats.records import Query, document_text
from lyre.retrieval.feedback import FeedbackMethod
from lyre.retrieval.feedback.term_vectors import FeedbackDocument, FeedbackSet, TermVector
from lyre.retrieval.plan_parts import Bm25Searcher, DenseSearcher, DocumentStore


def feedback_sets(
    bm25: Bm25Searcher,
    store: DocumentStore,
    queries: Sequence[Query],
    documents: int,
    collection_frequency: bool,
) -> list[FeedbackSet]:
    """Each query's feedback: its analysed terms, its first ``documents`` hits (score and term counts), and
    the statistics of every term involved (see the module note)."""
    analyzer = bm25.analyzer
    rows, scores = bm25.search([query.text for query in queries], min(documents, bm25.num_docs))
    found = np.unique(rows[rows >= 0])
    texts = [document_text(document) for document in store.fetch(found)] if len(found) else []
    counts = {row: Counter(analyzer.analyze(text)) for row, text in zip(found.tolist(), texts, strict=True)}
    query_terms = [analyzer.analyze(query.text) for query in queries]
    terms = sorted({term for terms in (*counts.values(), *query_terms) for term in terms})
    ids = np.array([bm25.term_id(term) for term in terms], dtype=np.int64)
    known = [term for term, term_id in zip(terms, ids.tolist(), strict=True) if term_id >= 0]
    known_ids = ids[ids >= 0]
    document_frequency = dict(zip(known, bm25.document_frequencies(known_ids).tolist(), strict=True))
    frequencies = bm25.collection_frequencies(known_ids).tolist() if collection_frequency else []
    collection = dict(zip(known, frequencies, strict=True)) if collection_frequency else {}
    sets = []
    for query_rows, query_scores, analysed in zip(rows.tolist(), scores.tolist(), query_terms, strict=True):
        ranked = zip(query_rows, query_scores, strict=True)
        hits = [FeedbackDocument(score, counts[row]) for row, score in ranked if row >= 0]
        sets.append(FeedbackSet(analysed, hits, bm25.num_docs, document_frequency, collection))
    return sets


def expanded_queries(
    bm25: Bm25Searcher,
    store: DocumentStore,
    queries: Sequence[Query],
    method: FeedbackMethod,
    settings: Mapping[str, Any],
) -> dict[str, TermVector]:
    """Each query's expanded, weighted query (``{qid: {term: weight}}``, heaviest term first)."""
    sets = feedback_sets(bm25, store, queries, settings["prf_docs"], method.reads_collection_frequency)
    return {query.qid: method.apply(one, settings) for query, one in zip(queries, sets, strict=True)}


def moved_vectors(
    dense: DenseSearcher,
    vectors: np.ndarray,
    method: FeedbackMethod,
    settings: Mapping[str, Any],
    nprobe: int | None,
    refine: int | None,
) -> np.ndarray:
    """Each query's vector moved by ``method`` toward its first search's top documents (float32 [n, dim])."""
    if len(vectors) == 0:
        return vectors
    store = dense.store
    depth = min(settings[method.documents], store.spec.num_rows)
    rows, _ = dense.search(vectors, depth, nprobe=nprobe, refine=refine)
    documents = store.fetch(np.maximum(rows, 0).reshape(-1)).reshape(len(vectors), depth, -1)
    moved = [method.apply(vector, documents[i][rows[i] >= 0], settings) for i, vector in enumerate(vectors)]
    return np.stack(moved)
