"""The docstore: documents as Parquet parts in corpus order; a document's row number is its internal id.

Layout of ``INDEX/docstore/``::

    part-00000.parquet ...   columns docid, title, text; ``rows_per_part`` rows per part (the last fewer),
                             row groups of ``row_group_rows`` rows, zstd
    ids.hash.npy, ids.row.npy  64-bit id hashes, sorted, with their rows (docid -> row lookups)
    docstore.json            row count, part files, part and row-group sizes (:class:`DocstoreMeta`)

Random access needs no scan: fixed part and row-group sizes turn a row number into (part, row group,
offset) by arithmetic, and only the row groups that hold the wanted rows are decoded (small row groups
keep that cheap). Parquet footers are read once per part and cached; parts are memory-mapped. The cost
is about 0.3 ms per row group touched (pyarrow's per-row-group overhead), whatever the store size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.atomic import write_json_atomic
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.basics.resources import write_error
from lyre.formats.corpus import id_hashes
from lyre.formats.records import Document
from lyre.indexes.manifest import DOCSTORE, HOW_TO_BUILD, Manifest, StageFolder

META_NAME = "docstore.json"
FORMAT_VERSION = 1
DEFAULT_ROWS_PER_PART = 131_072
DEFAULT_ROW_GROUP_ROWS = 64
COLUMNS = ("docid", "title", "text")


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name in COLUMNS])


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class DocstorePart:
    """One Parquet part: its file name and its rows."""

    file: str
    rows: int


@dataclass(frozen=True)
class DocstoreMeta:
    """``docstore.json``: what turns a row number into (part, row group, offset) without a scan."""

    format: int
    rows: int
    rows_per_part: int
    row_group_rows: int
    columns: tuple[str, ...]
    parts: tuple[DocstorePart, ...]

    def __post_init__(self) -> None:
        """The arithmetic of :class:`DocStore` holds only for these; anything else is a damaged file."""
        if self.format != FORMAT_VERSION:
            raise ValueError(f"docstore format {self.format}; this lyre reads format {FORMAT_VERSION}")
        if self.row_group_rows < 1 or self.rows_per_part < 1 or self.rows_per_part % self.row_group_rows:
            raise ValueError("rows_per_part must be a positive multiple of row_group_rows")
        if self.columns != COLUMNS:
            raise ValueError(f"columns must be {list(COLUMNS)}")
        full = [part.rows == self.rows_per_part for part in self.parts[:-1]]
        if not all(full) or sum(part.rows for part in self.parts) != self.rows or self.rows < 0:
            held = sum(part.rows for part in self.parts)
            raise ValueError(f"its parts hold {count(held, 'rows')}, not {count(self.rows)}")
        if len({part.file for part in self.parts}) != len(self.parts) or any(
            Path(part.file).name != part.file for part in self.parts
        ):
            raise ValueError("part files must be distinct file names in the docstore folder")


class DocStoreWriter:
    """Appends documents to Parquet parts; keeps only the current flush buffer and the current part's ids.

    ``docids_of`` answers for rows already written, which lets duplicate checks confirm hash matches.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        rows_per_part: int = DEFAULT_ROWS_PER_PART,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        final: str | Path | None = None,
    ) -> None:
        """``final``: where the docstore will end up when ``folder`` is a temporary one; write failures
        name it, since the user never sees the temporary name."""
        if rows_per_part % row_group_rows:
            raise ValueError("rows_per_part must be a multiple of row_group_rows")
        self.folder = Path(folder)
        self.final = Path(final) if final is not None else self.folder
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(self.final, error) from None
        self.rows_per_part = rows_per_part
        self.row_group_rows = row_group_rows
        self._flush_rows = row_group_rows * max(1, min(64, rows_per_part // row_group_rows))
        self._pending: list[Document] = []
        self._part_docids: list[str] = []
        self._parts: list[DocstorePart] = []
        self._writer: Any = None
        self.rows = 0

    def write(self, docs: Sequence[Document]) -> None:
        self._pending.extend(docs)
        self._part_docids.extend(doc.docid for doc in docs)
        self.rows += len(docs)
        while len(self._pending) >= self._flush_rows:
            with self._writing():
                self._flush(self._flush_rows)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed write (pyarrow and numpy raise OSError with the errno on a full disk, a quota or
        a read-only folder) into one line naming the docstore."""
        try:
            yield
        except OSError as error:
            if error.errno:  # pyarrow's text ("Error writing bytes to file. Detail: ...") says no more
                error = OSError(error.errno, os.strerror(error.errno))
            raise write_error(self.final, error) from None

    def _part_room(self) -> int:
        written = len(self._part_docids) - len(self._pending)
        return self.rows_per_part - written

    def _flush(self, limit: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        while self._pending and limit > 0:
            count = min(limit, len(self._pending), self._part_room())
            chunk, self._pending = self._pending[:count], self._pending[count:]
            limit -= count
            if self._writer is None:
                self._writer = pq.ParquetWriter(
                    self.folder / _part_name(len(self._parts)),
                    _schema(),
                    compression="zstd",
                    use_dictionary=False,
                    write_statistics=False,
                )
            table = pa.Table.from_arrays(
                [pa.array(column, pa.string()) for column in zip(*chunk, strict=True)], schema=_schema()
            )
            self._writer.write_table(table, row_group_size=self.row_group_rows)
            if self._part_room() == 0:
                self._close_part()

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        rows = len(self._part_docids) - len(self._pending)
        self._parts.append(DocstorePart(_part_name(len(self._parts)), rows))
        self._part_docids = self._part_docids[rows:]

    def docids_of(self, rows: np.ndarray) -> list[str]:
        """Docids of rows written so far (from memory for the current part, else from its Parquet file)."""
        import pyarrow.parquet as pq

        part_start = len(self._parts) * self.rows_per_part
        result = []
        for row in np.asarray(rows, dtype=np.int64).tolist():
            if row >= part_start:
                result.append(self._part_docids[row - part_start])
                continue
            part, local = divmod(row, self.rows_per_part)
            group, offset = divmod(local, self.row_group_rows)
            table = pq.ParquetFile(self.folder / _part_name(part)).read_row_group(group, columns=["docid"])
            result.append(table.column("docid")[offset].as_py())
        return result

    def close(self, id_index: tuple[np.ndarray, np.ndarray]) -> DocstoreMeta:
        """Flush, write the docid index and ``docstore.json``; returns that metadata."""
        hashes, rows = id_index
        with self._writing():
            self._flush(len(self._pending))
            self._close_part()
            np.save(self.folder / "ids.hash.npy", hashes.astype(np.uint64))
            np.save(self.folder / "ids.row.npy", rows.astype(np.int64))
        meta = DocstoreMeta(
            FORMAT_VERSION, self.rows, self.rows_per_part, self.row_group_rows, COLUMNS, tuple(self._parts)
        )
        write_json_atomic(self.folder / META_NAME, asdict(meta))
        return meta

    def abort(self) -> None:
        """Close the open part after a failure; a second failure while closing it (the disk is still
        full) must not hide the first."""
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None


class DocStore:
    """Read side of the docstore: length, docid <-> row maps, random fetch and streaming batches."""

    def __init__(self, folder: Path, meta: DocstoreMeta) -> None:
        self.folder = folder
        self.meta = meta
        self.rows_per_part = meta.rows_per_part
        self.row_group_rows = meta.row_group_rows
        self._rows = meta.rows
        self._files: dict[int, Any] = {}
        self._docid_column: Any = None

    @classmethod
    def open(cls, folder: str | Path, manifest: Manifest | None = None) -> DocStore:
        """Open ``INDEX/docstore`` or ``INDEX/passages`` (or ``INDEX``, whose docstore/ is then used).
        ``docstore.json`` is read through the metadata reader, checked against what the manifest
        (``manifest``: the index's, when the caller has read it) recorded of it."""
        folder = Path(folder)
        if not (folder / META_NAME).exists() and (folder / DOCSTORE / META_NAME).exists():
            folder = folder / DOCSTORE
        if not (folder / META_NAME).exists():
            raise LyreError(f"{folder}: no docstore here; build one with `{HOW_TO_BUILD[DOCSTORE]}`")
        return cls(folder, StageFolder.locate(folder, manifest).read(META_NAME, DocstoreMeta))

    def __len__(self) -> int:
        return self._rows

    def _file(self, part: int) -> Any:
        import pyarrow.parquet as pq

        handle = self._files.get(part)
        if handle is None:
            path = self.folder / self.meta.parts[part].file
            handle = self._files[part] = pq.ParquetFile(path, memory_map=True)
        return handle

    def _check_rows(self, rows: Any) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self._rows):
            raise IndexError(f"docstore rows must be in 0..{self._rows - 1}")
        return rows

    def _docids(self) -> Any:
        """All docids as one pyarrow ChunkedArray (about 10-20 bytes per document), loaded once."""
        import pyarrow as pa

        if self._docid_column is None:
            chunks = [
                self._file(p).read(columns=["docid"]).column("docid") for p in range(len(self.meta.parts))
            ]
            self._docid_column = pa.chunked_array([c for chunk in chunks for c in chunk.chunks], pa.string())
        return self._docid_column

    def docids(self) -> list[str]:
        """Every docid in row order (a list: for large stores prefer :meth:`docids_of`)."""
        return self._docids().to_pylist()

    def docids_of(self, rows: Any) -> list[str]:
        rows = self._check_rows(rows)
        return self._docids().take(rows).to_pylist()

    def rows_of(self, docids: Sequence[str]) -> np.ndarray:
        """Row of each docid, -1 for unknown ids (hash lookup in ids.hash.npy, confirmed on the real ids)."""
        hashes = np.load(self.folder / "ids.hash.npy", mmap_mode="r")
        stored_rows = np.load(self.folder / "ids.row.npy", mmap_mode="r")
        wanted = id_hashes(list(docids))
        lo = np.searchsorted(hashes, wanted, side="left")
        hi = np.searchsorted(hashes, wanted, side="right")
        result = np.full(len(wanted), -1, dtype=np.int64)
        pairs = [(int(i), int(row)) for i in np.flatnonzero(hi > lo) for row in stored_rows[lo[i] : hi[i]]]
        if pairs:
            found = self.docids_of([row for _, row in pairs])
            for (i, row), docid in zip(pairs, found, strict=True):
                if docid == docids[i]:
                    result[i] = row
        return result

    def fetch(self, rows: Any) -> list[Document]:
        """Documents at ``rows`` (any order, repeats allowed), decoding only the row groups that hold them."""
        import pyarrow as pa

        rows = self._check_rows(rows)
        parts, local = np.divmod(rows, self.rows_per_part)
        groups, offsets = np.divmod(local, self.row_group_rows)
        placed: list[int] = []  # the position in the answer of each document found, part by part
        found: list[Document] = []
        for part in np.unique(parts).tolist():
            mask = parts == part
            wanted = np.unique(groups[mask])
            table = self._file(part).read_row_groups(
                wanted.tolist(), columns=list(COLUMNS), use_threads=False
            )
            positions = np.searchsorted(wanted, groups[mask]) * self.row_group_rows + offsets[mask]
            picked = table.take(pa.array(positions))
            columns = (picked.column(name).to_pylist() for name in COLUMNS)
            found.extend(Document(*doc) for doc in zip(*columns, strict=True))
            placed.extend(np.flatnonzero(mask).tolist())
        return [found[i] for i in np.argsort(placed, kind="stable").tolist()]

    def iter_batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, list[Document]]]:
        """Stream rows ``start..stop`` as (first row, documents) batches of ``batch_size`` (last: fewer)."""
        stop = self._rows if stop is None else min(stop, self._rows)
        row = start
        buffer: list[Document] = []
        first = start
        while row < stop:
            part, local = divmod(row, self.rows_per_part)
            group = local // self.row_group_rows
            part_file = self._file(part)
            row = part * self.rows_per_part + group * self.row_group_rows
            groups = range(group, part_file.num_row_groups)
            for batch in part_file.iter_batches(
                batch_size=max(batch_size, self.row_group_rows),
                row_groups=groups,
                columns=list(COLUMNS),
                use_threads=False,
            ):
                lo, hi = max(start - row, 0), min(stop - row, batch.num_rows)
                if hi > lo:
                    columns = [batch.column(name).slice(lo, hi - lo).to_pylist() for name in COLUMNS]
                    buffer.extend(Document(*doc) for doc in zip(*columns, strict=True))
                row += batch.num_rows
                while len(buffer) >= batch_size:
                    yield first, buffer[:batch_size]
                    buffer = buffer[batch_size:]
                    first += batch_size
                if row >= stop:
                    break
        if buffer:
            yield first, buffer
