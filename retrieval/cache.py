"""Content-keyed caches inside the index folder, so iterating on a search costs only what changed.

Four kinds of work are kept in ``INDEX/cache/cache.sqlite``, each under a key that hashes everything
that decides the result, so an entry is reused only where recomputing would give the same bytes:

- ``vector``: one query's vector; key: the embeddings stage's model fingerprint and recipe, the
  instruction, the query text.
- ``side``: one side's first-stage list of one query (docids and scores, before fusion); key: the records
  of the stages the side reads (their parameters, file hashes and fingerprints), the settings that change
  the list (depth; nprobe, refine and the instruction for the dense side), the query text.
- ``aligned``: one query's two first-stage lists of a hybrid search aligned on their union of documents
  (:mod:`retrieval.fusion.aligned`); key: both sides' keys but the query. A search that changes only
  fusion settings reads these and fuses with array arithmetic.
- ``pair``: one reranker score; key: the reranker's identity (weights fingerprint, template, instruction,
  lengths, device, dtype), the query text, the document id and a hash of the document text it read.

Every key also carries :func:`environment` (host, visible GPUs, library versions): float results can
differ in their last bits between machines or library versions, and a cached run must be byte-identical
to the run this machine would compute. So a second ``lyre search`` that changes only fusion settings or
the rerank depth reads its first stages from here, and scores only the pairs it has not scored before.

The store is SQLite in WAL mode with short transactions (a busy timeout, never a transaction across
model work): concurrent commands on one index read and write it safely. It is bounded: past
``cache_limit_mb`` of values, the least recently used entries are dropped. An index folder where the cache
cannot be written (read-only, full disk, damaged database) searches without it, saying so once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics import progress
from lyre.basics.options import option
from lyre.formats.records import Query, Run
from lyre.retrieval.fusion.aligned import Aligned, docid_array

CACHE_DIR = "cache"
DATABASE = "cache.sqlite"
MIB = 1 << 20
BUSY_TIMEOUT_S = 60.0
"""How long a command waits for another command's write transaction (each lasts milliseconds)."""
EVICT_TO = 0.9
"""Eviction frees down to this fraction of the limit, so a full cache does not evict on every write."""
SQL_CHUNK = 500
"""Keys per ``IN (...)`` statement: below every SQLite build's variable limit."""
VERSIONED_LIBRARIES = ("numpy", "torch", "transformers", "faiss-cpu", "faiss-gpu", "bm25s")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    "key TEXT PRIMARY KEY, size INTEGER NOT NULL, used REAL NOT NULL, value BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_used ON entries (used, size)",
)
"""The values last, so reading a row's size and use never touches its overflow pages."""


@dataclass(frozen=True)
class CacheOptions:
    """Whether a search reuses (and keeps) the work of earlier searches of the same index."""

    no_cache: bool = option(
        False,
        "Neither reuse nor keep query vectors, first-stage lists and reranker scores in INDEX/cache/ "
        "(by default a command reuses what earlier commands on the index computed).",
    )
    cache_limit_mb: int = option(
        2048, "Size limit of INDEX/cache/ in MiB; the least recently used entries go beyond it.", minimum=1
    )


@cache
def environment() -> dict[str, Any]:
    """What besides the inputs can change a float result: the machine, the GPUs visible, the libraries.

    Read without importing torch or faiss (that alone would cost more than a cached search)."""
    versions = {}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia": os.path.exists("/dev/nvidiactl"),
        "versions": versions,
    }


def digest(*parts: Any) -> str:
    """A hash of ``parts`` as JSON (keys sorted): large parts such as stage records are hashed once
    per search rather than once per query."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@cache
def _environment_digest() -> str:
    return digest(environment())


def content_key(kind: str, *parts: Any) -> str:
    """The key of one entry: ``kind`` and a hash of ``parts`` and of :func:`environment`."""
    return f"{kind}:{digest(_environment_digest(), *parts)}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode_list(doc_scores: dict[str, float]) -> bytes:
    """One query's list: its length, the scores as float64 (exact for any score), the docids as JSON."""
    scores = np.fromiter(doc_scores.values(), dtype=np.float64, count=len(doc_scores))
    return struct.pack("<I", len(doc_scores)) + scores.tobytes() + json.dumps(list(doc_scores)).encode()


def decode_list(value: bytes) -> dict[str, float]:
    """The list :func:`encode_list` wrote, in the same order with the same scores."""
    (count,) = struct.unpack_from("<I", value)
    end = 4 + 8 * count
    scores = np.frombuffer(value[4:end], dtype=np.float64).tolist()
    docids = json.loads(value[end:])
    if len(docids) != count:
        raise ValueError("damaged cached list")
    return dict(zip(docids, scores, strict=True))


def encode_aligned(aligned: Aligned) -> bytes | None:
    """One query's aligned lists: sizes, scores (float64), presence, docids joined by newlines (None for
    a docid with a newline, which an index never holds: such a list is not kept)."""
    docids = aligned.docids.tolist()
    text = "\n".join(docids)
    if text.count("\n") != max(len(docids) - 1, 0):
        return None
    header = struct.pack("<II", aligned.runs, len(docids))
    return header + aligned.scores.tobytes() + aligned.present.tobytes() + text.encode("utf-8")


def decode_aligned(value: bytes) -> Aligned:
    """The lists :func:`encode_aligned` wrote, with the same docids, scores and presence."""
    runs, count = struct.unpack_from("<II", value)
    scores_end = 8 + 8 * runs * count
    present_end = scores_end + runs * count
    scores = np.frombuffer(value[8:scores_end], dtype=np.float64).reshape(runs, count)
    present = np.frombuffer(value[scores_end:present_end], dtype=bool).reshape(runs, count)
    docids = value[present_end:].decode("utf-8").split("\n") if count else []
    if len(docids) != count:
        raise ValueError("damaged aligned lists")
    return Aligned(docid_array(docids), scores, present)


class Deferred:
    """Something slow to open (an index, a model), opened on its first use: a search whose work is all
    in the cache never opens it. Attribute access passes through to the opened object."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._opened: Any = None

    def load(self) -> Any:
        if self._opened is None:
            self._opened = self._opener()
        return self._opened

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load(), name)

    @staticmethod
    def now(part: Deferred | None) -> None:
        """Open ``part`` at once (nothing for None)."""
        if part is not None:
            part.load()


class SearchCache:
    """The cache database of one index folder; open it with :meth:`open`.

    Any SQLite error after opening (a full disk, a damaged file) turns the cache off for the rest of the
    command with one status line: the search goes on, computing what it would have read."""

    def __init__(self, path: Path, connection: sqlite3.Connection, limit_bytes: int) -> None:
        self.path = path
        self.connection: sqlite3.Connection | None = connection
        self.limit_bytes = limit_bytes
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    @classmethod
    def open(cls, index_dir: Path, options: CacheOptions) -> SearchCache | None:
        """The cache of ``index_dir``, created on first use; None when turned off or not writable."""
        if options.no_cache:
            return None
        path = index_dir / CACHE_DIR / DATABASE
        try:
            path.parent.mkdir(exist_ok=True)
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table only
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                with _transaction(connection):
                    for statement in _SCHEMA:
                        connection.execute(statement)
            except BaseException:
                connection.close()
                raise
        except (OSError, sqlite3.Error) as error:
            progress.say(f"cache off: {path} cannot be written ({_reason(error)}); searching without it")
            return None
        return cls(path, connection, options.cache_limit_mb * MIB)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _failed(self, error: sqlite3.Error) -> None:
        progress.say(f"cache off: {self.path} failed ({_reason(error)}); going on without it")
        self.close()

    def get(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The values stored under ``keys`` (absent keys left out); each hit counts as a use."""
        if self.connection is None or not keys:
            return {}
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        try:
            for chunk in _chunks(unique):
                marks = ",".join("?" * len(chunk))
                rows = self.connection.execute(
                    f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk
                )
                found.update((key, bytes(value)) for key, value in rows)
            if found:
                now = time.time()
                with _transaction(self.connection):
                    for chunk in _chunks(list(found)):
                        marks = ",".join("?" * len(chunk))
                        self.connection.execute(
                            f"UPDATE entries SET used = ? WHERE key IN ({marks})", [now, *chunk]
                        )
        except sqlite3.Error as error:
            self._failed(error)
            return {}
        return found

    def put(self, items: dict[str, bytes]) -> None:
        """Store ``items`` (key -> value) in one short transaction, then keep the cache under its limit."""
        if self.connection is None or not items:
            return
        now = time.time()
        try:
            with _transaction(self.connection):
                self.connection.executemany(
                    "INSERT OR REPLACE INTO entries (key, size, used, value) VALUES (?, ?, ?, ?)",
                    [(key, len(value), now, value) for key, value in items.items()],
                )
            self._evict()
        except sqlite3.Error as error:
            self._failed(error)

    def _evict(self) -> None:
        """Past the limit, drop the least recently used entries down to ``EVICT_TO`` of it."""
        assert self.connection is not None
        with _transaction(self.connection):
            (total,) = self.connection.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
            if total <= self.limit_bytes:
                return
            goal = total - int(self.limit_bytes * EVICT_TO)
            freed, oldest = 0, []
            for key, size in self.connection.execute("SELECT key, size FROM entries ORDER BY used, key"):
                if freed >= goal:
                    break
                oldest.append(key)
                freed += size
            for chunk in _chunks(oldest):
                self.connection.execute(
                    f"DELETE FROM entries WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
        self.connection.execute("PRAGMA incremental_vacuum")

    def count(self, kind: str, hits: int, misses: int) -> None:
        self.hits[kind] = self.hits.get(kind, 0) + hits
        self.misses[kind] = self.misses.get(kind, 0) + misses

    def summary(self) -> dict[str, Any]:
        """What a run's sidecar records of the cache: where it is and what was reused."""
        return {"path": str(self.path), "hits": dict(self.hits), "misses": dict(self.misses)}


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), SQL_CHUNK):
        yield keys[start : start + SQL_CHUNK]


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error): the write lock is taken at the start,
    so two writers queue on the busy timeout instead of failing halfway."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.connection.execute("COMMIT")
        elif self.connection.in_transaction:
            self.connection.execute("ROLLBACK")


def cached_lists(
    store: SearchCache | None,
    identity: Sequence[Any],
    queries: Sequence[Query],
    compute: Callable[[Sequence[Query]], Run],
) -> Run:
    """One side's run of ``queries``: cached lists where ``store`` has them (``identity``: the side's
    stages and settings), ``compute`` called once for the queries it lacks, whose lists are then kept."""
    if store is None:
        return compute(queries)
    return _per_query(store, "side", identity, queries, compute, encode_list, decode_list)


def cached_aligned(
    store: SearchCache | None,
    identity: Sequence[Any],
    queries: Sequence[Query],
    compute: Callable[[Sequence[Query]], dict[str, Aligned]],
) -> dict[str, Aligned]:
    """Each query's aligned lists of a hybrid search (``identity``: both sides' stages and settings),
    read where ``store`` has them; ``compute`` called once for the queries it lacks, which are then kept."""
    if store is None:
        return compute(queries)
    return _per_query(store, "aligned", identity, queries, compute, encode_aligned, decode_aligned)


def _per_query(
    store: SearchCache,
    kind: str,
    identity: Sequence[Any],
    queries: Sequence[Query],
    compute: Callable[[Sequence[Query]], dict[str, Any]],
    encode: Callable[[Any], bytes | None],
    decode: Callable[[bytes], Any],
) -> dict[str, Any]:
    """Per query: the ``kind`` entry under ``identity`` and its text where kept, else what ``compute``
    (called once, for the queries lacking) makes, then kept (``encode`` None: not kept)."""
    keys = [content_key(kind, *identity, query.text) for query in queries]
    found = store.get(keys)
    values: dict[str, Any] = {}
    missing = []
    for query, key in zip(queries, keys, strict=True):
        value = found.get(key)
        try:
            if value is not None:
                values[query.qid] = decode(value)
        except (ValueError, struct.error, UnicodeDecodeError):  # a damaged entry is computed again
            value = None
        if value is None:
            missing.append(query)
    store.count(kind, len(queries) - len(missing), len(missing))
    if missing:
        computed = compute(missing)
        values.update(computed)
        kept = {content_key(kind, *identity, q.text): encode(computed[q.qid]) for q in missing}
        store.put({key: value for key, value in kept.items() if value is not None})
    return {query.qid: values[query.qid] for query in queries}


def cached_vectors(
    store: SearchCache | None,
    identity: Sequence[Any],
    texts: Sequence[str],
    compute: Callable[[Sequence[str]], np.ndarray],
) -> np.ndarray:
    """Query vectors of ``texts`` (float32 [n, dim]): cached ones read, the others encoded once and kept."""
    if store is None:
        return compute(texts)
    keys = [content_key("vector", *identity, text) for text in texts]
    found = store.get(keys)
    missing = [i for i, key in enumerate(keys) if key not in found]
    store.count("vector", len(texts) - len(missing), len(missing))
    encoded = compute([texts[i] for i in missing]) if missing else None
    rows: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(texts)
    for i, key in enumerate(keys):
        if key in found:
            rows[i] = np.frombuffer(found[key], dtype=np.float32)
    if encoded is not None:
        kept = {}
        for row, i in enumerate(missing):
            rows[i] = np.ascontiguousarray(encoded[row], dtype=np.float32)
            kept[keys[i]] = rows[i].tobytes()
        store.put(kept)
    if len({row.shape for row in rows}) > 1:  # a damaged entry: encode everything afresh
        return compute(texts)
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


@dataclass
class PairLookup:
    """What the cache held of one group's (query, document) pairs: the scores found (float32, in the
    pairs' order; the ``missing`` positions still to fill) and the positions a reranker must score.

    Split from the scoring so a caller that scores elsewhere (worker processes, Ray actors) sends only
    the ``missing`` pairs and fills them in with :meth:`fill` when they come back."""

    scores: np.ndarray
    keys: list[str]
    missing: list[int]

    @property
    def cached(self) -> int:
        return len(self.scores) - len(self.missing)

    def missing_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return [pairs[i] for i in self.missing]

    def fill(self, store: SearchCache | None, computed: np.ndarray) -> np.ndarray:
        """The group's scores with ``computed`` (the ``missing`` pairs' scores, in order) in place; they
        are kept in ``store`` under the keys they were looked up with."""
        computed = np.asarray(computed, dtype=np.float32)
        self.scores[self.missing] = computed
        if store is not None and self.missing:
            store.put({self.keys[i]: computed[row : row + 1].tobytes() for row, i in enumerate(self.missing)})
        return self.scores


def look_up_pairs(
    store: SearchCache | None, identity: str, pairs: Sequence[tuple[str, str]], docids: Sequence[str]
) -> PairLookup:
    """The scores ``store`` holds for ``pairs`` under the reranker ``identity`` (none without a store)."""
    if store is None:
        return PairLookup(np.empty(len(pairs), dtype=np.float32), [], list(range(len(pairs))))
    keys = [
        content_key("pair", identity, query, docid, text_hash(text))
        for (query, text), docid in zip(pairs, docids, strict=True)
    ]
    found = {key: value for key, value in store.get(keys).items() if len(value) == 4}
    missing = [i for i, key in enumerate(keys) if key not in found]
    store.count("pair", len(pairs) - len(missing), len(missing))
    scores = np.empty(len(pairs), dtype=np.float32)
    for i, key in enumerate(keys):
        if key in found:
            scores[i] = np.frombuffer(found[key], dtype=np.float32)[0]
    return PairLookup(scores, keys, missing)


def cached_pair_scores(
    store: SearchCache | None,
    identity: str,
    pairs: Sequence[tuple[str, str]],
    docids: Sequence[str],
    compute: Callable[[Sequence[tuple[str, str]]], np.ndarray],
) -> tuple[np.ndarray, int]:
    """Reranker scores of (query, document) ``pairs`` (float32, in order) and how many were cached; only
    the pairs this reranker (``identity``) has not scored are given to ``compute``."""
    if store is None:
        return np.asarray(compute(pairs), dtype=np.float32), 0
    lookup = look_up_pairs(store, identity, pairs, docids)
    if lookup.missing:
        lookup.fill(store, compute(lookup.missing_pairs(pairs)))
    return lookup.scores, lookup.cached
