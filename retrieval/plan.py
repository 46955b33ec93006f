"""A search plan: every setting checked, then everything a search needs opened once.

``SearchPlan.open`` does the work in the order that makes mistakes cheap: first the settings alone (ranges,
choices, the fusion method and its parameters through the registry, the tag, depth against k), then the
index's manifest, read once (the stages the mode needs must be complete), then whether the reranker's
weights are there, and only then the slow parts: the docstore, BM25, the dense index with the query
encoder recorded for it, and the reranker. :meth:`SearchPlan.search` is then a function of the queries
alone, so a plan can serve many batches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from basics.errors import LyreError, opt
from formats.records import Query, Run
from formats.runs import rank_order
from indexes.manifest import (
    BM25,
    DENSE,
    DOCSTORE,
    EMBEDDINGS,
    HOW_TO_BUILD,
    MANIFEST_NAME,
    complete_records,
    read_manifest,
)
from retrieval import fusion
from retrieval.options import RerankOptions, SearchOptions, check_search_options
from retrieval.rerank import rerank
from retrieval.rerank_parts import GroupScores


def complete_stages(index_dir: Path, manifest: dict[str, Any], needed: Sequence[str]) -> None:
    """Refuse an index whose ``needed`` stages are not all complete, saying how to finish them (the
    manifest already read, so a search reads it once)."""
    if not (index_dir / MANIFEST_NAME).exists():
        raise LyreError(
            f"{index_dir}: not a lyre index (no {MANIFEST_NAME}); build one with `{HOW_TO_BUILD[DOCSTORE]}`"
        )
    complete = complete_records(manifest)
    for stage in needed:
        if stage not in complete:
            raise LyreError(
                f"{index_dir}: the {stage} stage is missing or incomplete; "
                f"run `{HOW_TO_BUILD[stage]}` to build or finish it"
            )


def needed_stages(mode: str) -> tuple[str, ...]:
    sides = {"bm25": (BM25,), "dense": (DENSE, EMBEDDINGS), "hybrid": (BM25, DENSE, EMBEDDINGS)}[mode]
    return (DOCSTORE, *sides)


def fusion_arguments(options: SearchOptions) -> tuple[fusion.FusionMethod, dict[str, Any]]:
    """The hybrid's fusion method and its arguments (BM25 first, dense second), checked by the registry."""
    method = fusion.method(options.fusion)
    arguments = method.arguments(options, weights=(1.0 - options.weight, options.weight))
    method.check(arguments)
    return method, arguments


def run_tag(options: SearchOptions, rerank_options: RerankOptions) -> str:
    """A tag that says how the run was made, e.g. ``lyre.hybrid-rrf60.rerank100``."""
    if options.tag:
        return options.tag
    first = options.mode
    if options.mode == "hybrid":
        method, arguments = fusion_arguments(options)
        first += "-" + method.label(arguments)
    depth = rerank_options.rerank_depth
    return f"lyre.{first}" + (f".rerank{depth}" if depth > 0 else "")


def cut(run: Run, k: int, remove_query_id: bool = False) -> Run:
    """Keep the top k of every query in evaluated order, optionally without the query's own id."""
    return {
        qid: dict([(d, s) for d, s in rank_order(docs) if not (remove_query_id and d == qid)][:k])
        for qid, docs in run.items()
    }


def _rows_to_run(qids: Sequence[str], rows: np.ndarray, scores: np.ndarray, store: Any) -> Run:
    """Turn (rows, scores) matrices into a Run, dropping the -1 rows that mark 'no hit'."""
    run: Run = {}
    for qid, query_rows, query_scores in zip(qids, rows, scores, strict=True):
        hit = query_rows >= 0
        run[qid] = dict(zip(store.docids_of(query_rows[hit]), query_scores[hit].tolist(), strict=True))
    return run


@dataclass(frozen=True)
class LoadedReranker:
    """A reranker with the identity its saved group scores are keyed by (weights fingerprint, settings)."""

    model: Any
    identity: str
    settings: dict[str, Any]


def locate_reranker(options: RerankOptions, *, optional: bool) -> Path:
    """The reranker's folder, found without loading it; ``optional``: the message offers to turn it off."""
    from models.loading import resolve_model

    try:
        return resolve_model(options.rerank_model, option=opt("rerank_model"))
    except LyreError as error:
        if not optional:
            raise
        message = error.args[0]
        raise LyreError(f"{message}; or pass {opt('rerank_depth')} 0 to search without reranking") from None


def load_reranker(folder: Path, options: RerankOptions) -> LoadedReranker:
    """The reranker in ``folder``; its identity covers every setting that changes a score, and the
    weights' fingerprint, so saved group scores are reused only for the very same reranker."""
    from models.loading import model_fingerprint
    from models.reranker import Reranker

    model = Reranker.from_pretrained(
        folder, template=options.rerank_template, instruction=options.instruction
    )
    settings = {
        **model.settings.to_dict(),
        "model": options.rerank_model,
        "folder": str(folder),
        "fingerprint": model_fingerprint(folder),
    }
    return LoadedReranker(model, json.dumps(settings, sort_keys=True), settings)


def check_rerank_template(options: RerankOptions) -> None:
    """A custom template must have its slots before any model is loaded."""
    from models.rerank_templates import get_template

    get_template(options.rerank_template)


@dataclass
class SearchPlan:
    """One index opened for searching with fixed settings; build it with :meth:`open`."""

    index_dir: Path
    options: SearchOptions
    rerank_options: RerankOptions
    manifest: dict[str, Any]
    store: Any
    bm25: Any
    dense: Any
    embedder: Any
    reranker: LoadedReranker | None

    @classmethod
    def open(cls, index_dir: Path, options: SearchOptions, rerank_options: RerankOptions) -> SearchPlan:
        check_plan_options(options, rerank_options)
        manifest = read_manifest(index_dir)
        complete_stages(index_dir, manifest, needed_stages(options.mode))
        reranking = rerank_options.rerank_depth > 0
        folder = locate_reranker(rerank_options, optional=True) if reranking else None
        from indexes.docstore import DocStore

        store = DocStore.open(index_dir / DOCSTORE)
        bm25 = dense = embedder = None
        if BM25 in needed_stages(options.mode):
            from indexes.bm25 import BM25Index

            bm25 = BM25Index.load(index_dir / BM25)
        if DENSE in needed_stages(options.mode):
            from indexes.dense import DenseIndex
            from indexes.query_encoder import load_index_embedder

            embedder = load_index_embedder(index_dir)
            dense = DenseIndex.open(index_dir)
        reranker = load_reranker(folder, rerank_options) if folder is not None else None
        return cls(index_dir, options, rerank_options, manifest, store, bm25, dense, embedder, reranker)

    @property
    def tag(self) -> str:
        return run_tag(self.options, self.rerank_options)

    def index_summary(self) -> dict[str, Any]:
        """What a run's sidecar says about the index: its path and every stage's record."""
        return {"path": str(self.index_dir.resolve()), "stages": complete_records(self.manifest)}

    def first_stage(self, queries: Sequence[Query]) -> Run:
        """BM25, dense, or both fused; every query present (maybe empty), cut to k."""
        options = self.options
        qids = [query.qid for query in queries]
        texts = [query.text for query in queries]
        sides: list[Run] = []
        if self.bm25 is not None:
            rows, scores = self.bm25.search(texts, options.depth)
            sides.append(_rows_to_run(qids, rows, scores, self.store))
        if self.dense is not None:
            vectors = self.embedder.encode_queries(texts, task=self.rerank_options.instruction)
            rows, scores = self.dense.search(
                vectors, options.depth, nprobe=options.nprobe, refine=options.refine
            )
            sides.append(_rows_to_run(qids, rows, scores, self.store))
        if len(sides) == 2:
            method, arguments = fusion_arguments(options)
            first = method.fuse(sides, arguments)
        else:
            first = sides[0]
        return cut({qid: first.get(qid, {}) for qid in qids}, options.k, options.remove_query_id)

    def search(self, queries: Sequence[Query], parts: GroupScores | None = None) -> Run:
        """The run of ``queries``: first stage, then the reranked head spliced above the tail.

        ``parts``: where finished rerank groups are kept, so an interrupted search resumes."""
        run = self.first_stage(queries)
        if self.reranker is None:
            return run
        depth = self.rerank_options.rerank_depth
        return rerank(
            run, queries, self.store, self.reranker.model, depth, parts=parts, identity=self.reranker.identity
        )


def check_plan_options(options: SearchOptions, rerank_options: RerankOptions) -> None:
    """Every setting that needs no file, in one place: options, fusion through the registry, template."""
    from basics.options import check_options

    check_search_options(options)
    check_options(rerank_options)
    fusion_arguments(options)
    if rerank_options.rerank_depth > 0:
        check_rerank_template(rerank_options)


__all__ = ["SearchPlan", "check_plan_options", "cut", "run_tag"]
