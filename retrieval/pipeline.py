"""The search pipeline: BM25 and dense first stages, fusion, reranking with a splice, TREC run out.

Every stage works in the same currency, a :data:`~formats.records.Run` (qid -> docid -> score), so a
stage can be fed from a run file as well (``lyre rerank``, ``lyre fuse``), which is what lets users bring
their own first stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from basics import progress
from basics.errors import LyreError
from formats.records import Query, Run, document_text
from indexes.manifest import read_manifest, require_stage

MODES = ("bm25", "dense", "hybrid")
DENSE_HOW = "lyre index CORPUS --out INDEX --embed-model MODEL"


@dataclass(frozen=True)
class SearchSettings:
    """Everything that decides a run's content; recorded verbatim in the run's sidecar."""

    mode: str = "hybrid"
    k: int = 1000
    depth: int = 1000
    fusion: str = "rrf"
    rrf_k: int = 60
    normalization: str = "min_max"
    dense_weight: float = 0.5
    rerank_model: str | None = None
    rerank_depth: int = 100
    rerank_template: str = "lychee"
    instruction: str | None = None
    nprobe: int | None = None
    refine: int | None = None
    remove_query_id: bool = False
    tag: str | None = None

    def run_tag(self) -> str:
        """A tag that says how the run was made, e.g. ``lyre.hybrid-rrf60.rerank100``."""
        if self.tag:
            return self.tag
        first = self.mode
        if self.mode == "hybrid":
            first += f"-rrf{self.rrf_k}" if self.fusion == "rrf" else f"-linear{self.dense_weight:g}"
        return f"lyre.{first}" + (f".rerank{self.rerank_depth}" if self.rerank_model else "")


def _rows_to_run(qids: Sequence[str], rows: np.ndarray, scores: np.ndarray, store: Any) -> Run:
    """Turn (rows, scores) matrices into a Run, dropping the -1 rows that mark 'no hit'."""
    run: Run = {}
    for qid, query_rows, query_scores in zip(qids, rows, scores, strict=True):
        hit = query_rows >= 0
        docids = store.docids_of(query_rows[hit])
        run[qid] = dict(zip(docids, query_scores[hit].tolist(), strict=True))
    return run


def bm25_run(index_dir: Path, queries: Sequence[Query], depth: int, store: Any) -> Run:
    from indexes.bm25 import BM25Index

    require_stage(index_dir, "bm25")
    rows, scores = BM25Index.load(index_dir / "bm25").search([query.text for query in queries], depth)
    return _rows_to_run([query.qid for query in queries], rows, scores, store)


def dense_run(index_dir: Path, queries: Sequence[Query], settings: SearchSettings, store: Any) -> Run:
    from indexes.dense import DenseIndex
    from indexes.encode import load_index_embedder

    require_stage(index_dir, "dense", how=DENSE_HOW)
    embedder = load_index_embedder(index_dir)
    vectors = embedder.encode_queries([query.text for query in queries], task=settings.instruction)
    dense = DenseIndex.open(index_dir)
    rows, scores = dense.search(vectors, settings.depth, nprobe=settings.nprobe, refine=settings.refine)
    return _rows_to_run([query.qid for query in queries], rows, scores, store)


def fuse_runs(runs: Sequence[Run], settings: SearchSettings, weights: Sequence[float] | None = None) -> Run:
    """Fuse through the registry, which validates the method and passes each only its own parameters."""
    from retrieval.fusion import fuse

    params = {
        "rrf": {"k": settings.rrf_k},
        "linear": {"weights": weights, "normalization": settings.normalization},
    }
    return fuse(runs, settings.fusion, **params.get(settings.fusion, {}))


def cut(run: Run, k: int, remove_query_id: bool = False) -> Run:
    """Keep the top k of every query in evaluated order, optionally without the query's own id."""
    from formats.runs import rank_order

    return {
        qid: dict(
            [(docid, score) for docid, score in rank_order(docs) if not (remove_query_id and docid == qid)][
                :k
            ]
        )
        for qid, docs in run.items()
    }


RERANK_GROUP_PAIRS = 8192
"""Pairs prepared at a time: token ids and texts of a group are held in memory, so reranking 10k queries
x 100 documents stays bounded; groups are large enough that token-budget batches still mix queries."""


def _query_groups(heads: dict[str, list[str]], max_pairs: int) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    pairs = 0
    for qid, head in heads.items():
        if pairs and pairs + len(head) > max_pairs:
            groups.append([])
            pairs = 0
        groups[-1].append(qid)
        pairs += len(head)
    return groups


def rerank(run: Run, queries: Sequence[Query], store: Any, reranker: Any, depth: int) -> Run:
    """Rerank the top ``depth`` of each query and splice the untouched tail below them.

    Queries go to the reranker in groups of about :data:`RERANK_GROUP_PAIRS` pairs, so its token-budget
    batches mix queries (full batches even when some queries have few candidates) while memory stays
    bounded by one group.
    """
    from formats.runs import rank_order
    from retrieval.splice import splice

    texts_by_qid = {query.qid: query.text for query in queries}
    ordered = {qid: rank_order(docs) for qid, docs in run.items() if qid in texts_by_qid}
    heads = {qid: [docid for docid, _ in ranking[:depth]] for qid, ranking in ordered.items()}
    reranked: Run = {}
    with progress.bar(sum(map(len, heads.values())), "rerank", unit="pair") as bar:
        for group in _query_groups(heads, RERANK_GROUP_PAIRS):
            docids = [docid for qid in group for docid in heads[qid]]
            rows = store.rows_of(docids)
            if (rows < 0).any():
                unknown = docids[int(np.flatnonzero(rows < 0)[0])]
                raise LyreError(
                    f"document {unknown!r} of the run is not in the index; rerank with the index it came from"
                )
            documents = iter(store.fetch(rows))
            pairs = [(texts_by_qid[qid], document_text(next(documents))) for qid in group for _ in heads[qid]]
            scores = iter(reranker.score_pairs(pairs, bar=bar).tolist())
            for qid in group:
                reranked[qid] = dict(splice(ordered[qid], {docid: next(scores) for docid in heads[qid]}))
    return reranked


def prepare(index_dir: Path, settings: SearchSettings) -> Any:
    """Check everything the settings need before any work, and return the loaded reranker (or None).

    Cheap checks first (mode, index stages), then the reranker: a missing model must stop the command
    before minutes of first-stage search, not after.
    """
    if settings.mode not in MODES:
        raise LyreError(f"--mode {settings.mode!r} is not known; use one of {', '.join(MODES)}")
    require_stage(index_dir, "docstore")
    if settings.mode in ("bm25", "hybrid"):
        require_stage(index_dir, "bm25")
    if settings.mode in ("dense", "hybrid"):
        require_stage(index_dir, "dense", how=DENSE_HOW)
    if not settings.rerank_model or settings.rerank_depth <= 0:
        return None
    try:
        return load_reranker(settings.rerank_model, settings)
    except LyreError as error:
        raise LyreError(f"{error}; or pass --rerank-depth 0 to search without reranking") from None


def search(index_dir: Path, queries: Sequence[Query], settings: SearchSettings, reranker: Any = None) -> Run:
    """The whole pipeline for a batch of queries, returned in memory (``reranker``: from :func:`prepare`)."""
    from indexes.docstore import DocStore

    if reranker is None:
        reranker = prepare(index_dir, settings)
    store = DocStore.open(index_dir / "docstore")
    sides: list[Run] = []
    if settings.mode in ("bm25", "hybrid"):
        sides.append(bm25_run(index_dir, queries, settings.depth, store))
    if settings.mode in ("dense", "hybrid"):
        sides.append(dense_run(index_dir, queries, settings, store))
    weights = (1.0 - settings.dense_weight, settings.dense_weight) if len(sides) == 2 else None
    first = fuse_runs(sides, settings, weights) if len(sides) == 2 else sides[0]
    for query in queries:
        first.setdefault(query.qid, {})
    run = cut(first, settings.k, settings.remove_query_id)
    if reranker is not None:
        run = rerank(run, queries, store, reranker, settings.rerank_depth)
    return run


def load_reranker(model: str, settings: SearchSettings) -> Any:
    from models.reranker import Reranker

    return Reranker.from_pretrained(
        model, template=settings.rerank_template, instruction=settings.instruction
    )


def _index_summary(index_dir: Path) -> dict[str, Any]:
    """What the run's sidecar says about the index: every complete stage's record, minus bulky fields."""
    stages = read_manifest(index_dir)["stages"]
    return {"path": str(index_dir.resolve()), "stages": stages}


def _load_queries(queries_path: Path, qrels: Path | None, topic_field: str) -> list[Query]:
    from formats.qrels import read_qrels
    from formats.queries import read_queries

    judged = {qrel.qid for qrel in read_qrels(qrels)} if qrels else None
    queries = read_queries(queries_path, topic_field=topic_field, only_ids=judged)
    if not queries:
        raise LyreError(f"{queries_path}: no queries to search (after filtering by --qrels); check the ids")
    return queries


def _write(out: Path, run: Run, tag: str, meta: dict[str, Any], started: float) -> str:
    from formats.runs import write_run

    write_run(out, run, tag=tag, meta=meta)
    lines = sum(len(docs) for docs in run.values())
    return f"wrote {out}: {len(run)} queries, {lines} lines, tag {tag}, {time.perf_counter() - started:.1f} s"


def search_to_run(
    index_dir: Path,
    queries_path: Path,
    out: Path,
    settings: SearchSettings,
    *,
    qrels: Path | None = None,
    topic_field: str = "title",
) -> str:
    """``lyre search``: read queries, run the pipeline, write the run and its sidecar; return a summary."""
    from basics.provenance import sha256_file

    started = time.perf_counter()
    queries = _load_queries(queries_path, qrels, topic_field)
    reranker = prepare(index_dir, settings)
    progress.say(f"searching {len(queries)} queries ({settings.run_tag()})")
    run = search(index_dir, queries, settings, reranker)
    meta = {
        "settings": asdict(settings),
        "reranker": reranker.settings.to_dict() if reranker is not None else None,
        "query_file": {"path": str(queries_path), "sha256": sha256_file(queries_path), "count": len(queries)},
        "qrels_filter": str(qrels) if qrels else None,
        "index": _index_summary(index_dir),
    }
    return _write(out, run, settings.run_tag(), meta, started)


def rerank_run_file(
    index_dir: Path,
    queries_path: Path,
    run_path: Path,
    out: Path,
    *,
    model: str,
    depth: int,
    template: str,
    instruction: str | None,
    topic_field: str,
    tag: str | None,
) -> str:
    """``lyre rerank``: rerank the top ``depth`` of an existing run file."""
    from basics.provenance import sha256_file
    from formats.runs import read_run
    from indexes.docstore import DocStore

    started = time.perf_counter()
    run = read_run(run_path)
    queries = [query for query in _load_queries(queries_path, None, topic_field) if query.qid in run]
    settings = SearchSettings(
        rerank_model=model, rerank_depth=depth, rerank_template=template, instruction=instruction
    )
    reranker = load_reranker(model, settings)
    reranked = rerank(run, queries, DocStore.open(index_dir / "docstore"), reranker, depth)
    tag = tag or f"{run_path.stem}.rerank{depth}"
    meta = {
        "reranked_run": {"path": str(run_path), "sha256": sha256_file(run_path)},
        "settings": {"rerank_depth": depth},
        "reranker": reranker.settings.to_dict(),
        "index": _index_summary(index_dir),
    }
    return _write(out, reranked, tag, meta, started)


def fuse_run_files(
    run_paths: Sequence[Path],
    out: Path,
    *,
    fusion: str,
    rrf_k: int,
    normalization: str,
    weights: Sequence[float] | None,
    k: int,
    tag: str | None,
) -> str:
    """``lyre fuse``: fuse existing runs with the same fusion code the pipeline uses."""
    from basics.provenance import sha256_file
    from formats.runs import read_run

    if len(run_paths) < 2:
        raise LyreError("lyre fuse needs at least two run files")
    if weights is not None and len(weights) != len(run_paths):
        raise LyreError(f"--weights has {len(weights)} values for {len(run_paths)} runs; give one per run")
    started = time.perf_counter()
    settings = SearchSettings(fusion=fusion, rrf_k=rrf_k, normalization=normalization)
    fused = cut(fuse_runs([read_run(path) for path in run_paths], settings, weights), k)
    tag = tag or f"lyre.fuse-{fusion}"
    meta = {
        "inputs": [{"path": str(path), "sha256": sha256_file(path)} for path in run_paths],
        "settings": {
            "fusion": fusion,
            "rrf_k": rrf_k,
            "normalization": normalization,
            "weights": weights,
            "k": k,
        },
    }
    return _write(out, fused, tag, meta, started)
