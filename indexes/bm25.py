"""The BM25 index: built from the streamed docstore, saved in bm25s' format, searched memory-mapped.

Why not ``bm25s.BM25.index``: it wants every document's token list in memory at once (and copies it
into id lists), which is what breaks peers on large corpora. Here each docstore batch is analysed into
term ids against a growing vocabulary and reduced at once to compact numpy arrays (term id, tf per
distinct term of each document). After the stream, document frequencies give bm25s' idf, bm25s' own
term-frequency functions give the per-posting scores, and a counting sort per batch writes the
column-major (CSC) score matrix straight into memory-mapped ``.npy`` files in bm25s' layout. The index
folder is written under a temporary name and renamed when complete.

Search reads those files with ``bm25s.BM25.load(mmap=True)``; a query's score vector is the sum of its
terms' columns (a repeated query term counts twice, as in Anserini and rank_bm25).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from basics.atomic import replace_dir, write_json_atomic
from basics.errors import LyreError
from basics.progress import bar, say
from formats.records import Document, document_text
from indexes.analyzer import Analyzer, current_versions

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
"""BM25 variants (Kamphuis et al., ECIR 2020), as implemented by bm25s' scoring functions."""

DATA_NAME = "data.csc.index.npy"
INDICES_NAME = "indices.csc.index.npy"
INDPTR_NAME = "indptr.csc.index.npy"
VOCAB_NAME = "vocab.index.json"
PARAMS_NAME = "params.index.json"
NONOCCURRENCE_NAME = "nonoccurrence_array.index.npy"
ANALYZER_NAME = "analyzer.json"
RECORD_NAME = "bm25.json"


class DocBatches(Protocol):
    """What the builder needs from the docstore: its length and batches in row order."""

    def __len__(self) -> int: ...

    def iter_batches(self, batch_size: int) -> Iterator[tuple[int, list[Document]]]: ...


@dataclass
class _Postings:
    """One batch reduced to distinct (document, term) pairs, documents in row order."""

    terms: np.ndarray  # int32, term id per posting
    tfs: np.ndarray  # int32, term frequency per posting
    postings_per_doc: np.ndarray  # int64, distinct terms of each document
    doc_lengths: np.ndarray  # int64, terms (stopwords excluded) of each document


class _TermIds:
    """Surface word -> term id, with the vocabulary growing in first-seen order.

    The word cache makes analysis of a batch one regex pass plus dict lookups: each distinct word is
    stopped and stemmed once for the whole corpus.
    """

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.vocab: dict[str, int] = {}
        self._word_ids: dict[str, int] = {}

    def batch(self, texts: Sequence[str]) -> _Postings:
        words = [self.analyzer.words(text) for text in texts]
        flat = list(chain.from_iterable(words))
        for word in set(flat).difference(self._word_ids):
            term = self.analyzer.term(word)
            self._word_ids[word] = -1 if term is None else self.vocab.setdefault(term, len(self.vocab))
        ids = np.fromiter(map(self._word_ids.__getitem__, flat), dtype=np.int64, count=len(flat))
        docs = np.repeat(np.arange(len(texts), dtype=np.int64), [len(w) for w in words])
        kept = ids >= 0
        ids, docs = ids[kept], docs[kept]
        width = max(len(self.vocab), 1)
        pairs, tfs = np.unique(docs * width + ids, return_counts=True)
        return _Postings(
            terms=(pairs % width).astype(np.int32),
            tfs=tfs.astype(np.int32),
            postings_per_doc=np.bincount(pairs // width, minlength=len(texts)),
            doc_lengths=np.bincount(docs, minlength=len(texts)),
        )


def _check_params(k1: float, b: float, method: str, delta: float) -> None:
    if method not in METHODS:
        raise LyreError(f"unknown BM25 method {method!r}; use one of {', '.join(METHODS)}")
    if k1 < 0 or not 0 <= b <= 1 or delta < 0:
        raise LyreError(f"BM25 needs k1 >= 0, 0 <= b <= 1 and delta >= 0 (got k1={k1}, b={b}, delta={delta})")


def build_bm25(
    store: DocBatches,
    out_dir: str | Path,
    *,
    analyzer: Analyzer | None = None,
    k1: float = 0.9,
    b: float = 0.4,
    method: str = "lucene",
    delta: float = 0.5,
    batch_size: int = 10_000,
) -> dict[str, Any]:
    """Index ``title + " " + text`` of every docstore row into ``out_dir``; return the build record.

    Defaults are Anserini's (k1=0.9, b=0.4, Lucene idf and tf). ``delta`` only matters for bm25l/bm25+.
    Document i of the index is docstore row i.
    """
    from bm25s import scoring

    from basics.provenance import provenance

    analyzer = analyzer or Analyzer()
    _check_params(k1, b, method, delta)
    out_dir = Path(out_dir)
    term_ids = _TermIds(analyzer)
    batches: list[_Postings] = []
    expected_row = 0
    with bar(len(store), "bm25 analyze", unit="doc") as progress:
        for first_row, docs in store.iter_batches(batch_size):
            if first_row != expected_row:
                raise LyreError(f"docstore batch starts at row {first_row}, expected {expected_row}")
            batches.append(term_ids.batch([document_text(doc) for doc in docs]))
            expected_row += len(docs)
            progress.update(len(docs))
    num_docs = expected_row
    if num_docs == 0:
        raise LyreError("the docstore is empty; ingest a corpus with documents before building BM25")

    vocab_size = max(len(term_ids.vocab), 1)
    doc_lengths = np.concatenate([p.doc_lengths for p in batches])
    avg_doc_len = float(doc_lengths.mean()) or 1.0
    df = np.zeros(vocab_size, dtype=np.int64)
    for p in batches:
        df += np.bincount(p.terms, minlength=vocab_size)
    idf_of = scoring._select_idf_scorer(method)
    idf = np.array([idf_of(int(d), N=num_docs) if d else 0.0 for d in df], dtype=np.float64)
    tfc = scoring._select_tfc_scorer(method)
    nonoccurrence = None
    if method in ("bm25l", "bm25+"):
        absent = tfc(tf_array=0.0, l_d=avg_doc_len, l_avg=avg_doc_len, k1=k1, b=b, delta=delta)
        nonoccurrence = (idf * absent).astype(np.float32)

    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    nnz = int(indptr[-1])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        data = np.lib.format.open_memmap(tmp / DATA_NAME, mode="w+", dtype=np.float32, shape=(nnz,))
        indices = np.lib.format.open_memmap(tmp / INDICES_NAME, mode="w+", dtype=np.int32, shape=(nnz,))
        heads = indptr[:-1].copy()
        first_row = 0
        with bar(num_docs, "bm25 score", unit="doc") as progress:
            for i, p in enumerate(batches):
                rows = np.repeat(np.arange(first_row, first_row + len(p.doc_lengths)), p.postings_per_doc)
                scores = idf[p.terms] * tfc(
                    tf_array=p.tfs.astype(np.float64),
                    l_d=doc_lengths[rows],
                    l_avg=avg_doc_len,
                    k1=k1,
                    b=b,
                    delta=delta,
                )
                if nonoccurrence is not None:
                    scores -= nonoccurrence[p.terms]
                # Counting sort into the CSC columns: a stable sort by term keeps rows ascending.
                order = np.argsort(p.terms, kind="stable")
                sorted_terms = p.terms[order]
                distinct, starts, counts = np.unique(sorted_terms, return_index=True, return_counts=True)
                slots = heads[sorted_terms] + (np.arange(len(order)) - np.repeat(starts, counts))
                data[slots] = scores[order]
                indices[slots] = rows[order]
                heads[distinct] += counts
                first_row += len(p.doc_lengths)
                progress.update(len(p.doc_lengths))
                batches[i] = None  # type: ignore[call-overload]  # free the batch as soon as it is written
        data.flush()
        indices.flush()
        del data, indices
        np.save(tmp / INDPTR_NAME, indptr)
        if nonoccurrence is not None:
            np.save(tmp / NONOCCURRENCE_NAME, nonoccurrence)
        (tmp / VOCAB_NAME).write_text(json.dumps(term_ids.vocab, ensure_ascii=False), encoding="utf-8")
        params = {
            "k1": k1,
            "b": b,
            "delta": delta,
            "method": method,
            "idf_method": method,
            "dtype": "float32",
            "int_dtype": "int32",
            "num_docs": num_docs,
            "version": current_versions()["bm25s"],
            "backend": "numpy",
        }
        (tmp / PARAMS_NAME).write_text(json.dumps(params, indent=4), encoding="utf-8")
        write_json_atomic(tmp / ANALYZER_NAME, analyzer.to_dict())
        record = {
            "documents": num_docs,
            "vocabulary": len(term_ids.vocab),
            "postings": nnz,
            "avg_doc_len": avg_doc_len,
            "k1": k1,
            "b": b,
            "method": method,
            "delta": delta,
            "analyzer": analyzer.to_dict(),
            "provenance": provenance("bm25s", "PyStemmer", batch_size=batch_size),
        }
        write_json_atomic(tmp / RECORD_NAME, record)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def bm25_stage(
    index_dir: str | Path,
    *,
    analyzer: Analyzer | None = None,
    k1: float = 0.9,
    b: float = 0.4,
    method: str = "lucene",
    delta: float = 0.5,
    batch_size: int = 10_000,
) -> dict[str, Any]:
    """The "bm25" stage of ``lyre index``: INDEX/docstore -> INDEX/bm25, recorded in the manifest last."""
    from indexes.docstore import DocStore
    from indexes.manifest import clear_stage, record_stage, require_stage

    index_dir = Path(index_dir)
    require_stage(index_dir, "docstore")
    clear_stage(index_dir, "bm25")
    record = build_bm25(
        DocStore.open(index_dir / "docstore"),
        index_dir / "bm25",
        analyzer=analyzer,
        k1=k1,
        b=b,
        method=method,
        delta=delta,
        batch_size=batch_size,
    )
    record_stage(index_dir, "bm25", record)
    say(f"bm25: {record['documents']} documents, {record['vocabulary']} terms, {record['postings']} postings")
    return record


class BM25Index:
    """A saved BM25 index, memory-mapped; queries are analysed with the analyzer saved beside it."""

    def __init__(self, directory: Path, engine: Any, analyzer: Analyzer, record: dict[str, Any]) -> None:
        self.directory = directory
        self.analyzer = analyzer
        self.record = record
        self.num_docs = int(engine.scores["num_docs"])
        self._vocab: dict[str, int] = engine.vocab_dict
        # Plain ndarray views of the memory maps: np.memmap's Python-level slicing costs more than the
        # scoring itself on small collections.
        self._data = engine.scores["data"].view(np.ndarray)
        self._indices = engine.scores["indices"].view(np.ndarray)
        self._indptr = np.asarray(engine.scores["indptr"], dtype=np.int64)
        self._nonoccurrence = engine.nonoccurrence_array

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        analyzer: Analyzer | None = None,
        k1: float | None = None,
        b: float | None = None,
        method: str | None = None,
    ) -> BM25Index:
        """Open ``directory``. Passing analyzer/k1/b/method is allowed only if they equal the saved ones:
        scores are precomputed at build time, so a different value would silently not apply."""
        import bm25s

        directory = Path(directory)
        record_path = directory / RECORD_NAME
        if not record_path.exists():
            raise LyreError(f"{directory}: no BM25 index here (no {RECORD_NAME}); build it with `lyre index`")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        saved = Analyzer.from_dict(json.loads((directory / ANALYZER_NAME).read_text(encoding="utf-8")))
        for name, asked, built in (
            ("k1", k1, record["k1"]),
            ("b", b, record["b"]),
            ("method", method, record["method"]),
        ):
            if asked is not None and asked != built:
                raise LyreError(
                    f"{directory}: the BM25 index was built with {name}={built!r}, not {asked!r}; scores are "
                    f"fixed at build time, so rebuild the index with `lyre index ... --bm25-{name} {asked}`"
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
        engine = bm25s.BM25.load(directory, mmap=True, load_corpus=False)
        return cls(directory, engine, saved, record)

    def query_term_ids(self, text: str) -> np.ndarray:
        """Term ids of a query, in order, without words unknown to the index."""
        ids = [self._vocab.get(term, -1) for term in self.analyzer.analyze(text)]
        return np.array([i for i in ids if i >= 0], dtype=np.int64)

    def scores_of(self, term_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, float64 scores) of the documents matching at least one term, rows ascending."""
        if len(term_ids) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        starts, ends = self._indptr[term_ids], self._indptr[term_ids + 1]
        rows = np.concatenate([self._indices[s:e] for s, e in zip(starts, ends, strict=True)])
        weights = np.concatenate([self._data[s:e] for s, e in zip(starts, ends, strict=True)])
        totals = np.bincount(rows, weights=weights, minlength=self.num_docs)
        hits = np.flatnonzero(totals > 0)
        scores = totals[hits]
        if self._nonoccurrence is not None:
            scores += float(self._nonoccurrence[term_ids].sum(dtype=np.float64))
        return hits, scores

    def _top(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        hits, scores = self.scores_of(self.query_term_ids(text))
        if len(hits) > k:
            keep = np.sort(np.argpartition(-scores, k - 1)[:k])
            hits, scores = hits[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")  # score desc, then row asc: a reproducible order
        return hits[order], scores[order]

    def search(self, query_texts: Sequence[str], k: int, n_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and scores per query: (int64 [nq, k], float32 [nq, k]).

        Only documents containing a query term are hits; the rest of a row is filled with row -1 and
        score 0 (an all-stopword or out-of-vocabulary query has no hits). ``n_threads``: 0 = all cores.
        One thread is the default because it was the fastest measured (SciFact 7,018 vs 4,664 queries/s with
        2 threads, NFCorpus 17,524 vs 10,154, 1M documents 170 vs 149): the numpy kernels are short and
        mostly hold the GIL, so threads add overhead.
        """
        if k < 1:
            raise LyreError(f"k must be at least 1 (got {k})")
        rows = np.full((len(query_texts), k), -1, dtype=np.int64)
        scores = np.zeros((len(query_texts), k), dtype=np.float32)
        workers = n_threads if n_threads > 0 else (os.cpu_count() or 1)

        def fill(i: int) -> None:
            hit_rows, hit_scores = self._top(query_texts[i], k)
            rows[i, : len(hit_rows)] = hit_rows
            scores[i, : len(hit_rows)] = hit_scores

        with bar(len(query_texts), "bm25 search", unit="query") as progress:
            if workers == 1:
                for i in range(len(query_texts)):
                    fill(i)
                    progress.update()
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for _ in pool.map(fill, range(len(query_texts)), chunksize=16):
                        progress.update()
        return rows, scores
