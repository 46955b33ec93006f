"""``irds:`` ids: read a corpus, queries or qrels through ir_datasets (``irds:beir/scifact/test``).

The corpus, query and qrels readers accept such an id wherever they accept a path, so every command
does. ir_datasets is an optional extra (``pip install 'lychee-retrieval[irds]'``). lyre reads only
what ir_datasets already has under ``IR_DATASETS_HOME``, or what it can fetch itself; when it cannot (no
network), one line says how to fetch the data on a connected machine.

What was read is recorded by :func:`source_record`: the id, ir_datasets' version and a sha256 of the
records themselves (queries and qrels as ``qid<TAB>...`` lines; the corpus as the JSONL file lyre
exports it to), so a run's provenance says exactly which data it saw, whatever the package stored.

A corpus is exported once to ``IR_DATASETS_HOME/lyre/<id>/corpus-ir_datasets-<version>.jsonl`` (``_id``,
``title``, ``text``), which the ordinary JSONL reader then streams: ingest keeps its bounded memory,
its hashing and its "same corpus" check for every dataset ir_datasets knows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.atomic import atomic_path
from lyre.basics.errors import LyreError
from lyre.basics.provenance import sha256_file
from lyre.formats.records import Qrel, Query

IRDS_PREFIX = "irds:"
INSTALL_HINT = "pip install 'lychee-retrieval[irds]'"
_KINDS = ("docs", "queries", "qrels")
_digests: dict[tuple[str, str], tuple[str, int]] = {}
"""(id, kind) -> (sha256 of what was read, record count), filled as records are read."""


def irds_id(source: str | Path | None) -> str | None:
    """The dataset id of an ``irds:`` source (``beir/scifact/test``), or None for an ordinary path."""
    text = str(source) if source is not None else ""
    return text[len(IRDS_PREFIX) :] if text.startswith(IRDS_PREFIX) else None


def _dataset_id(source: str | Path) -> str:
    """The dataset id of ``source`` (an ``irds:`` id, or a bare id given to a reader); ``irds:`` alone is a
    one-line error that shows it as typed."""
    dataset_id = irds_id(source)
    if dataset_id is None:
        dataset_id = str(source)
    if not dataset_id.strip():
        raise LyreError(
            f"{str(source)!r} names no dataset; write the id after {IRDS_PREFIX}, e.g. "
            f"{IRDS_PREFIX}beir/scifact/test (see https://ir-datasets.com for the ids)"
        )
    return dataset_id


def _ir_datasets() -> Any:
    try:
        import ir_datasets
    except ImportError:
        raise LyreError(f"irds: ids need the ir_datasets package; {INSTALL_HINT}") from None
    return ir_datasets


def _dataset(dataset_id: str, kind: str) -> Any:
    ir_datasets = _ir_datasets()
    try:
        with _library_output():
            dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise LyreError(
            f"{IRDS_PREFIX}{dataset_id}: ir_datasets {ir_datasets.__version__} has no such dataset; "
            "see https://ir-datasets.com for the ids"
        ) from None
    if not getattr(dataset, f"has_{kind}")():
        raise LyreError(
            f"{IRDS_PREFIX}{dataset_id}: the dataset has no {kind}; pick the id of a subset that has "
            f"(e.g. beir/scifact/test for queries and qrels, beir/scifact for documents)"
        )
    return dataset


@contextlib.contextmanager
def _library_output() -> Iterator[None]:
    """ir_datasets' own ``[INFO]`` lines and bars, dropped under ``--quiet`` (its failures still raise,
    and become one line)."""
    if not progress.is_quiet():
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


@contextlib.contextmanager
def _fetch_hint(dataset_id: str, kind: str) -> Iterator[None]:
    """Turn ir_datasets' failure to find or download the data into one line saying how to get it."""
    try:
        with _library_output():
            yield
    except (LyreError, KeyboardInterrupt):
        raise
    except Exception as error:
        home = _ir_datasets().util.home_path()
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise LyreError(
            f"{IRDS_PREFIX}{dataset_id}: ir_datasets cannot read its {kind} here ({reason}); on a connected "
            f"machine run `ir_datasets export {dataset_id} {kind} > /dev/null` and copy its "
            f"IR_DATASETS_HOME folder to {home} (or set IR_DATASETS_HOME to the copy)"
        ) from None


def _query_text(query: Any, topic_field: str) -> str:
    """TREC-style topics (title, description) follow ``topic_field``; other queries give their text."""
    if hasattr(query, "title") and hasattr(query, "description"):
        parts = {"title": [query.title], "desc": [query.description]}
        return " ".join(parts.get(topic_field, [query.title, query.description]))
    text = getattr(query, "text", None)
    return text if isinstance(text, str) else query.default_text()


def read_irds_queries(source: str | Path, topic_field: str = "title") -> list[Query]:
    """The queries of an ``irds:`` id in the dataset's order, whitespace collapsed as in query files."""
    dataset_id = _dataset_id(source)
    dataset = _dataset(dataset_id, "queries")
    digest = hashlib.sha256()
    queries: list[Query] = []
    seen: set[str] = set()
    with _fetch_hint(dataset_id, "queries"):
        for query in dataset.queries_iter():
            text = " ".join(_query_text(query, topic_field).split())
            if query.query_id in seen or not text:
                problem = "a duplicate id" if query.query_id in seen else "an empty text"
                raise LyreError(f"{IRDS_PREFIX}{dataset_id}: query {query.query_id!r} has {problem}")
            seen.add(query.query_id)
            queries.append(Query(query.query_id, text))
            digest.update(f"{query.query_id}\t{text}\n".encode())
    _digests[dataset_id, "queries"] = (digest.hexdigest(), len(queries))
    return queries


def read_irds_qrels(source: str | Path) -> list[Qrel]:
    """The judgments of an ``irds:`` id in the dataset's order."""
    dataset_id = _dataset_id(source)
    dataset = _dataset(dataset_id, "qrels")
    digest = hashlib.sha256()
    qrels: list[Qrel] = []
    with _fetch_hint(dataset_id, "qrels"):
        for qrel in dataset.qrels_iter():
            qrels.append(Qrel(qrel.query_id, qrel.doc_id, int(qrel.relevance)))
            digest.update(f"{qrel.query_id}\t{qrel.doc_id}\t{int(qrel.relevance)}\n".encode())
    if not qrels:
        raise LyreError(f"{IRDS_PREFIX}{dataset_id}: the dataset has no judgments")
    _digests[dataset_id, "qrels"] = (digest.hexdigest(), len(qrels))
    return qrels


def irds_corpus_file(source: str | Path) -> Path:
    """The JSONL export of an ``irds:`` id's documents, written on first use (see the module docstring)."""
    dataset_id = _dataset_id(source)
    ir_datasets = _ir_datasets()
    dataset = _dataset(dataset_id, "docs")
    folder = ir_datasets.util.home_path() / "lyre" / dataset_id
    path = folder / f"corpus-ir_datasets-{ir_datasets.__version__}.jsonl"
    if not path.is_file():
        with (
            _fetch_hint(dataset_id, "docs"),
            atomic_path(path) as tmp,
            open(tmp, "w", encoding="utf-8") as out,
        ):
            bar = progress.bar(dataset.docs_count(), f"export {IRDS_PREFIX}{dataset_id}")
            with bar:
                for doc in dataset.docs_iter():
                    text = getattr(doc, "text", None)
                    record = {
                        "_id": doc.doc_id,
                        "title": getattr(doc, "title", "") or "",
                        "text": text if isinstance(text, str) else doc.default_text(),
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    bar.update(1)
    if (dataset_id, "docs") not in _digests:
        with open(path, "rb") as handle:
            count = sum(1 for _ in handle)
        _digests[dataset_id, "docs"] = (sha256_file(path), count)
    return path


def source_record(source: str | Path, kind: str) -> dict[str, Any]:
    """Provenance of an input: ``{"path", "sha256"}`` for a file; for an ``irds:`` id its id, the
    ir_datasets version and the sha256 and count of the records read (``kind``: docs, queries, qrels)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    dataset_id = irds_id(source)
    if dataset_id is None:
        return {"path": str(source), "sha256": sha256_file(source)}
    if (dataset_id, kind) not in _digests:
        readers: dict[str, Callable[[str | Path], object]] = {
            "docs": irds_corpus_file, "queries": read_irds_queries, "qrels": read_irds_qrels
        }  # fmt: skip
        readers[kind](source)  # reading the records is what records their digest
    digest, count = _digests[dataset_id, kind]
    return {
        "irds": dataset_id,
        "ir_datasets": _ir_datasets().__version__,
        "sha256": digest,
        "records": count,
    }
