"""One encode job as every engine sees it, the runner contract, and the one way a chunk is encoded.

The encode stage (:mod:`indexes.encode`) decides *what* is encoded: the recipe, the chunk layout, which
chunks are missing, the records and the manifest. A runner (:mod:`indexes.encode_runners`) decides only
*who* encodes them, and every runner writes a chunk through :func:`encode_chunk`, so a chunk is byte for
byte the same whoever encoded it, and a run killed under one engine resumes under another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.basics.progress import ProgressSink
from lyre.formats.records import document_text
from lyre.indexes.docstore import DocStore
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.manifest import DOCSTORE, EMBEDDINGS
from lyre.models.embedder import Embedder
from lyre.models.recipes import EmbedRecipe


@dataclass(frozen=True)
class EncodeJob:
    """The missing chunks of one encode job: everything an engine needs, all of it picklable, so a
    spawned process or a Ray actor can take it as is."""

    index_dir: Path
    model_folder: Path
    recipe: EmbedRecipe
    chunks: tuple[int, ...]
    token_budget: int | None = None
    store: str = DOCSTORE
    """The folder of the store encoded: the docstore, or the passages of a passage index."""

    def open_store(self) -> tuple[DocStore, EmbeddingStore]:
        """The store to read and the embedding store to write (created by the encode stage)."""
        return DocStore.open(self.index_dir / self.store), EmbeddingStore.open(self.index_dir / EMBEDDINGS)


class ChunkRunner(Protocol):
    """Encodes every chunk of a job and reports through ``progress`` (documents and tokens)."""

    def run(self, job: EncodeJob, progress: ProgressSink) -> None: ...


def encode_chunk(
    embedder: Embedder, docstore: DocStore, store: EmbeddingStore, chunk: int, progress: ProgressSink
) -> None:
    """Encode and write one chunk (its texts batched only among themselves, so reruns are identical)."""
    start, stop = store.spec.chunk_bounds(chunk)
    texts = [
        embedder.recipe.format_document(document_text(doc))
        for _, docs in docstore.iter_batches(stop - start, start, stop)
        for doc in docs
    ]
    if len(texts) != stop - start:
        raise LyreError(
            f"{docstore.folder}: returned {count(len(texts), 'rows')} for rows {start}..{stop}; "
            "rebuild it with `lyre index`"
        )
    ids = embedder.tokenize(texts)
    tokens = sum(len(sequence) for sequence in ids)
    progress.tokenized(len(ids), tokens)
    began = time.perf_counter()
    vectors = embedder.encode_ids(ids, progress)
    store.write_chunk(
        chunk,
        vectors.astype(np.float16),
        {"tokens": tokens, "seconds": round(time.perf_counter() - began, 3), "device": str(embedder.device)},
    )
