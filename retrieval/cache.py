"""Content-keyed caches inside the index folder, so iterating on a search costs only what changed.

Four kinds of work are kept in ``INDEX/cache/cache.sqlite``, each under a key that hashes everything
that decides the result, so an entry is reused only where recomputing would give the same bytes:

- ``vector``: one query's vector; key: the embeddings stage's recorded model fingerprint (weights, config,
  tokenizer and pooling files: :func:`models.loading.model_fingerprint`) and recipe, the instruction, the
  query text. The folder is checked against that fingerprint before any entry is read.
- ``side``: one side's first-stage list of one query (docids and scores, before fusion); key: the records
  of the stages the side reads (their parameters, file hashes and fingerprints: the index's content), the
  settings that change the list (depth; nprobe, refine and the instruction for the dense side), the
  query text.
- ``aligned``: one query's two first-stage lists of a hybrid search aligned on their union of documents
  (:mod:`retrieval.fusion.aligned`); key: both sides' keys but the query. A search that changes only
  fusion settings reads these and fuses with array arithmetic.
- ``pair``: one reranker score; key: the reranker's identity (fingerprint of its files, template,
  instruction, lengths, device, dtype), the query text, the document id and a hash of the document text
  it read.
- ``expansion``: one query's expanded query made by BM25-side pseudo-relevance feedback (its terms and
  weights, :mod:`retrieval.feedback`); key: the records of the stages the feedback reads (docstore,
  passages, BM25) and the feedback method with every setting, the query text. A side list made with
  feedback is a ``side`` entry whose key also holds that side's feedback settings (a search without
  feedback keeps the keys it always had).

Besides, ``model-folder`` remembers where the query model was found (a hint: the folder found is checked
against the recorded fingerprint before use).

Every key also carries :func:`environment` (host, visible GPUs, library versions): float results can
differ in their last bits between machines or library versions, and a cached run must be byte-identical
to the run this machine would compute. So a second ``lyre search`` that changes only fusion settings or
the rerank depth reads its first stages from here, and scores only the pairs it has not scored before.

The store itself (:mod:`indexes.cache_store`: SQLite, the checksum every entry carries and every read
checks, the size limit, ``lyre index --verify``) lies with the index folder; this module decides what
each key hashes and how values are encoded. A value that does not decode is dropped like a damaged one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, Generic, TypeVar

import numpy as np
from lyre.basics.numbers import count
from lyre.formats.records import Query, Run
from lyre.indexes.cache_store import CACHE_DIR, DATABASE, MIB, CacheOptions, SearchCache
from lyre.retrieval.fusion.aligned import Aligned

__all__ = [
    "CACHE_DIR",
    "DATABASE",
    "MIB",
    "CacheOptions",
    "Deferred",
    "PairLookup",
    "SearchCache",
    "cached_aligned",
    "cached_expansions",
    "cached_lists",
    "cached_pair_scores",
    "cached_vectors",
    "content_key",
    "digest",
    "environment",
    "look_up_pairs",
    "reuse_line",
    "text_hash",
]

VERSIONED_LIBRARIES = ("numpy", "torch", "transformers", "faiss-cpu", "faiss-gpu", "bm25s")
DECODE_ERRORS = (ValueError, struct.error, UnicodeDecodeError)
"""What decoding a value that is not what its kind encodes raises."""
T = TypeVar("T")


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
    # Already in docid order, so only indexed and compared from here: an object array holds the very
    # strings decoded (numpy's unicode type would copy each in and out again, a third of a cached search).
    return Aligned(np.array(docids, dtype=object), scores, present)


class Deferred(Generic[T]):
    """Something slow to open (an index, a model), opened on its first use: a search whose work is all
    in the cache never opens it. Attribute access passes through to the opened object."""

    def __init__(self, opener: Callable[[], T]) -> None:
        self._opener = opener
        self._opened: T | None = None

    def load(self) -> T:
        if self._opened is None:
            self._opened = self._opener()
        return self._opened

    @property
    def is_open(self) -> bool:
        """Whether it was opened (a search answered from the cache opens nothing)."""
        return self._opened is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load(), name)

    @staticmethod
    def now(part: Any) -> None:
        """Open ``part`` at once (nothing for None)."""
        if part is not None:
            part.load()


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


def encode_terms(terms: dict[str, float]) -> bytes:
    """One expanded query: its (term, weight) pairs in order, as JSON (a float's repr reads back exactly)."""
    return json.dumps(list(terms.items()), ensure_ascii=False).encode("utf-8")


def decode_terms(value: bytes) -> dict[str, float]:
    """The expanded query :func:`encode_terms` wrote, in the same order with the same weights."""
    pairs = json.loads(value)
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], float)
        for pair in pairs
    ):
        raise ValueError("damaged cached expansion")
    return {term: weight for term, weight in pairs}


def cached_expansions(
    store: SearchCache | None,
    identity: Sequence[Any],
    queries: Sequence[Query],
    compute: Callable[[Sequence[Query]], dict[str, dict[str, float]]],
) -> dict[str, dict[str, float]]:
    """Each query's expanded query (``identity``: the stages feedback reads and its settings), read where
    ``store`` has it; ``compute`` called once for the queries it lacks, whose expansions are then kept."""
    if store is None:
        return compute(queries)
    return _per_query(store, "expansion", identity, queries, compute, encode_terms, decode_terms)


def _read(store: SearchCache, keys: Sequence[str], decode: Callable[[bytes], Any]) -> dict[str, Any]:
    """The decoded values ``store`` holds under ``keys``; one that does not decode is dropped from the
    store as damaged (and computed again by the caller, as a missing one)."""
    values: dict[str, Any] = {}
    undecodable = []
    for key, value in store.get(keys).items():
        try:
            values[key] = decode(value)
        except DECODE_ERRORS:
            undecodable.append(key)
    store.discard(undecodable)
    return values


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
    found = _read(store, keys, decode)
    values = {query.qid: found[key] for query, key in zip(queries, keys, strict=True) if key in found}
    missing = [query for query in queries if query.qid not in values]
    store.count(kind, len(queries) - len(missing), len(missing))
    if missing:
        computed = compute(missing)
        values.update(computed)
        kept = {content_key(kind, *identity, q.text): encode(computed[q.qid]) for q in missing}
        store.put({key: value for key, value in kept.items() if value is not None})
    return {query.qid: values[query.qid] for query in queries}


def decode_vector(value: bytes) -> np.ndarray:
    return np.frombuffer(value, dtype=np.float32)


def decode_score(value: bytes) -> float:
    """One reranker score, kept as its four float32 bytes."""
    if len(value) != 4:
        raise ValueError("damaged cached score")
    return float(np.frombuffer(value, dtype=np.float32)[0])


def cached_vectors(
    store: SearchCache | None,
    identity: Sequence[Any],
    texts: Sequence[str],
    compute: Callable[[Sequence[str]], np.ndarray],
) -> np.ndarray:
    """Query vectors of ``texts`` (float32 [n, dim]): cached ones read, the others encoded once and kept
    (every entry under one ``identity``, the model's, has its dimension)."""
    if store is None:
        return compute(texts)
    keys = [content_key("vector", *identity, text) for text in texts]
    found = _read(store, keys, decode_vector)
    missing = [i for i, key in enumerate(keys) if key not in found]
    store.count("vector", len(texts) - len(missing), len(missing))
    rows: dict[int, np.ndarray] = {i: found[key] for i, key in enumerate(keys) if key in found}
    if missing:
        encoded = compute([texts[i] for i in missing])
        kept = {}
        for row, i in enumerate(missing):
            rows[i] = np.ascontiguousarray(encoded[row], dtype=np.float32)
            kept[keys[i]] = rows[i].tobytes()
        store.put(kept)
    return np.stack([rows[i] for i in range(len(keys))]) if rows else np.zeros((0, 0), dtype=np.float32)


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
    found = _read(store, keys, decode_score)
    missing = [i for i, key in enumerate(keys) if key not in found]
    store.count("pair", len(pairs) - len(missing), len(missing))
    scores = np.empty(len(pairs), dtype=np.float32)
    for i, key in enumerate(keys):
        if key in found:
            scores[i] = found[key]
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


KIND_NAMES = {
    "vector": "query vectors",
    "side": "first-stage lists",
    "aligned": "aligned hybrid lists",
    "pair": "reranker scores",
    "expansion": "feedback expansions",
}
"""What each kind of entry is called in messages (a kind not named here is called by its key word)."""


def reuse_line(store: SearchCache) -> str:
    """What a command read from the cache and computed, one clause per kind of entry:
    ``cache: 30 aligned hybrid lists read, 0 computed; 30 query vectors read, 0 computed``."""
    kinds = [kind for kind in KIND_NAMES if kind in store.hits or kind in store.misses]
    kinds += sorted(kind for kind in {*store.hits, *store.misses} if kind not in KIND_NAMES)
    clauses = [
        f"{count(store.hits.get(kind, 0), KIND_NAMES.get(kind, kind))} read, "
        f"{count(store.misses.get(kind, 0))} computed"
        for kind in kinds
    ]
    return "cache: " + ("; ".join(clauses) if clauses else "nothing looked up")
