"""Searching a BM25 index: queries analysed like the documents, scored from the memory-mapped postings.

The folder's files are read and checked by :mod:`indexes.bm25_format`; this module scores. A query's
score vector is the sum of its terms' columns (a repeated query term counts twice, as in Anserini and
rank_bm25). A weighted query (term -> weight, the expanded queries of pseudo-relevance feedback,
:mod:`retrieval.feedback`) scores ``sum(weight * column)``: Lucene's ``BoostQuery`` of each term in one
``BooleanQuery``, which is how Anserini and Terrier run their expanded queries, so the same BM25 scores
the original and the expanded query.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.errors import LyreError, opt
from lyre.basics.progress import bar, say
from lyre.indexes.analyzer import Analyzer, current_versions
from lyre.indexes.bm25_format import Bm25Folder, Bm25Record, read_bm25_folder
from lyre.indexes.manifest import Manifest

WeightedQuery = Mapping[str, float]
"""Index terms (already analysed) and the weight of each."""
Scorer = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""Query ``i`` -> (rows, scores) of its hits."""


class BM25Index:
    """A saved BM25 index, memory-mapped; queries are analysed with the analyzer saved beside it."""

    def __init__(self, folder: Bm25Folder) -> None:
        self.directory = folder.directory
        self.analyzer = folder.analyzer
        self.record: Bm25Record = folder.record
        self.num_docs = folder.record.documents
        self._vocab = folder.vocab
        self._data = folder.data
        self._indices = folder.indices
        self._indptr = folder.indptr
        self._nonoccurrence = folder.nonoccurrence
        self._frequencies = folder.frequencies

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        analyzer: Analyzer | None = None,
        k1: float | None = None,
        b: float | None = None,
        method: str | None = None,
        manifest: Manifest | None = None,
    ) -> BM25Index:
        """Open ``directory``. Passing analyzer/k1/b/method is allowed only if they equal the saved ones:
        scores are precomputed at build time, so a different value would silently not apply. ``manifest``:
        the index's, when the caller has read it (the files are checked against its records)."""
        directory = Path(directory)
        folder = read_bm25_folder(directory, manifest)
        record, saved = folder.record, folder.analyzer
        for name, asked, built in (
            ("k1", k1, record.k1),
            ("b", b, record.b),
            ("bm25_method", method, record.method),
        ):
            if asked is not None and asked != built:
                raise LyreError(
                    f"{directory}: the BM25 index was built with {opt(name)} {built!r}, not {asked!r}; "
                    f"scores are fixed at build time, so rebuild it with `lyre index` and {opt(name)} {asked}"
                )
        if analyzer is not None and analyzer != saved:
            raise LyreError(
                f"{directory}: queries must use the analyzer the index was built with ({saved}); "
                "rebuild the index to change it"
            )
        installed = current_versions()
        changed = {n: (v, installed[n]) for n, v in saved.versions.items() if installed.get(n) != v}
        if changed:
            say(
                f"warning: {directory} was built with {changed} (saved, installed); terms may differ slightly"
            )
        return cls(folder)

    def term_id(self, term: str) -> int:
        """The id of an index term, or -1 for a term the index does not hold."""
        return self._vocab.get(term, -1)

    def query_term_ids(self, text: str) -> np.ndarray:
        """Term ids of a query, in order, without words unknown to the index."""
        ids = [self._vocab.get(term, -1) for term in self.analyzer.analyze(text)]
        return np.array([i for i in ids if i >= 0], dtype=np.int64)

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        """How many documents hold each term (its postings)."""
        term_ids = np.asarray(term_ids, dtype=np.int64)
        return self._indptr[term_ids + 1] - self._indptr[term_ids]

    def collection_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        """Each term's occurrences in the whole collection; a format-1 index (built before lyre kept
        them) is one line saying how to rebuild it."""
        if self._frequencies is None:
            raise LyreError(
                f"{self.directory}: this BM25 index was built before lyre kept collection term frequencies, "
                "which Bo1 feedback needs; rebuild it with `lyre index CORPUS --out INDEX` (only BM25 is "
                "rebuilt), or use rm3 or rocchio"
            )
        return self._frequencies[np.asarray(term_ids, dtype=np.int64)]

    def scores_of(self, term_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, float64 scores) of the documents matching at least one term, rows ascending."""
        if len(term_ids) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        rows, weights = self._postings(term_ids)
        totals = np.bincount(rows, weights=weights, minlength=self.num_docs)
        hits = np.flatnonzero(totals > 0)
        scores = np.asarray(totals[hits], dtype=np.float64)
        if self._nonoccurrence is not None:
            scores += float(self._nonoccurrence[term_ids].sum(dtype=np.float64))
        return hits, scores

    def weighted_scores(self, query: WeightedQuery) -> tuple[np.ndarray, np.ndarray]:
        """(rows, float64 scores) of a weighted query: each term's column times its weight, summed (terms
        the index does not hold are skipped); the documents matching at least one term, rows ascending."""
        known = [(self._vocab[term], weight) for term, weight in query.items() if term in self._vocab]
        if not known:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        term_ids = np.array([term for term, _ in known], dtype=np.int64)
        term_weights = np.array([weight for _, weight in known], dtype=np.float64)
        rows, scores = self._postings(term_ids, term_weights)
        totals = np.bincount(rows, weights=scores, minlength=self.num_docs)
        hits = np.flatnonzero(totals > 0)
        found = np.asarray(totals[hits], dtype=np.float64)
        if self._nonoccurrence is not None:
            found += float(np.dot(self._nonoccurrence[term_ids].astype(np.float64), term_weights))
        return hits, found

    def _postings(self, term_ids: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """The rows and scores of every posting of ``term_ids`` (each term's scores times its weight)."""
        starts, ends = self._indptr[term_ids], self._indptr[term_ids + 1]
        spans = list(zip(starts, ends, strict=True))
        rows = np.concatenate([self._indices[s:e] for s, e in spans])
        if weights is None:
            return rows, np.concatenate([self._data[s:e] for s, e in spans])
        scaled = [self._data[s:e] * np.float64(w) for (s, e), w in zip(spans, weights.tolist(), strict=True)]
        return rows, np.concatenate(scaled)

    def search(self, query_texts: Sequence[str], k: int, n_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and scores per query: (int64 [nq, k], float32 [nq, k]).

        Only documents containing a query term are hits; the rest of a row is filled with row -1 and
        score 0 (an all-stopword or out-of-vocabulary query has no hits). ``n_threads``: 0 = all cores.
        One thread is the default because it was the fastest measured (SciFact 7,018 vs 4,664 queries/s with
        2 threads, NFCorpus 17,524 vs 10,154, 1M documents 170 vs 149): the numpy kernels are short and
        mostly hold the GIL, so threads add overhead.
        """
        return self._search(
            len(query_texts), lambda i: self.scores_of(self.query_term_ids(query_texts[i])), k, n_threads
        )

    def search_weighted(
        self, queries: Sequence[WeightedQuery], k: int, n_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and scores of weighted queries (:meth:`weighted_scores`), as :meth:`search`."""
        return self._search(len(queries), lambda i: self.weighted_scores(queries[i]), k, n_threads)

    def _search(self, count: int, score: Scorer, k: int, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and scores of ``count`` queries, query ``i`` scored by ``score(i)``."""
        if k < 1:
            raise LyreError(f"k must be at least 1 (got {k})")
        rows = np.full((count, k), -1, dtype=np.int64)
        scores = np.zeros((count, k), dtype=np.float32)
        workers = n_threads if n_threads > 0 else (os.cpu_count() or 1)

        def fill(i: int) -> None:
            hit_rows, hit_scores = top_hits(*score(i), k)
            rows[i, : len(hit_rows)] = hit_rows
            scores[i, : len(hit_rows)] = hit_scores

        with bar(count, "bm25 search", unit="query") as progress:
            if workers == 1:
                for i in range(count):
                    fill(i)
                    progress.update()
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for _ in pool.map(fill, range(count), chunksize=16):
                        progress.update()
        return rows, scores


def top_hits(hits: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of one query's hits, score descending then row ascending: a reproducible order."""
    if len(hits) > k:
        keep = np.sort(np.argpartition(-scores, k - 1)[:k])
        hits, scores = hits[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return hits[order], scores[order]
