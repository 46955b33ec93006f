"""Building the BM25 index from the streamed docstore, in bm25s' format (:mod:`indexes.bm25_format`).

Why not ``bm25s.BM25.index``: it wants every document's token list in memory at once (and copies it
into id lists), which is what breaks peers on large corpora. Here each docstore batch is analysed into
term ids against a growing vocabulary and reduced at once to compact numpy arrays (term id, tf per
distinct term of each document). After the stream, document frequencies give bm25s' idf, bm25s' own
term-frequency functions give the per-posting scores, and a counting sort per batch writes the
column-major (CSC) score matrix straight into memory-mapped ``.npy`` files in bm25s' layout. The index
folder is written under a temporary name and renamed when complete. Free space is checked (what each file
will take, exactly, in whole blocks, plus :data:`basics.resources.SPACE_MARGIN`) and the mapped files'
blocks reserved before the first page is written, so a full disk is one line naming the folder, never a
SIGBUS; a failed build removes its temporary folder (a killed one is swept by the next writer).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from lyre.basics.atomic import json_text, replace_dir, temp_dir_beside
from lyre.basics.declared import check_value, default_of, option, option_spec
from lyre.basics.errors import LyreError
from lyre.basics.progress import bar
from lyre.basics.provenance import provenance
from lyre.basics.resources import ensure_free_space, on_disk, reserve, write_error
from lyre.formats.records import Document, document_text
from lyre.indexes.analyzer import PRESETS, Analyzer, current_versions
from lyre.indexes.bm25_format import (
    ANALYZER_NAME,
    DATA_NAME,
    FORMAT,
    FREQUENCIES_NAME,
    INDICES_NAME,
    INDPTR_NAME,
    NONOCCURRENCE_METHODS,
    NONOCCURRENCE_NAME,
    PARAMS_NAME,
    RECORD_NAME,
    VOCAB_NAME,
    Bm25Record,
    Bm25sParams,
    array_bytes,
)
from lyre.indexes.bm25s_compat import idf_scorer, tf_scorer
from lyre.indexes.stages import overwrite_option

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
"""BM25 variants (Kamphuis et al., ECIR 2020), as implemented by bm25s' scoring functions."""
DELTA = 0.5
"""bm25l/bm25+ delta (Trotman et al.); the other variants ignore it."""
BATCH_SIZE = 10_000
"""Documents analysed per docstore batch."""


@dataclass(frozen=True)
class Bm25Options:
    """How BM25 analyses and scores; scores are computed at build time, so all of these decide the index."""

    analyzer: str = option("english", "BM25 analyzer preset.", choices=tuple(PRESETS))
    stemmer: str | None = option(None, "Override the preset's stemmer: porter, a Snowball language, or none.")
    stopwords: str | None = option(
        None, "Override the preset's stopwords: lucene, none, or comma-separated words."
    )
    bm25_method: str = option("lucene", "BM25 variant.", choices=METHODS)
    k1: float = option(0.9, "BM25 k1 (term-frequency saturation).", above=0)
    b: float = option(0.4, "BM25 b (document-length normalisation).", minimum=0, maximum=1)
    overwrite: bool = overwrite_option()

    def build_analyzer(self) -> Analyzer:
        """The preset with the stemmer and stopword overrides applied."""
        overrides: dict[str, Any] = {}
        if self.stemmer is not None:
            overrides["stemmer"] = self.stemmer
        if self.stopwords is not None:
            words = tuple(word.strip() for word in self.stopwords.split(",") if word.strip())
            overrides["stopwords"] = words if "," in self.stopwords else self.stopwords
        return Analyzer.preset(self.analyzer, **overrides)


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
        for word in dict.fromkeys(flat):  # first-seen order (a set's order changes with each process)
            if word in self._word_ids:
                continue
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


@dataclass
class _Statistics:
    """What the whole collection contributes to every posting's score, known once the stream has ended."""

    num_docs: int
    doc_lengths: np.ndarray
    avg_doc_len: float
    idf: np.ndarray
    frequencies: np.ndarray
    """int64 per term: its occurrences in the collection (``FREQUENCIES_NAME``)."""
    indptr: np.ndarray
    nonoccurrence: np.ndarray | None

    @property
    def postings(self) -> int:
        return int(self.indptr[-1])


def _check_params(k1: float, b: float, method: str, delta: float) -> None:
    """The declared ranges of :class:`Bm25Options`, for callers of :func:`build_bm25` without options."""
    declared = {field.name: spec for field in fields(Bm25Options) if (spec := option_spec(field)) is not None}
    for name, value in (("k1", k1), ("b", b), ("bm25_method", method)):
        check_value(name, value, declared[name])
    if delta < 0:
        raise LyreError(f"BM25 needs delta >= 0 (got {delta})")


def _analyze(store: DocBatches, term_ids: _TermIds, batch_size: int) -> list[_Postings]:
    """Every docstore batch reduced to postings, checked to come in row order."""
    batches: list[_Postings] = []
    expected_row = 0
    with bar(len(store), "bm25 analyze", unit="doc") as progress:
        for first_row, docs in store.iter_batches(batch_size):
            if first_row != expected_row:
                raise LyreError(f"docstore batch starts at row {first_row}, expected {expected_row}")
            batches.append(term_ids.batch([document_text(doc) for doc in docs]))
            expected_row += len(docs)
            progress.update(len(docs))
    if expected_row == 0:
        raise LyreError("the docstore is empty; ingest a corpus with documents before building BM25")
    return batches


def _statistics(
    batches: Sequence[_Postings], vocab_size: int, method: str, k1: float, b: float, delta: float
) -> _Statistics:
    """Document frequencies and bm25s' idf of every term, collection frequencies, lengths, the CSC column
    pointers, and (bm25l/bm25+) the score of an absent term."""
    idf_of, tfc = idf_scorer(method), tf_scorer(method)
    doc_lengths = np.concatenate([p.doc_lengths for p in batches])
    num_docs = len(doc_lengths)
    avg_doc_len = float(doc_lengths.mean()) or 1.0
    df = np.zeros(vocab_size, dtype=np.int64)
    frequencies = np.zeros(vocab_size, dtype=np.int64)
    for p in batches:
        df += np.bincount(p.terms, minlength=vocab_size)
        frequencies += np.bincount(p.terms, weights=p.tfs, minlength=vocab_size).astype(np.int64)
    idf = np.array([idf_of(int(d), N=num_docs) if d else 0.0 for d in df], dtype=np.float64)
    nonoccurrence = None
    if method in NONOCCURRENCE_METHODS:
        absent = tfc(tf_array=0.0, l_d=avg_doc_len, l_avg=avg_doc_len, k1=k1, b=b, delta=delta)
        nonoccurrence = (idf * absent).astype(np.float32)
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    return _Statistics(num_docs, doc_lengths, avg_doc_len, idf, frequencies, indptr, nonoccurrence)


def build_bm25(
    store: DocBatches,
    out_dir: str | Path,
    *,
    analyzer: Analyzer | None = None,
    k1: float = default_of(Bm25Options, "k1"),
    b: float = default_of(Bm25Options, "b"),
    method: str = default_of(Bm25Options, "bm25_method"),
    delta: float = DELTA,
    batch_size: int = BATCH_SIZE,
) -> Bm25Record:
    """Index ``title + " " + text`` of every docstore row into ``out_dir``; return the build record.

    Defaults are Anserini's (k1=0.9, b=0.4, Lucene idf and tf). ``delta`` only matters for bm25l/bm25+.
    Document i of the index is docstore row i.
    """
    analyzer = analyzer or Analyzer()
    _check_params(k1, b, method, delta)
    idf_scorer(method)  # checks the bm25s version before any work
    term_ids = _TermIds(analyzer)
    batches = _analyze(store, term_ids, batch_size)
    stats = _statistics(batches, max(len(term_ids.vocab), 1), method, k1, b, delta)
    version = current_versions()["bm25s"]
    params = Bm25sParams(k1, b, delta, method, method, "float32", "int32", stats.num_docs, version, "numpy")
    record = Bm25Record(
        documents=stats.num_docs,
        vocabulary=len(term_ids.vocab),
        postings=stats.postings,
        avg_doc_len=stats.avg_doc_len,
        k1=k1,
        b=b,
        method=method,
        delta=delta,
        analyzer=analyzer.to_dict(),
        provenance=provenance("bm25s", "PyStemmer", batch_size=batch_size),
        format=FORMAT,
    )
    texts = {  # written after the arrays; made now, so the space they need is known exactly
        VOCAB_NAME: json.dumps(term_ids.vocab, ensure_ascii=False),
        PARAMS_NAME: json.dumps(asdict(params), indent=4),
        ANALYZER_NAME: json_text(analyzer.to_dict()),
        RECORD_NAME: json_text(asdict(record)),
    }
    files = {name: text.encode("utf-8") for name, text in texts.items()}
    _write_folder(Path(out_dir), batches, stats, files, method=method, k1=k1, b=b, delta=delta)
    return record


def _write_folder(
    out_dir: Path,
    batches: list[_Postings],
    stats: _Statistics,
    files: dict[str, bytes],
    **scoring: Any,
) -> None:
    """The folder, written under a temporary name and swapped in whole; the space it needs is checked (and
    the memory-mapped files' blocks reserved) before the first page is written."""
    nnz, vocab_size = stats.postings, len(stats.frequencies)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A full disk under a memory map kills the process with SIGBUS: check the space up front, then
        # reserve the mapped files' blocks before the first page is written.
        arrays = array_bytes(nnz, vocab_size, stats.nonoccurrence is not None)
        ensure_free_space(out_dir.parent, on_disk(*arrays, *map(len, files.values())))
    except OSError as error:
        raise write_error(out_dir, error) from None
    tmp = temp_dir_beside(out_dir)
    try:
        _write_scores(tmp, batches, stats, **scoring)
        np.save(tmp / INDPTR_NAME, stats.indptr)
        np.save(tmp / FREQUENCIES_NAME, stats.frequencies)
        if stats.nonoccurrence is not None:
            np.save(tmp / NONOCCURRENCE_NAME, stats.nonoccurrence)
        for name, data in files.items():  # the folder is swapped in whole: no file needs its own rename
            (tmp / name).write_bytes(data)
        replace_dir(tmp, out_dir)
    except OSError as error:  # np.save and write_text on a full disk, a quota or a file-size limit
        raise write_error(out_dir, error) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a killed build's temporary is swept by the next writer


def _write_scores(
    tmp: Path, batches: list[_Postings], stats: _Statistics, *, method: str, k1: float, b: float, delta: float
) -> None:
    """Every posting's score into the memory-mapped CSC arrays, batch by batch: ``batches`` is emptied as
    they are written, so each is freed once written."""
    tfc = tf_scorer(method)
    nnz = stats.postings
    data = np.lib.format.open_memmap(tmp / DATA_NAME, mode="w+", dtype=np.float32, shape=(nnz,))
    indices = np.lib.format.open_memmap(tmp / INDICES_NAME, mode="w+", dtype=np.int32, shape=(nnz,))
    reserve(tmp / DATA_NAME)
    reserve(tmp / INDICES_NAME)
    heads = stats.indptr[:-1].copy()
    first_row = 0
    batches.reverse()  # taken from the end, in their order
    with bar(stats.num_docs, "bm25 score", unit="doc") as progress:
        while batches:
            p = batches.pop()
            rows = np.repeat(np.arange(first_row, first_row + len(p.doc_lengths)), p.postings_per_doc)
            scores = stats.idf[p.terms] * tfc(
                tf_array=p.tfs.astype(np.float64),
                l_d=stats.doc_lengths[rows],
                l_avg=stats.avg_doc_len,
                k1=k1,
                b=b,
                delta=delta,
            )
            if stats.nonoccurrence is not None:
                scores -= stats.nonoccurrence[p.terms]
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
    data.flush()
    indices.flush()
