"""The embedding chunk store: fixed-size chunks of float16 vectors, each with its row numbers and a
completion record, so encoding can stop anywhere and resume at the first unfinished chunk.

Layout of ``INDEX/embeddings/``::

    store.json                  identity of the encoding job (:class:`StoreSpec`: model, recipe, dim, ...)
    chunk-000000.npy            float16 [n, dim]  vectors of rows [i*chunk_rows, ...)
    chunk-000000.rows.npy       int64 [n]         their docstore row numbers
    chunk-000000.done.json      completion record, written last (a chunk without it does not exist)

Chunk ``i`` always covers rows ``[i * chunk_rows, min((i + 1) * chunk_rows, num_rows))``; slice ``s`` of
``n`` (``--slice-id/--slices``, one slice per task of a job array) owns the chunks with ``i % n == s``,
which spreads long and short documents evenly over the slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.atomic import atomic_path, write_json_atomic
from lyre.basics.errors import LyreError, opt
from lyre.basics.numbers import count
from lyre.indexes.manifest import Manifest, StageFolder

STORE_FILE = "store.json"


@dataclass(frozen=True)
class StoreSpec:
    """What every chunk of one store shares; a resumed job must match it exactly."""

    num_rows: int
    dim: int
    chunk_rows: int
    model: str
    recipe: dict[str, Any]

    def __post_init__(self) -> None:
        if self.num_rows < 0 or self.dim < 1 or self.chunk_rows < 1:
            raise ValueError("num_rows must be >= 0, dim and chunk_rows >= 1")

    @property
    def num_chunks(self) -> int:
        return (self.num_rows + self.chunk_rows - 1) // self.chunk_rows

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_rows)

    def chunks_of_slice(self, slice_id: int, slices: int) -> list[int]:
        if not 0 <= slice_id < slices:
            raise LyreError(
                f"{opt('slice_id')} {slice_id} is outside 0..{slices - 1}; pick one below {opt('slices')}"
            )
        return list(range(slice_id, self.num_chunks, slices))


class EmbeddingStore:
    """Reads and writes the chunks of one ``embeddings/`` folder."""

    def __init__(self, directory: str | Path, spec: StoreSpec) -> None:
        self.directory = Path(directory)
        self.spec = spec
        self._mapped: dict[int, np.ndarray] = {}

    @classmethod
    def create_or_resume(cls, directory: str | Path, spec: StoreSpec) -> EmbeddingStore:
        """Open the store for writing; an existing store must have been started with the same spec."""
        directory = Path(directory)
        existing = directory / STORE_FILE
        if existing.exists():
            found = asdict(StageFolder.locate(directory).read(STORE_FILE, StoreSpec))
            if found != asdict(spec):
                differing = sorted(key for key in found if found.get(key) != asdict(spec).get(key))
                raise LyreError(
                    f"{directory}: holds embeddings made with other settings ({', '.join(differing)}); "
                    f"use the same model and recipe to resume, or set {opt('overwrite')} to start again"
                )
        else:
            directory.mkdir(parents=True, exist_ok=True)
            write_json_atomic(existing, asdict(spec))
        return cls(directory, spec)

    @classmethod
    def open(cls, directory: str | Path, manifest: Manifest | None = None) -> EmbeddingStore:
        """The store in ``directory``; its ``store.json`` read through the metadata reader, checked against
        what the manifest (``manifest``: the index's, when the caller has read it) recorded of it."""
        directory = Path(directory)
        if not (directory / STORE_FILE).exists():
            raise LyreError(f"{directory}: no embeddings here; run `lyre index` or `lyre encode` first")
        return cls(directory, StageFolder.locate(directory, manifest).read(STORE_FILE, StoreSpec))

    def _name(self, chunk: int) -> str:
        return f"chunk-{chunk:06d}"

    def vectors_path(self, chunk: int) -> Path:
        return self.directory / f"{self._name(chunk)}.npy"

    def rows_path(self, chunk: int) -> Path:
        return self.directory / f"{self._name(chunk)}.rows.npy"

    def done_path(self, chunk: int) -> Path:
        return self.directory / f"{self._name(chunk)}.done.json"

    def is_complete(self, chunk: int) -> bool:
        return self.done_path(chunk).exists()

    def missing_chunks(self, chunks: list[int] | None = None) -> list[int]:
        candidates = range(self.spec.num_chunks) if chunks is None else chunks
        return [chunk for chunk in candidates if not self.is_complete(chunk)]

    def write_chunk(self, chunk: int, vectors: np.ndarray, record: dict[str, Any] | None = None) -> None:
        """Write one chunk atomically: vectors, then rows, then the completion record."""
        start, stop = self.spec.chunk_bounds(chunk)
        if vectors.shape != (stop - start, self.spec.dim):
            raise ValueError(
                f"chunk {chunk} needs shape {(stop - start, self.spec.dim)}, got {vectors.shape}"
            )
        with atomic_path(self.vectors_path(chunk)) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(vectors, dtype=np.float16))
        with atomic_path(self.rows_path(chunk)) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.arange(start, stop, dtype=np.int64))
        write_json_atomic(self.done_path(chunk), {"chunk": chunk, "rows": [start, stop], **(record or {})})

    def chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, float16 vectors) of a complete chunk, memory-mapped."""
        if not self.is_complete(chunk):
            raise LyreError(
                f"{self.directory}: chunk {chunk} is not complete; rerun the encoding to finish it"
            )
        if chunk not in self._mapped:
            self._mapped[chunk] = np.load(self.vectors_path(chunk), mmap_mode="r")
        return np.load(self.rows_path(chunk)), self._mapped[chunk]

    def iter_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every chunk in row order; refuses an incomplete store instead of silently skipping rows."""
        missing = self.missing_chunks()
        if missing:
            raise LyreError(
                f"{self.directory}: {count(len(missing))} of {count(self.spec.num_chunks, 'chunks')}"
                f" are missing (first: {missing[0]}); finish every {opt('slice_id')} slice, then index again"
            )
        for chunk in range(self.spec.num_chunks):
            yield self.chunk(chunk)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of arbitrary rows (for exact re-scoring), read from the memory-mapped chunks."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.spec.dim), dtype=np.float32)
        chunk_of = rows // self.spec.chunk_rows
        for chunk in np.unique(chunk_of):
            selected = np.flatnonzero(chunk_of == chunk)
            _, vectors = self.chunk(int(chunk))
            out[selected] = vectors[rows[selected] - chunk * self.spec.chunk_rows]
        return out
