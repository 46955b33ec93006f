"""Streaming corpus readers: JSONL(.gz), TSV(.gz), Parquet and BEIR folders, with format and field guessing.

Readers never hold the corpus: they yield small batches of ``(line, Document)`` so memory stays bounded
whatever the corpus size, and every bad record is located as ``file:line`` (for Parquet, ``file:row``).
Duplicate ids are found by :class:`UniqueIds`, which keeps 64-bit hashes in numpy instead of the ids
themselves (a Python set of 10M id strings costs about 1 GB; the hashes cost 16 bytes per document).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from lyre.basics.errors import InputError, LyreError, opt
from lyre.formats.irds import irds_corpus_file, irds_id
from lyre.formats.records import Document

ID_FIELDS = ("_id", "id", "docid", "doc_id", "docno", "pid")
TEXT_FIELDS = ("text", "contents", "body", "content", "passage", "abstract")
TITLE_FIELDS = ("title",)
Where = tuple[str | Path, int | None]
"""Where field names were read, for an :class:`InputError`: the file and its line (None: the file)."""
_WHITESPACE = re.compile(r"\s")
_SKIP_HINT = f"or pass {opt('on_error')} skip to skip such records"
_MAP_COLUMNS = (
    f"map columns with {opt('id_field')}/{opt('title_field')}/{opt('text_field')} "
    "(column numbers, 1-based, as in cut -f)"
)
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
"""What reading a damaged .gz raises: truncated (EOFError), not gzip or a bad CRC (BadGzipFile), corrupt
deflate data (zlib.error)."""


def gzip_error(path: Path, line: int, error: Exception) -> InputError:
    """One line for a damaged .gz file, located at the line being read when the damage was met (the
    lines before it were read correctly)."""
    fix = f"copy or download the file again (`gzip -t {path}` tests it)"
    if isinstance(error, EOFError):
        problem = "the gzip data ends early (the file is truncated)"
    elif isinstance(error, gzip.BadGzipFile) and "Not a gzipped file" in str(error):
        problem = "not gzip data, although the file is read as .gz"
        fix = "rename it without .gz, or compress it with gzip"
    else:
        problem = f"corrupt gzip data ({error})"
    return InputError(path, line, problem, fix)


def json_object(line: str) -> dict[str, Any]:
    """One JSONL line as an object; ``ValueError`` says what is wrong, the caller says where and the fix."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError("line is JSON but not an object")
    return record


@dataclass(frozen=True)
class FieldMapping:
    """Which source field holds the id, the title (None: no title) and the text.

    For TSV files without a header the fields are 1-based column numbers ("1", "2", "3"), as in ``cut -f``.
    """

    id_field: str
    title_field: str | None
    text_field: str

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id_field, "title": self.title_field, "text": self.text_field}

    def describe(self) -> str:
        return f"id={self.id_field} title={self.title_field or '(none)'} text={self.text_field}"


def corpus_file(path: str | Path) -> Path:
    """The file to read for ``path``: the path itself, a BEIR folder's corpus.jsonl(.gz), or the JSONL
    export of an ``irds:`` id's documents (``formats/irds.py``)."""
    if irds_id(path) is not None:
        return irds_corpus_file(path)
    path = Path(path)
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (path / name).is_file():
                return path / name
        raise LyreError(f"{path}: folder has no corpus.jsonl; pass the corpus file itself or a BEIR folder")
    if not path.is_file():
        raise LyreError(f"{path}: no such file or folder; check the corpus path")
    return path


def detect_format(path: str | Path) -> str:
    """The format of a corpus file, from its name, else from its first bytes."""
    path = Path(path)
    name = path.name.lower()
    for suffixes, fmt in (
        ((".jsonl.gz", ".json.gz", ".ndjson.gz"), "jsonl.gz"),
        ((".tsv.gz", ".tsv.gzip"), "tsv.gz"),
        ((".jsonl", ".json", ".ndjson"), "jsonl"),
        ((".tsv", ".tab"), "tsv"),
        ((".parquet", ".pq"), "parquet"),
    ):
        if name.endswith(suffixes):
            return fmt
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    gz = head.startswith(b"\x1f\x8b")
    if gz:
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(4096)
        except GZIP_ERRORS as error:
            raise gzip_error(path, 1, error) from None
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"{":
        return "jsonl.gz" if gz else "jsonl"
    if b"\t" in head.split(b"\n", 1)[0]:
        return "tsv.gz" if gz else "tsv"
    raise LyreError(
        f"{path}: cannot tell the corpus format (not JSONL, TSV or Parquet); "
        "name it .jsonl, .jsonl.gz, .tsv, .tsv.gz or .parquet"
    )


def _pick(
    names: Sequence[str], override: str | None, candidates: Sequence[str], what: str, where: Where
) -> str:
    if override is not None:
        if override not in names:
            raise InputError(
                *where,
                f"no {what} field {override!r} (fields: {', '.join(names)})",
                f"pass {opt(what + '_field')} NAME",
            )
        return override
    for candidate in candidates:
        if candidate in names:
            return candidate
    raise InputError(
        *where,
        f"cannot guess the {what} field (fields: {', '.join(names)})",
        f"pass {opt(what + '_field')} NAME",
    )


def guess_mapping(
    names: Sequence[str],
    *,
    id_field: str | None = None,
    title_field: str | None = None,
    text_field: str | None = None,
    where: Where = ("<corpus>", None),
) -> FieldMapping:
    """Map field names to id/title/text: overrides first, then the usual names (BEIR, Pyserini, MS MARCO)."""
    id_name = _pick(names, id_field, ID_FIELDS, "id", where)
    text_name = _pick(names, text_field, TEXT_FIELDS, "text", where)
    if title_field is not None:
        title_name: str | None = _pick(names, title_field, (), "title", where)
    else:
        title_name = next((n for n in TITLE_FIELDS if n in names and n not in (id_name, text_name)), None)
    return FieldMapping(id_name, title_name, text_name)


class _GzipChunks(io.RawIOBase):
    """A .gz stream read in large blocks that hands over what it decompressed before any damage.

    ``BufferedReader(GzipFile)`` asks for a full 1 MiB block and loses the block when the stream breaks
    inside it, so a truncated file fails at its first line; ``read1`` returns what is there, so every
    complete line before the damage is read and the error names the line actually reached."""

    def __init__(self, gz: gzip.GzipFile) -> None:
        self._gz = gz

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._gz.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _structured(value: Any) -> str | None:
    """``"list"`` or ``"object"`` for a JSON/Parquet value that is not one piece of text, else None.

    Such a value is refused rather than joined: the right separator (paragraphs? sentences? passages
    meant as separate documents?) is the user's choice, and ``str()`` would index its Python repr."""
    if isinstance(value, (list, tuple)):
        return "list"
    return "object" if isinstance(value, dict) else None


class CorpusReader:
    """One pass over a corpus file, yielding checked documents in batches.

    ``skipped`` counts the records skipped per kind when ``on_error="skip"``; with ``"fail"`` the first
    bad record raises :class:`InputError`. Duplicate ids are not checked here (see :class:`UniqueIds`).
    """

    def __init__(
        self, path: Path, fmt: str, mapping: FieldMapping, on_error: str, header_line: int = 0
    ) -> None:
        self.path = path
        self.format = fmt
        self.mapping = mapping
        self.on_error = on_error
        self.skipped: Counter[str] = Counter()
        self._header_line = header_line
        self._raw: BinaryIO | None = None
        self._bytes_read = 0
        self._rows_read = 0
        self._lines_read = 0

    @property
    def size(self) -> tuple[int, str]:
        """Total work for a progress bar: (bytes of the file, "B"), or (rows, "doc") for Parquet."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows, "doc"
        return self.path.stat().st_size, "B"

    def position(self) -> int:
        """Work done so far, in the unit of :attr:`size` (compressed bytes for .gz files)."""
        if self.format == "parquet":
            return self._rows_read
        if self.format.endswith(".gz") and self._raw is not None and not self._raw.closed:
            return self._raw.tell()
        return self._bytes_read

    def problem(self, line: int | None, kind: str, problem: str, fix: str) -> None:
        """Raise for a bad record, or count it when skipping."""
        if self.on_error == "fail":
            raise InputError(self.path, line, problem, fix)
        self.skipped[kind] += 1

    def batches(self, batch_size: int = 4096) -> Iterator[list[tuple[int, Document]]]:
        """Yield lists of (line, document). A bad record raises only after the records before it were
        yielded, so a caller that checks duplicates per batch reports the earliest problem first."""
        batch: list[tuple[int, Document]] = []
        try:
            for item in self._records():
                batch.append(item)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        except InputError:
            if batch:
                yield batch
            raise
        if batch:
            yield batch

    def __iter__(self) -> Iterator[Document]:
        for batch in self.batches():
            for _, doc in batch:
                yield doc

    def _records(self) -> Iterator[tuple[int, Document]]:
        if self.format == "parquet":
            yield from self._parquet_records()
            return
        with open(self.path, "rb") as raw:
            self._raw = raw
            if self.format.endswith(".gz"):
                gz = _GzipChunks(gzip.GzipFile(fileobj=raw))
                handle: BinaryIO = io.BufferedReader(gz, buffer_size=1 << 20)
            else:
                handle = raw
            parse = self._json_record if self.format.startswith("jsonl") else self._tsv_record
            try:
                yield from self._parse_lines(handle, parse)
            except GZIP_ERRORS as error:
                raise gzip_error(self.path, self._lines_read + 1, error) from None

    def _parse_lines(
        self, handle: BinaryIO, parse: Callable[[int, str], Document | None]
    ) -> Iterator[tuple[int, Document]]:
        for number, data in enumerate(handle, start=1):
            self._lines_read = number
            self._bytes_read += len(data)
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            if number == self._header_line:
                continue
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as error:
                self.problem(
                    number,
                    "invalid_utf8",
                    f"invalid UTF-8 (byte {error.start + 1} of the line)",
                    f"re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), {_SKIP_HINT}",
                )
                continue
            if not line.strip():
                continue
            doc = parse(number, line)
            if doc is not None:
                yield number, doc

    def _check_id(self, number: int, docid: str) -> bool:
        if not docid:
            self.problem(number, "missing_id", "record has no id", f"give every record an id, {_SKIP_HINT}")
            return False
        if _WHITESPACE.search(docid):
            self.problem(
                number,
                "whitespace_id",
                f"id {docid!r} contains whitespace (illegal in TREC run files)",
                f"remove whitespace from ids, {_SKIP_HINT}",
            )
            return False
        return True

    def _json_record(self, number: int, line: str) -> Document | None:
        try:
            record = json_object(line)
        except ValueError as error:
            self.problem(number, "malformed", str(error), f"fix the line, {_SKIP_HINT}")
            return None
        mapping = self.mapping
        if not self._texts_are_plain(number, record):
            return None
        docid = _as_text(record.get(mapping.id_field))
        if not self._check_id(number, docid):
            return None
        title = _as_text(record.get(mapping.title_field)) if mapping.title_field else ""
        return Document(docid, title, _as_text(record.get(mapping.text_field)))

    def _texts_are_plain(self, number: int, record: dict[str, Any]) -> bool:
        """False (after raising or counting) when the id, title or text field holds a list or object."""
        mapping = self.mapping
        for role, name in (
            ("id", mapping.id_field),
            ("title", mapping.title_field),
            ("text", mapping.text_field),
        ):
            kind = _structured(record.get(name)) if name else None
            if kind is not None:
                self.problem(
                    number,
                    "non_text_field",
                    f"the {role} field {name!r} is a {kind}, not a string",
                    f"join it into one string first (e.g. jq -c '.{name} |= join(\" \")'), "
                    f"map another field with {opt(role + '_field')}, {_SKIP_HINT}",
                )
                return False
        return True

    def _tsv_record(self, number: int, line: str) -> Document | None:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != self._tsv_columns:
            more = len(fields) > self._tsv_columns
            self.problem(
                number,
                "malformed",
                f"expected {self._tsv_columns} TAB-separated fields, found {len(fields)}",
                (f"remove the TABs inside the text, or {_MAP_COLUMNS}, " if more else "fix the line, ")
                + _SKIP_HINT,
            )
            return None
        mapping = self.mapping
        docid = fields[self._tsv_index[mapping.id_field]]
        if not self._check_id(number, docid):
            return None
        title = fields[self._tsv_index[mapping.title_field]] if mapping.title_field else ""
        return Document(docid, title, fields[self._tsv_index[mapping.text_field]])

    def set_tsv_columns(self, names: Sequence[str]) -> None:
        self._tsv_columns = len(names)
        self._tsv_index = {name: i for i, name in enumerate(names)}

    def _parquet_records(self) -> Iterator[tuple[int, Document]]:
        import pyarrow.parquet as pq

        mapping = self.mapping
        columns = [c for c in (mapping.id_field, mapping.title_field, mapping.text_field) if c]
        number = 0
        for batch in pq.ParquetFile(self.path).iter_batches(
            batch_size=4096, columns=list(dict.fromkeys(columns))
        ):
            ids = batch.column(mapping.id_field).to_pylist()
            texts = batch.column(mapping.text_field).to_pylist()
            titles = batch.column(mapping.title_field).to_pylist() if mapping.title_field else [""] * len(ids)
            for docid, title, text in zip(ids, titles, texts, strict=True):
                number += 1
                self._rows_read = number
                if not self._texts_are_plain(
                    number,
                    {mapping.id_field: docid, mapping.title_field or "": title, mapping.text_field: text},
                ):
                    continue
                docid = _as_text(docid)
                if self._check_id(number, docid):
                    yield number, Document(docid, _as_text(title), _as_text(text))


def _first_line(path: Path, fmt: str) -> tuple[int, str | None]:
    """The first non-blank line and its number (None for an empty file), for guessing fields."""
    opener = gzip.open if fmt.endswith(".gz") else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, data in enumerate(handle, start=1):
                data = data.removeprefix(b"\xef\xbb\xbf") if number == 1 else data
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(path, number, "invalid UTF-8", "re-encode the file as UTF-8") from None
                if line.strip():
                    return number, line.rstrip("\r\n")
    except GZIP_ERRORS as error:
        raise gzip_error(path, number + 1, error) from None
    return 0, None


def open_corpus(
    path: str | Path,
    *,
    id_field: str | None = None,
    title_field: str | None = None,
    text_field: str | None = None,
    on_error: str = "fail",
) -> CorpusReader:
    """A reader for a corpus file or BEIR folder, with its format and field mapping already guessed.

    The mapping is guessed from the first record (JSONL), the header or the column count (TSV), or the
    schema (Parquet); explicit fields override the guess. ``reader.mapping`` is what will be used.
    """
    if on_error not in ("fail", "skip"):
        raise LyreError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    file = corpus_file(path)
    fmt = detect_format(file)
    overrides = {"id_field": id_field, "title_field": title_field, "text_field": text_field}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        names = pq.ParquetFile(file).schema_arrow.names
        mapping = guess_mapping(names, **overrides, where=(file, None))
        return CorpusReader(file, fmt, mapping, on_error)
    number, line = _first_line(file, fmt)
    if line is None:
        raise InputError(file, None, "the corpus is empty", "pass a file with one document per line")
    if fmt.startswith("jsonl"):
        try:
            record = json_object(line)
        except ValueError as error:
            raise InputError(file, number, str(error), "fix the first record") from None
        mapping = guess_mapping(list(record), **overrides, where=(file, number))
        return CorpusReader(file, fmt, mapping, on_error)
    fields = line.split("\t")
    header = fields[0].strip().lower() in ID_FIELDS and any(f.strip().lower() in TEXT_FIELDS for f in fields)
    if header:
        names = [f.strip() for f in fields]
        mapping = guess_mapping(names, **overrides, where=(file, number))
    else:
        names = [str(i) for i in range(1, len(fields) + 1)]
        if len(fields) not in (2, 3) and text_field is None:
            raise InputError(
                file,
                number,
                f"{len(fields)} TAB-separated columns; expected id<TAB>text or id<TAB>title<TAB>text",
                _MAP_COLUMNS,
            )
        default_title = "2" if len(fields) == 3 else None
        mapping = FieldMapping(
            _pick(names, id_field or "1", (), "id", (file, number)),
            _pick(names, title_field, (), "title", (file, number)) if title_field else default_title,
            _pick(names, text_field or names[-1], (), "text", (file, number)),
        )
    reader = CorpusReader(file, fmt, mapping, on_error, header_line=number if header else 0)
    reader.set_tsv_columns(names)
    return reader


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of ids (FNV-1a over UTF-8 bytes, splitmix64 finaliser), vectorised in numpy.

    Stable across processes (unlike ``hash()``), so the docstore can save them and look ids up later.
    """
    if not ids:
        return np.empty(0, dtype=np.uint64)
    encoded = np.array([i.encode("utf-8") for i in ids], dtype=np.bytes_)
    width = encoded.dtype.itemsize
    matrix = encoded.view(np.uint8).reshape(len(ids), width)
    lengths = np.char.str_len(encoded)
    hashes = np.full(len(ids), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):
            stepped = (hashes ^ matrix[:, j]) * _FNV_PRIME
            hashes = np.where(lengths > j, stepped, hashes)
        hashes ^= hashes >> np.uint64(30)
        hashes *= np.uint64(0xBF58476D1CE4E5B9)
        hashes ^= hashes >> np.uint64(27)
        hashes *= np.uint64(0x94D049BB133111EB)
        hashes ^= hashes >> np.uint64(31)
    return hashes


class UniqueIds:
    """The ids seen so far, as sorted 64-bit hashes with the row that first used each.

    Approach: hashes live in a few sorted numpy levels whose sizes grow geometrically (a log-structured
    merge), so adding a batch and looking a batch up cost O(batch * log N) without holding id strings.
    A hash match is only a candidate: it is confirmed by comparing the real ids, fetched through
    ``docids_of_rows`` (the docstore being written), so a 64-bit collision never rejects a distinct id.
    Memory: 16 bytes per document (hash + row), e.g. 160 MB for 10M documents.
    """

    def __init__(self, docids_of_rows: Callable[[np.ndarray], list[str]]) -> None:
        self._docids_of_rows = docids_of_rows
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(h) for h, _ in self._levels)

    def _earlier_rows(self, ids: Sequence[str], hashes: np.ndarray) -> np.ndarray:
        earlier = np.full(len(ids), -1, dtype=np.int64)
        candidates: list[tuple[int, int]] = []
        for level_hashes, level_rows in self._levels:
            lo = np.searchsorted(level_hashes, hashes, side="left")
            hi = np.searchsorted(level_hashes, hashes, side="right")
            for i in np.flatnonzero(hi > lo):
                candidates.extend((int(i), int(row)) for row in level_rows[lo[i] : hi[i]])
        if candidates:
            found = self._docids_of_rows(np.array([row for _, row in candidates], dtype=np.int64))
            for (position, row), docid in zip(candidates, found, strict=True):
                if docid == ids[position]:
                    earlier[position] = row
        return earlier

    def check(self, ids: Sequence[str], first_row: int) -> np.ndarray:
        """For each id, the row of its earlier occurrence, or -1 if it is new.

        New ids are added with consecutive rows from ``first_row`` (duplicates take no row).
        """
        hashes = id_hashes(ids)
        earlier = self._earlier_rows(ids, hashes)
        in_batch: dict[str, int] = {}
        keep = np.zeros(len(ids), dtype=bool)
        rows = np.empty(len(ids), dtype=np.int64)
        row = first_row
        for i, docid in enumerate(ids):
            if earlier[i] >= 0:
                continue
            if docid in in_batch:
                earlier[i] = in_batch[docid]
                continue
            in_batch[docid] = rows[i] = row
            keep[i] = True
            row += 1
        if keep.any():
            self._add(hashes[keep], rows[keep])
        return earlier

    def _add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        self._levels.append((hashes[order], rows[order]))
        while len(self._levels) > 1 and len(self._levels[-2][0]) <= 2 * len(self._levels[-1][0]):
            (h1, r1), (h2, r2) = self._levels.pop(-2), self._levels.pop()
            hashes, rows = np.concatenate([h1, h2]), np.concatenate([r1, r2])
            order = np.argsort(hashes, kind="stable")
            self._levels.append((hashes[order], rows[order]))

    def sorted_index(self) -> tuple[np.ndarray, np.ndarray]:
        """All (hashes, rows), sorted by hash: the docstore saves them to map docids to rows."""
        if not self._levels:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
        hashes = np.concatenate([h for h, _ in self._levels])
        rows = np.concatenate([r for _, r in self._levels])
        order = np.argsort(hashes, kind="stable")
        return hashes[order], rows[order]
