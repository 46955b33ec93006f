"""The BM25 folder on disk: its files, their records, and reading them back checked.

``INDEX/bm25/`` is bm25s' layout (``bm25s.BM25.load`` opens it) plus lyre's own files::

    data.csc.index.npy               float32 [postings]  BM25 score of each (term, document) posting
    indices.csc.index.npy            int32 [postings]    the posting's document row
    indptr.csc.index.npy             int64 [terms + 1]   where each term's postings start (CSC columns)
    nonoccurrence_array.index.npy    float32 [terms]     bm25l/bm25+ only: the score of an absent term
    collection_frequencies.index.npy int64 [terms]       format 2: each term's occurrences in the collection
    vocab.index.json                 term -> term id
    params.index.json                bm25s' parameters (:class:`Bm25sParams`)
    analyzer.json                    the analyzer (``indexes/analyzer.py``), with library versions
    bm25.json                        lyre's record (:class:`Bm25Record`): counts, parameters, provenance

Format 2 adds the collection frequencies, which the scores alone do not give back (a posting's score mixes
its term frequency with its document's length): Terrier's Bo1 feedback weighs a term by them
(:mod:`retrieval.feedback.bo1`). A format-1 folder still searches; only Bo1 asks to rebuild it.

:func:`read_bm25_folder` reads the JSON files through the metadata reader (:mod:`indexes.metadata`), each
checked against its recorded SHA-256, memory-maps the arrays, and checks the files against each other
(vocabulary size, postings, documents): a damaged or mismatched file is one line naming it and the repair
command, never a traceback or a silently wrong score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.indexes.analyzer import Analyzer
from lyre.indexes.manifest import Manifest, StageFolder

DATA_NAME = "data.csc.index.npy"
INDICES_NAME = "indices.csc.index.npy"
INDPTR_NAME = "indptr.csc.index.npy"
VOCAB_NAME = "vocab.index.json"
PARAMS_NAME = "params.index.json"
NONOCCURRENCE_NAME = "nonoccurrence_array.index.npy"
FREQUENCIES_NAME = "collection_frequencies.index.npy"
ANALYZER_NAME = "analyzer.json"
RECORD_NAME = "bm25.json"
FORMAT = 2
"""The layout written now (a record without a format is 1)."""
FREQUENCIES_SINCE = 2
"""The first format with :data:`FREQUENCIES_NAME`."""
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
    format: int = 1
    """The folder's layout (:data:`FORMAT`); records written before formats were numbered are 1."""


@dataclass(frozen=True)
class Bm25Folder:
    """Everything a search reads from a BM25 folder, checked: the CSC score matrix (``data`` and ``indices``
    memory-mapped), the vocabulary, the analyzer, and the per-term arrays the format holds."""

    directory: Path
    record: Bm25Record
    analyzer: Analyzer
    vocab: dict[str, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    nonoccurrence: np.ndarray | None
    """bm25l/bm25+: each term's score in a document without it (None for the other variants)."""
    frequencies: np.ndarray | None
    """Each term's occurrences in the whole collection (None in a format-1 folder)."""


def array_bytes(postings: int, vocab_size: int, nonoccurrence: bool) -> list[int]:
    """The sizes of the arrays' ``.npy`` files: float32 scores and int32 rows per posting, int64 column
    pointers, int64 collection frequencies, and a float32 per term for the variants that score absent
    terms."""
    sizes = [postings * 4, postings * 4, (vocab_size + 1) * 8, vocab_size * 8]
    sizes += [vocab_size * 4] if nonoccurrence else []
    return [NPY_HEADER + size for size in sizes]


def read_vocabulary(directory: str | Path, manifest: Manifest | None = None) -> dict[str, int]:
    """The index's terms alone, without the memory maps: what a query-side check needs cheaply (a cached
    search never loads the index). Read through the metadata reader, like every file of the index."""
    return StageFolder.locate(directory, manifest).read(VOCAB_NAME, dict[str, int])


def read_bm25_folder(directory: Path, manifest: Manifest | None = None) -> Bm25Folder:
    """The BM25 folder at ``directory``, every file read and checked (see the module note); ``manifest``:
    the index's, when the caller has read it (the files are checked against its records)."""
    if not (directory / RECORD_NAME).exists():
        raise LyreError(f"{directory}: no BM25 index here (no {RECORD_NAME}); build it with `lyre index`")
    folder = StageFolder.locate(directory, manifest)
    record = folder.read(RECORD_NAME, Bm25Record)
    analyzer = folder.read(ANALYZER_NAME, Analyzer)
    params = folder.read(PARAMS_NAME, Bm25sParams)
    vocab = folder.read(VOCAB_NAME, dict[str, int])
    arrays = (DATA_NAME, INDICES_NAME, INDPTR_NAME)
    data, indices, indptr = (_array(folder, name, mmap=True) for name in arrays)
    nonoccurrence = _array(folder, NONOCCURRENCE_NAME) if record.method in NONOCCURRENCE_METHODS else None
    frequencies = _array(folder, FREQUENCIES_NAME) if record.format >= FREQUENCIES_SINCE else None
    loaded = Bm25Folder(
        directory,
        record,
        analyzer,
        vocab,
        data.view(np.ndarray),  # plain views: np.memmap's Python-level slicing costs more than scoring
        indices.view(np.ndarray),
        np.asarray(indptr, dtype=np.int64),
        nonoccurrence,
        frequencies,
    )
    _check_consistent(folder, loaded, params)
    return loaded


def _array(folder: StageFolder, name: str, *, mmap: bool = False) -> np.ndarray:
    """One ``.npy`` file of the index (memory-mapped with ``mmap``); a file NumPy cannot read is one line."""
    try:
        return np.load(folder.folder / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise folder.error(name, "missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise folder.error(name, f"not a NumPy array file ({error})") from None


def _check_consistent(folder: StageFolder, loaded: Bm25Folder, params: Bm25sParams) -> None:
    """The files of one index agree with each other: a vocabulary, score arrays or records from another
    build (or damaged where no hash is recorded) would index out of range, or silently score wrong."""
    record, vocab, indptr = loaded.record, loaded.vocab, loaded.indptr
    if params.num_docs != record.documents:
        raise folder.error(PARAMS_NAME, f"num_docs is not the {count(record.documents, 'documents')}")
    terms = max(len(vocab), 1)
    if len(vocab) != record.vocabulary:
        raise folder.error(VOCAB_NAME, f"holds {count(len(vocab), 'terms')}, not {count(record.vocabulary)}")
    arrays = [
        (INDPTR_NAME, indptr, terms + 1, "column pointers"),
        (DATA_NAME, loaded.data, record.postings, "scores"),
        (INDICES_NAME, loaded.indices, record.postings, "rows"),
        (NONOCCURRENCE_NAME, loaded.nonoccurrence, terms, "term scores"),
        (FREQUENCIES_NAME, loaded.frequencies, terms, "term frequencies"),
    ]
    for name, array, length, what in arrays:
        if array is not None and array.shape != (length,):
            raise folder.error(name, f"holds {count(len(array), what)}, not {count(length)}")
    ids = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
    if len(ids) and (ids.min() < 0 or ids.max() >= terms or np.bincount(ids).max() > 1):
        raise folder.error(VOCAB_NAME, f"term ids must be distinct, in 0..{count(terms - 1)}")
    if len(indptr) and (indptr[0] != 0 or indptr[-1] != record.postings or np.any(np.diff(indptr) < 0)):
        raise folder.error(INDPTR_NAME, f"column pointers must rise from 0 to {count(record.postings)}")
