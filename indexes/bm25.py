"""The BM25 index: built from the streamed docstore, saved in bm25s' format, searched memory-mapped.

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

Search memory-maps those arrays itself (the files stay loadable by ``bm25s.BM25.load``) and reads the
JSON files beside them through the metadata reader (:mod:`indexes.metadata`) into typed records, checked
against their recorded SHA-256 and against each other (vocabulary size, postings, documents): a damaged
file is one line naming it and the repair command, never a traceback. A query's score vector is the sum
of its terms' columns (a repeated query term counts twice, as in Anserini and rank_bm25).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from lyre.basics.atomic import json_text, replace_dir, temp_dir_beside
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.options import check_value, default_of, option, option_spec
from lyre.basics.progress import bar, say
from lyre.basics.resources import ensure_free_space, on_disk, reserve, write_error
from lyre.formats.records import Document, document_text
from lyre.indexes.analyzer import PRESETS, Analyzer, current_versions, stemmer_languages, stopword_list
from lyre.indexes.manifest import BM25, DOCSTORE, Manifest, StageFolder
from lyre.indexes.metadata import StageRecord
from lyre.indexes.stages import (
    Forget,
    StageResult,
    Upstream,
    need,
    overwrite_option,
    run_stage,
    stage_files,
)

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
#: bm25l/bm25+ delta (Trotman et al.); the other variants ignore it.
DELTA = 0.5
#: Documents analysed per docstore batch.
BATCH_SIZE = 10_000
NONOCCURRENCE_METHODS = ("bm25l", "bm25+")
"""The variants whose absent terms score too: they keep a float32 per term (``NONOCCURRENCE_NAME``)."""
NPY_HEADER = 128
"""Bytes NumPy writes before the data of a ``.npy`` file (format 1.0, a 1-D array)."""


@dataclass(frozen=True)
class Bm25sParams:
    """``params.index.json``, in bm25s' format: what scored the index."""

    k1: float
    b: float
    delta: float
    method: str
    idf_method: str
    dtype: str
    int_dtype: str
    num_docs: int
    version: str
    backend: str


@dataclass(frozen=True)
class Bm25Record:
    """``bm25.json``: what was built (counts) and with what (parameters, analyzer, provenance)."""

    documents: int
    vocabulary: int
    postings: int
    avg_doc_len: float
    k1: float
    b: float
    method: str
    delta: float
    analyzer: dict[str, Any]
    provenance: dict[str, Any]


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


def _check_params(k1: float, b: float, method: str, delta: float) -> None:
    """The declared ranges of :class:`Bm25Options`, for callers of :func:`build_bm25` without options."""
    declared = {field.name: option_spec(field) for field in fields(Bm25Options)}
    for name, value in (("k1", k1), ("b", b), ("bm25_method", method)):
        check_value(name, value, declared[name])  # type: ignore[arg-type]
    if delta < 0:
        raise LyreError(f"BM25 needs delta >= 0 (got {delta})")


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
    from lyre.basics.provenance import provenance
    from lyre.indexes.bm25s_compat import idf_scorer, tf_scorer

    analyzer = analyzer or Analyzer()
    _check_params(k1, b, method, delta)
    idf_of, tfc = idf_scorer(method), tf_scorer(method)  # checks the bm25s version before any work
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
    idf = np.array([idf_of(int(d), N=num_docs) if d else 0.0 for d in df], dtype=np.float64)
    nonoccurrence = None
    if method in NONOCCURRENCE_METHODS:
        absent = tfc(tf_array=0.0, l_d=avg_doc_len, l_avg=avg_doc_len, k1=k1, b=b, delta=delta)
        nonoccurrence = (idf * absent).astype(np.float32)

    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    nnz = int(indptr[-1])
    params = Bm25sParams(
        k1, b, delta, method, method, "float32", "int32", num_docs, current_versions()["bm25s"], "numpy"
    )
    record = Bm25Record(
        documents=num_docs,
        vocabulary=len(term_ids.vocab),
        postings=nnz,
        avg_doc_len=avg_doc_len,
        k1=k1,
        b=b,
        method=method,
        delta=delta,
        analyzer=analyzer.to_dict(),
        provenance=provenance("bm25s", "PyStemmer", batch_size=batch_size),
    )
    texts = {  # written after the arrays; made now, so the space they need is known exactly
        VOCAB_NAME: json.dumps(term_ids.vocab, ensure_ascii=False),
        PARAMS_NAME: json.dumps(asdict(params), indent=4),
        ANALYZER_NAME: json_text(analyzer.to_dict()),
        RECORD_NAME: json_text(asdict(record)),
    }
    files = {name: text.encode("utf-8") for name, text in texts.items()}
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A full disk under a memory map kills the process with SIGBUS: check the space up front, then
        # reserve the mapped files' blocks before the first page is written.
        arrays = array_bytes(nnz, vocab_size, nonoccurrence is not None)
        ensure_free_space(out_dir.parent, on_disk(*arrays, *map(len, files.values())))
    except OSError as error:
        raise write_error(out_dir, error) from None
    tmp = temp_dir_beside(out_dir)
    try:
        data = np.lib.format.open_memmap(tmp / DATA_NAME, mode="w+", dtype=np.float32, shape=(nnz,))
        indices = np.lib.format.open_memmap(tmp / INDICES_NAME, mode="w+", dtype=np.int32, shape=(nnz,))
        reserve(tmp / DATA_NAME)
        reserve(tmp / INDICES_NAME)
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
        for name, data in files.items():  # the folder is swapped in whole: no file needs its own rename
            (tmp / name).write_bytes(data)
        replace_dir(tmp, out_dir)
    except OSError as error:  # np.save and write_text on a full disk, a quota or a file-size limit
        raise write_error(out_dir, error) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a killed build's temporary is swept by the next writer
    return record


def array_bytes(postings: int, vocab_size: int, nonoccurrence: bool) -> list[int]:
    """The sizes of the BM25 arrays' ``.npy`` files: float32 scores and int32 rows per posting, int64
    column pointers, and a float32 per term for the variants that score absent terms."""
    sizes = [postings * 4, postings * 4, (vocab_size + 1) * 8] + ([vocab_size * 4] if nonoccurrence else [])
    return [NPY_HEADER + size for size in sizes]


@dataclass
class Bm25Stage:
    """Docstore -> BM25."""

    batch_size: int = BATCH_SIZE
    store: str = DOCSTORE
    """The store indexed: the docstore, or the passages of a passage index (``indexes/passage_stage.py``)."""
    name: ClassVar[str] = BM25

    def validate(self, index_dir: Path, options: Bm25Options, upstream: Upstream) -> None:
        if options.stemmer not in (None, "none") and options.stemmer not in stemmer_languages():
            raise OptionError(
                "stemmer",
                options.stemmer,
                "is not known; use none or a PyStemmer language: " + ", ".join(stemmer_languages()),
            )
        if options.stopwords is not None and "," not in options.stopwords:
            try:
                stopword_list(options.stopwords)
            except LyreError:
                raise OptionError(
                    "stopwords",
                    options.stopwords,
                    "is not known; use lucene, none, a bm25s list such as bm25s-en, or comma-separated words",
                ) from None
        need(index_dir, upstream, self.store)

    def is_current(self, index_dir: Path, record: StageRecord, options: Bm25Options) -> bool:
        from lyre.indexes.passage_stage import store_params

        wanted = {**_params(options), **store_params(self.store)}
        return wanted == {**record.params, "analyzer": _analyzer_of(record.params["analyzer"])}

    def build(self, index_dir: Path, options: Bm25Options, forget: Forget) -> StageResult:
        from lyre.indexes.docstore import DocStore
        from lyre.indexes.passage_stage import store_params

        forget()
        built = build_bm25(
            DocStore.open(index_dir / self.store),
            index_dir / BM25,
            analyzer=options.build_analyzer(),
            k1=options.k1,
            b=options.b,
            method=options.bm25_method,
            batch_size=self.batch_size,
        )
        counts = {key: getattr(built, key) for key in ("documents", "vocabulary", "postings", "avg_doc_len")}
        rows = "documents" if self.store == DOCSTORE else self.store
        described = f"{counts['documents']:,} {rows}, {counts['vocabulary']:,} terms"
        say(f"{BM25}: {described}, {counts['postings']:,} postings")
        params = {key: getattr(built, key) for key in ("k1", "b", "method", "delta", "analyzer")}
        params.update(store_params(self.store))
        files = stage_files(index_dir, BM25)
        record = StageRecord(described, params, counts, built.provenance, files)
        return StageResult(f"{BM25}: {described}", record)


def _analyzer_of(saved: dict[str, Any]) -> dict[str, Any]:
    """An analyzer's settings without the library versions it was saved with (they do not decide terms
    by themselves; a version change is warned about when the index is loaded)."""
    return {key: value for key, value in saved.items() if key != "versions"}


def _params(options: Bm25Options) -> dict[str, Any]:
    """The record params that ``options`` would build."""
    analyzer = _analyzer_of(options.build_analyzer().to_dict())
    return {
        "k1": options.k1,
        "b": options.b,
        "method": options.bm25_method,
        "delta": DELTA,
        "analyzer": analyzer,
    }


def bm25_stage(
    index_dir: str | Path, options: Bm25Options | None = None, *, wait: bool = False
) -> StageResult:
    """The "bm25" stage alone, through the stage runner: INDEX/docstore -> INDEX/bm25."""
    return run_stage(Path(index_dir), Bm25Stage(), options or Bm25Options(), wait=wait)


def read_vocabulary(directory: str | Path, manifest: Manifest | None = None) -> dict[str, int]:
    """The index's terms alone, without the memory maps: what a query-side check needs cheaply (a cached
    search never loads the index). Read through the metadata reader, like every file of the index."""
    return StageFolder.locate(directory, manifest).read(VOCAB_NAME, dict[str, int])


class BM25Index:
    """A saved BM25 index, memory-mapped; queries are analysed with the analyzer saved beside it."""

    def __init__(
        self,
        directory: Path,
        analyzer: Analyzer,
        record: Bm25Record,
        vocab: dict[str, int],
        scores: tuple[np.ndarray, np.ndarray, np.ndarray],
        nonoccurrence: np.ndarray | None,
    ) -> None:
        """``scores``: the CSC score matrix as (data, indices, indptr), data and indices memory-mapped."""
        self.directory = directory
        self.analyzer = analyzer
        self.record = record
        self.num_docs = record.documents
        self._vocab = vocab
        # Plain ndarray views of the memory maps: np.memmap's Python-level slicing costs more than the
        # scoring itself on small collections.
        self._data = scores[0].view(np.ndarray)
        self._indices = scores[1].view(np.ndarray)
        self._indptr = np.asarray(scores[2], dtype=np.int64)
        self._nonoccurrence = nonoccurrence

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
        if not (directory / RECORD_NAME).exists():
            raise LyreError(f"{directory}: no BM25 index here (no {RECORD_NAME}); build it with `lyre index`")
        folder = StageFolder.locate(directory, manifest)
        record = folder.read(RECORD_NAME, Bm25Record)
        saved = folder.read(ANALYZER_NAME, Analyzer)
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
        params = folder.read(PARAMS_NAME, Bm25sParams)
        vocab = folder.read(VOCAB_NAME, dict[str, int])
        scores = tuple(_array(folder, name, mmap=True) for name in (DATA_NAME, INDICES_NAME, INDPTR_NAME))
        nonoccurrence = _array(folder, NONOCCURRENCE_NAME) if record.method in NONOCCURRENCE_METHODS else None
        _check_consistent(folder, record, params, vocab, scores, nonoccurrence)  # type: ignore[arg-type]
        return cls(directory, saved, record, vocab, scores, nonoccurrence)  # type: ignore[arg-type]

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


def _array(folder: StageFolder, name: str, *, mmap: bool = False) -> np.ndarray:
    """One ``.npy`` file of the index (memory-mapped with ``mmap``); a file NumPy cannot read is one line."""
    try:
        return np.load(folder.folder / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise folder.error(name, "missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise folder.error(name, f"not a NumPy array file ({error})") from None


def _check_consistent(
    folder: StageFolder,
    record: Bm25Record,
    params: Bm25sParams,
    vocab: dict[str, int],
    scores: tuple[np.ndarray, np.ndarray, np.ndarray],
    nonoccurrence: np.ndarray | None,
) -> None:
    """The files of one index agree with each other: a vocabulary, score arrays or records from another
    build (or damaged where no hash is recorded) would index out of range, or silently score wrong."""
    data, indices, indptr = scores
    terms = max(len(vocab), 1)
    problems = [
        (
            PARAMS_NAME,
            params.num_docs == record.documents,
            f"num_docs is not the {record.documents:,} documents",
        ),
        (
            VOCAB_NAME,
            len(vocab) == record.vocabulary,
            f"holds {len(vocab):,} terms, not {record.vocabulary:,}",
        ),
        (
            INDPTR_NAME,
            indptr.shape == (terms + 1,),
            f"holds {len(indptr):,} column pointers, not {terms + 1:,}",
        ),
        (DATA_NAME, data.shape == (record.postings,), f"holds {len(data):,} scores, not {record.postings:,}"),
        (
            INDICES_NAME,
            indices.shape == (record.postings,),
            f"holds {len(indices):,} rows, not {record.postings:,}",
        ),
    ]
    if nonoccurrence is not None:
        problems.append(
            (
                NONOCCURRENCE_NAME,
                nonoccurrence.shape == (terms,),
                f"holds no score for each of {terms:,} terms",
            )
        )
    for name, holds, problem in problems:
        if not holds:
            raise folder.error(name, problem)
    ids = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
    if len(ids) and (ids.min() < 0 or ids.max() >= terms or np.bincount(ids).max() > 1):
        raise folder.error(VOCAB_NAME, f"term ids must be distinct, in 0..{terms - 1:,}")
    if len(indptr) and (indptr[0] != 0 or indptr[-1] != record.postings or np.any(np.diff(indptr) < 0)):
        raise folder.error(INDPTR_NAME, f"column pointers must rise from 0 to {record.postings:,}")
