"""The passages stage: ``INDEX/docstore`` -> ``INDEX/passages``, the store BM25 and the embeddings read
when an index is built with ``--passage-tokens``.

Layout of ``INDEX/passages/``: a docstore (:mod:`indexes.docstore`) whose rows are passages, ids
``DOCID#N``, each with its parent's title and the slice ``text[start:end]`` of the parent's text; beside
it ``parent.npy`` (int64, the parent's docstore row of each passage), ``start.npy`` and ``end.npy``
(int64 character offsets into the parent's text). So a passage row leads back to its document and its
exact place in it without reading any text.

Every document is split with the embedding model's own tokenizer (:class:`indexes.passages.TokenSplitter`;
whitespace words for a BM25-only index), in bounded batches. The stage writes into a temporary folder and
swaps it in when complete, like ingest: a killed run leaves the previous state (or nothing) and a rerun
redoes the stage, giving the same bytes. The record keeps the splitting settings (what decides every
boundary: size, stride, tokenizer fingerprint, template) and the statistics (passages per document, the
documents' lengths before splitting, how many would have been truncated).
"""

from __future__ import annotations

import shutil
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from lyre.basics import progress
from lyre.basics.atomic import replace_dir, temp_dir_beside
from lyre.basics.errors import LyreError, opt
from lyre.basics.numbers import count, seconds
from lyre.basics.provenance import provenance
from lyre.basics.resources import write_error
from lyre.formats.corpus import id_hashes
from lyre.formats.records import Document
from lyre.indexes.docstore import DocStore, DocStoreWriter
from lyre.indexes.encode import EncodeOptions
from lyre.indexes.manifest import DOCSTORE, PASSAGES, Manifest
from lyre.indexes.metadata import StageRecord
from lyre.indexes.passages import (
    PassageOptions,
    SplitStats,
    Splitter,
    TokenSplitter,
    WordSplitter,
    split_documents,
)
from lyre.indexes.stages import Invalidate, StageResult, Upstream, required_upstream, stage_files

PARENT_NAME = "parent.npy"
START_NAME = "start.npy"
END_NAME = "end.npy"
READ_BATCH = 1024
"""Documents read from the docstore at a time (the splitter batches them again by size)."""


@dataclass
class PassageStage:
    """Docstore -> passages (the "passages" stage); ``encode``: the embedding model whose tokenizer cuts
    the windows, or None for whitespace-word windows (a BM25-only index)."""

    encode: EncodeOptions | None
    name: ClassVar[str] = PASSAGES
    _splitter: Splitter | None = None

    def splitter(self, options: PassageOptions) -> Splitter:
        """The splitter these options make, resolved once per command (the tokenizer, no weights)."""
        if self._splitter is None:
            if options.passage_tokens is None:
                raise LyreError(f"the passages stage needs {opt('passage_tokens')}")
            size, stride = options.passage_tokens, options.stride()
            if self.encode is None:
                self._splitter = WordSplitter(size, stride)
            else:
                self._splitter = TokenSplitter.for_model(
                    self.encode.embed_model, size, stride, **self.encode.recipe_overrides()
                )
        return self._splitter

    def params(self, options: PassageOptions) -> dict[str, Any]:
        return {"settings": self.splitter(options).settings()}

    def validate(self, index_dir: Path, options: PassageOptions, upstream: Upstream) -> None:
        options.validate()
        required_upstream(index_dir, upstream, DOCSTORE)
        self.splitter(options)  # a size above the model's max length, a tokenizer without offsets

    def is_current(self, index_dir: Path, record: StageRecord, options: PassageOptions) -> bool:
        return record.params == self.params(options)

    def build(self, index_dir: Path, options: PassageOptions, invalidate: Invalidate) -> StageResult:
        started = time.perf_counter()
        splitter = self.splitter(options)
        docstore = DocStore.open(index_dir / DOCSTORE)
        temp = temp_dir_beside(index_dir / PASSAGES)  # a killed run's is swept under the write lock
        try:
            stats = _write_passages(docstore, splitter, temp, index_dir / PASSAGES)
            invalidate()  # BM25 and the embeddings over older passages are stale
            replace_dir(temp, index_dir / PASSAGES)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        took = time.perf_counter() - started
        described = stats.describe()
        progress.say(f"{PASSAGES}: {described}")
        settings = splitter.settings()
        window = f"{settings['size']} {settings['unit']}, stride {settings['stride']}"
        summary = f"{count(stats.documents, 'documents')} -> {count(stats.passages, 'passages')} ({window})"
        record = StageRecord(
            summary=summary,
            params=self.params(options),
            counts={**stats.summary(), "seconds": round(took, 3)},
            provenance=provenance("tokenizers", "transformers", **settings),
            files=stage_files(index_dir, PASSAGES),
        )
        return StageResult(f"{PASSAGES}: {described} in {seconds(took)}", record)


def _documents(docstore: DocStore) -> Iterator[Document]:
    for _, documents in docstore.iter_batches(READ_BATCH):
        yield from documents


def _write_passages(docstore: DocStore, splitter: Splitter, folder: Path, final: Path) -> SplitStats:
    """Split every document of ``docstore`` into a passage docstore at ``folder`` with its side arrays;
    the statistics of the split. Passages come in document order, each document's from number 0, so a
    passage numbered 0 starts the next parent row."""
    stats = SplitStats(splitter.unit, splitter.limit)
    writer = DocStoreWriter(folder, final=final)
    parents, starts, ends = array("q"), array("q"), array("q")
    hashes: list[np.ndarray] = []
    batch: list[Document] = []
    parent = -1

    def flush() -> None:
        writer.write(batch)
        hashes.append(id_hashes([document.docid for document in batch]))
        batch.clear()

    try:
        with progress.bar(len(docstore), PASSAGES, unit="doc") as bar:
            for passage in split_documents(_documents(docstore), splitter, stats):
                if passage.number == 0:
                    parent += 1
                    bar.update(1)
                parents.append(parent)
                starts.append(passage.start)
                ends.append(passage.end)
                batch.append(passage.as_document())
                if len(batch) >= READ_BATCH:
                    flush()
            if batch:
                flush()
    except BaseException:
        writer.abort()
        raise
    if parent + 1 != len(docstore):
        raise LyreError(
            f"{final}: split {count(parent + 1)} documents of {count(len(docstore))}; rebuild the docstore "
            f"with `lyre index CORPUS --out INDEX {opt('overwrite')}`"
        )
    all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    order = np.argsort(all_hashes, kind="stable")
    try:
        writer.close((all_hashes[order], order.astype(np.int64)))
        for name, values in ((PARENT_NAME, parents), (START_NAME, starts), (END_NAME, ends)):
            np.save(folder / name, np.frombuffer(values, dtype=np.int64))
    except OSError as error:
        raise write_error(final, error) from None
    return stats


@dataclass(frozen=True)
class PassageStore:
    """The passages of an index opened for reading: the passage docstore and where each passage lies."""

    store: DocStore
    """The passage docstore (ids ``DOCID#N``)."""
    parent: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @classmethod
    def open(cls, index_dir: Path, manifest: Manifest | None = None) -> PassageStore:
        """The passages of ``index_dir`` (``manifest``: the index's, when the caller has read it)."""
        folder = Path(index_dir) / PASSAGES
        store = DocStore.open(folder, manifest)
        arrays = [np.load(folder / name, mmap_mode="r") for name in (PARENT_NAME, START_NAME, END_NAME)]
        if any(len(values) != len(store) for values in arrays):
            raise LyreError(
                f"{folder}: side arrays do not match its {count(len(store), 'passages')}; rebuild it with "
                "`lyre index CORPUS --out INDEX --passage-tokens N --overwrite`"
            )
        return cls(store, *arrays)
