"""A search plan: every setting checked, then everything a search needs opened once.

``SearchPlan.open`` does the work in the order that makes mistakes cheap: first the settings alone (ranges,
choices, the fusion method and its parameters through the registry, the tag, depth against k), then the
index's manifest, read once (the stages the mode needs must be complete), then whether the reranker's
weights are there, and only then the slow parts: the docstore, BM25, the dense index with the query
encoder recorded for it, and the reranker. :meth:`SearchPlan.search` is then a function of the queries
alone, so a plan can serve many batches.

Each side may search twice: with pseudo-relevance feedback (:mod:`retrieval.feedback`), its first search's
top documents make a second query (BM25: an expanded, weighted query; dense: a moved query vector), and the
side's list is the second search's. Everything after (fusion, passages' aggregation, reranking) takes that
list as it takes a plain one; its cache entries are keyed by the feedback settings too.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from lyre.basics.declared import check_options
from lyre.basics.errors import LyreError, opt
from lyre.formats.records import Query, Run
from lyre.formats.runs import ranked_columns
from lyre.indexes.bm25_format import FREQUENCIES_SINCE
from lyre.indexes.bm25_search import BM25Index
from lyre.indexes.dense_search import DenseIndex
from lyre.indexes.docstore import DocStore
from lyre.indexes.manifest import (
    BM25,
    DENSE,
    DOCSTORE,
    EMBEDDINGS,
    PASSAGES,
    complete_records,
    read_manifest,
)
from lyre.indexes.open_index import OpenIndex, require_complete
from lyre.indexes.query_encoder import checked_model_folder, load_index_embedder
from lyre.models.loading import model_fingerprint, resolve_model
from lyre.models.rerank_templates import get_template
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import (
    CacheOptions,
    Deferred,
    SearchCache,
    cached_aligned,
    cached_expansions,
    cached_lists,
    cached_vectors,
    content_key,
    digest,
)
from lyre.retrieval.feedback import feedback_settings, term_method, vector_method
from lyre.retrieval.feedback.rounds import expanded_queries, moved_vectors
from lyre.retrieval.fusion.aligned import Aligned, align
from lyre.retrieval.options import RerankOptions, SearchOptions, check_search_options
from lyre.retrieval.passage_search import PassageSearch, search_passage_index
from lyre.retrieval.plan_parts import Bm25Searcher, DenseSearcher, DocumentStore, QueryEncoder
from lyre.retrieval.query_checks import check_queries
from lyre.retrieval.rerank import rerank
from lyre.retrieval.rerank_parts import GroupScores
from lyre.retrieval.rerank_workers import check_engine, device_kind, open_reranker, release
from lyre.retrieval.run_tags import fusion_arguments, run_tag
from lyre.retrieval.sizes import fit_to_index

T = TypeVar("T")
Plan = TypeVar("Plan", bound="SearchPlan")
"""A :class:`SearchPlan` or subclass: what :meth:`SearchPlan.open` returns when called on it."""
Expansions = dict[str, dict[str, float]]
"""Each query's expanded query: ``{qid: {term: weight}}``, heaviest term first."""


def needed_stages(mode: str) -> tuple[str, ...]:
    """The stages a search in ``mode`` reads (a passage index's passages come on top, where built)."""
    sides = {"bm25": (BM25,), "dense": (DENSE, EMBEDDINGS), "hybrid": (BM25, DENSE, EMBEDDINGS)}[mode]
    return (DOCSTORE, *sides)


def top_k(run: Run, k: int, remove_query_id: bool = False) -> Run:
    """Keep the top k of every query in evaluated order (``formats.runs.rank_order``: score, then docid, both
    descending), optionally without the query's own id. A heap finds a few of many (``lyre tune`` cuts
    at the measure's depth once per setting); a sort is faster when most are kept. Both compare
    (score, docid) pairs made by ``zip``: faster than a key function (a search cuts ~450k entries)."""
    top: Run = {}
    for qid, docs in run.items():
        if remove_query_id and qid in docs:
            docs = {docid: score for docid, score in docs.items() if docid != qid}
        pairs = zip(docs.values(), docs, strict=True)
        ranked = heapq.nlargest(k, pairs) if k * 8 < len(docs) else sorted(pairs, reverse=True)[:k]
        top[qid] = {docid: score for score, docid in ranked}
    return top


def _aligned(queries: Sequence[Query], sides: list[Run]) -> dict[str, Aligned]:
    """Each query's lists of the two sides aligned (a side without the query lends an empty list)."""
    return {query.qid: align([side.get(query.qid, {}) for side in sides]) for query in queries}


def _rows_to_run(qids: Sequence[str], rows: np.ndarray, scores: np.ndarray, store: DocumentStore) -> Run:
    """Turn (rows, scores) matrices into a Run in evaluated order (ties by docid, which an index does not
    know), dropping the -1 rows that mark 'no hit': lists kept in that order (and so cached in it) are
    taken as they are by fusion and the run writer (``formats.runs.ranked_columns``)."""
    run: Run = {}
    for qid, query_rows, query_scores in zip(qids, rows, scores, strict=True):
        hit = query_rows >= 0
        found = zip(store.docids_of(query_rows[hit]), query_scores[hit].tolist(), strict=True)
        docids, ranked = ranked_columns(dict(found))
        run[qid] = dict(zip(docids, ranked, strict=True))
    return run


@dataclass(frozen=True)
class LoadedReranker:
    """A reranker with the identity its saved group scores and cached pair scores are keyed by (the
    fingerprint of its weights, config and tokenizer files, and its settings)."""

    model: Any
    identity: str
    settings: dict[str, Any]

    def close(self) -> None:
        """Stop the reranker's worker processes or Ray actors, if it has any."""
        release(self.model)


def locate_reranker(options: RerankOptions, *, optional: bool) -> Path:
    """The reranker's folder, found without loading it; ``optional``: the message offers to turn it off."""
    try:
        return resolve_model(options.rerank_model, option=opt("rerank_model"))
    except LyreError as error:
        if not optional:
            raise
        message = error.args[0]
        raise LyreError(f"{message}; or pass {opt('rerank_depth')} 0 to search without reranking") from None


def load_reranker(folder: Path, options: RerankOptions) -> LoadedReranker:
    """The reranker in ``folder``; its identity covers every setting that changes a score (template,
    instruction, lengths, device kind, dtype) and the fingerprint of the files that do (weights, config,
    tokenizer: :func:`models.loading.model_fingerprint`), so saved group scores and cached pair scores are
    reused only for the very same reranker."""
    model = open_reranker(folder, options)  # in this process, or replicas on every GPU / Ray (engine)
    settings = {
        **model.settings.to_dict(),
        "device": device_kind(model.settings.device),
        "model": options.rerank_model,
        "folder": str(folder),
        "fingerprint": model_fingerprint(folder),
    }
    return LoadedReranker(model, json.dumps(settings, sort_keys=True), settings)


def check_rerank_template(options: RerankOptions) -> None:
    """A custom template must have its slots, and the engine its GPUs, before any model is loaded."""
    get_template(options.rerank_template)
    check_engine(options)


@dataclass
class SearchPlan:
    """One index opened for searching with fixed settings; build it with :meth:`open`."""

    index_dir: Path
    options: SearchOptions
    rerank_options: RerankOptions
    manifest: dict[str, Any]
    store: DocumentStore
    """The docstore, or a passage index's passage store (opened on first use)."""
    bm25: Bm25Searcher | None
    """None: the mode searches no BM25 (each part is opened on first use)."""
    dense: DenseSearcher | None
    embedder: QueryEncoder | None
    reranker: LoadedReranker | None
    cache: SearchCache | None = None
    """Query vectors, first-stage lists and reranker scores of earlier searches (:mod:`retrieval.cache`)."""
    passages: PassageSearch | None = None
    """How a passage index is searched (None: a document index); ``store`` is then the passage store."""
    query_model_checked: bool = False
    """Whether :meth:`_check_query_model` found the query model unchanged (once per plan)."""
    queries_checked: bool = False
    """Whether :func:`retrieval.query_checks.check_queries` ran (memory, BM25 terms; once per plan)."""
    expansions_made: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    """The expanded queries BM25 feedback made since the last :meth:`search` began, by cache key (so the
    sidecar's record of them costs no second feedback round); shared by the plans ``replace`` makes."""

    @classmethod
    def open(
        cls: type[Plan],
        index_dir: Path,
        options: SearchOptions,
        rerank_options: RerankOptions,
        cache: CacheOptions | None = None,
        aggregation: AggregationOptions | None = None,
        opened: OpenIndex | None = None,
    ) -> Plan:
        """``cache``: where given and on, earlier work is reused; the docstore, BM25, the dense index and
        the query encoder are then opened only when something is not in the cache. ``aggregation``: how a
        passage index answers (``retrieval/passage_search.py``); refused on a document index.
        ``opened``: the index as :func:`indexes.open_index.open_for_search` read and checked it under the
        read lock (``lyre search``), used as it is; without it the manifest is read here, unlocked."""
        check_plan_options(options, rerank_options)
        if opened is not None:
            manifest = opened.manifest
        else:
            manifest = read_manifest(index_dir)
            require_complete(index_dir, manifest, needed_stages(options.mode))
        check_index_feedback(index_dir, manifest, options)
        passages = PassageSearch.open(index_dir, manifest, options.mode, aggregation or AggregationOptions())
        options = fit_to_index(index_dir, manifest, options, passages)  # depth, k, refine, nprobe capped
        reranking = rerank_options.rerank_depth > 0
        folder = locate_reranker(rerank_options, optional=True) if reranking else None

        typed = opened.typed if opened is not None else None  # the files are checked against its records
        store_dir = index_dir / (DOCSTORE if passages is None else PASSAGES)
        store = Deferred(lambda: DocStore.open(store_dir, typed))
        bm25: Bm25Searcher | None = None
        dense: DenseSearcher | None = None
        embedder: QueryEncoder | None = None
        if BM25 in needed_stages(options.mode):
            bm25 = Deferred(lambda: BM25Index.load(index_dir / BM25, manifest=typed))
        if DENSE in needed_stages(options.mode):
            # The manifest read above already found both stages complete: neither reads it again.
            records = complete_records(manifest)
            embedder = Deferred(lambda: load_index_embedder(index_dir, embeddings=records[EMBEDDINGS]))
            dense = Deferred(lambda: DenseIndex.open(index_dir, checked=True, manifest=typed))
        if cache is None or cache.no_cache:
            for part in (store, bm25, dense, embedder):
                Deferred.now(part)  # without a cache everything is needed: opened here, errors first
        reranker = load_reranker(folder, rerank_options) if folder is not None else None
        found = SearchCache.open(index_dir, cache) if cache is not None else None
        parts = (store, bm25, dense, embedder, reranker, found, passages)
        return cls(index_dir, options, rerank_options, manifest, *parts)

    @property
    def hybrid(self) -> bool:
        """Whether the search fuses two sides (BM25 and dense)."""
        return self.bm25 is not None and self.dense is not None

    @property
    def tag(self) -> str:
        return run_tag(self)

    def index_summary(self) -> dict[str, Any]:
        """What a run's sidecar says about the index: its path and every stage's record."""
        return {"path": str(self.index_dir.resolve()), "stages": complete_records(self.manifest)}

    def first_stage(self, queries: Sequence[Query]) -> Run:
        """BM25, dense, or both fused; every query present (maybe empty), cut to k."""
        if self.passages is not None:
            return self.passage_first_stage(queries, keep_passages=False)[0]
        if self.hybrid:
            return self.fuse_aligned(queries, self.aligned_lists(queries), self.options)
        return self.fuse(queries, self.side_runs(queries), self.options)

    def passage_first_stage(self, queries: Sequence[Query], keep_passages: bool) -> tuple[Run, Run | None]:
        """Passage index: the run and, with ``keep_passages``, the fused passage list the reranker
        chooses passages from (:func:`retrieval.passage_search.search_passage_index`)."""
        if self.passages is None:
            raise LyreError(f"{self.index_dir}: a document index has no passages to search")
        options = self.options
        return search_passage_index(
            self.passages,
            lambda depth: self.side_runs(queries, replace(options, depth=depth)),
            lambda runs, k: self.fuse(queries, runs, replace(options, k=k)),
            options.depth,
            options.k,
            keep_passages,
        )

    def bm25_stages(self) -> str:
        """A digest of the records of the stages BM25 reads (and its feedback: the store's texts)."""
        records = complete_records(self.manifest)
        return digest(records[DOCSTORE], records.get(PASSAGES), records[BM25])

    def side_identities(self, options: SearchOptions) -> list[list[Any]]:
        """What decides each side's lists (BM25 first), the key of its cache entries with the query text:
        the records of the stages it reads, the settings that change the list, and the side's feedback
        settings where it has feedback (a side without keeps the key it had before feedback existed)."""
        records = complete_records(self.manifest)
        feedback = feedback_settings(options)
        identities: list[list[Any]] = []
        if self.bm25 is not None:
            identities.append([self.bm25_stages(), options.depth, *_present(feedback.get("bm25"))])
        if self.dense is not None:
            stages = digest(records[DOCSTORE], records.get(PASSAGES), records[EMBEDDINGS], records[DENSE])
            instruction = self.rerank_options.instruction
            settings = [stages, options.depth, options.nprobe, options.refine, instruction]
            identities.append([*settings, *_present(feedback.get("dense"))])
        return identities

    def side_runs(self, queries: Sequence[Query], options: SearchOptions | None = None) -> list[Run]:
        """Each side's lists before fusion (BM25 first), read from the cache where it has them."""
        options = options or self.options
        identities = iter(self.side_identities(options))
        sides: list[Run] = []
        if self.bm25 is not None:
            compute_bm25 = lambda todo: self._bm25_run(todo, options)  # noqa: E731
            sides.append(cached_lists(self.cache, next(identities), queries, compute_bm25))
        if self.dense is not None:
            self._check_query_model()
            compute_dense = lambda todo: self._dense_run(todo, options)  # noqa: E731
            sides.append(cached_lists(self.cache, next(identities), queries, compute_dense))
        return sides

    def aligned_lists(
        self, queries: Sequence[Query], options: SearchOptions | None = None
    ) -> dict[str, Aligned]:
        """A hybrid search's two lists of each query aligned on their documents
        (:mod:`retrieval.fusion.aligned`): read from the cache where it has them, else made from the
        sides (themselves read from the cache where it has them)."""
        options = options or self.options
        self._check_query_model()

        def compute(todo: Sequence[Query]) -> dict[str, Aligned]:
            return _aligned(todo, self.side_runs(todo, options))

        return cached_aligned(self.cache, self.side_identities(options), queries, compute)

    def _bm25_run(self, queries: Sequence[Query], options: SearchOptions) -> Run:
        bm25 = self._opened(self.bm25)
        if term_method(options.prf) is None:
            rows, scores = bm25.search([query.text for query in queries], options.depth)
        else:
            expanded = self.term_expansions(queries, options)
            rows, scores = bm25.search_weighted([expanded[query.qid] for query in queries], options.depth)
        return _rows_to_run([query.qid for query in queries], rows, scores, self.store)

    def term_expansions(self, queries: Sequence[Query], options: SearchOptions) -> Expansions:
        """Each query's expanded query under ``options``' BM25 feedback: made in this search already, read
        from the cache, or made now (:func:`retrieval.feedback.rounds.expanded_queries`)."""
        method = term_method(options.prf)
        if method is None:
            return {}
        settings = method.settings(options)
        identity = [self.bm25_stages(), {"method": method.name, **settings}]
        keys = {query.qid: content_key("expansion", *identity, query.text) for query in queries}
        todo = [query for query in queries if keys[query.qid] not in self.expansions_made]
        if todo:

            def compute(missing: Sequence[Query]) -> Expansions:
                return expanded_queries(self._opened(self.bm25), self.store, missing, method, settings)

            made = cached_expansions(self.cache, identity, todo, compute)
            self.expansions_made.update({keys[query.qid]: made[query.qid] for query in todo})
        return {query.qid: self.expansions_made[keys[query.qid]] for query in queries}

    def _dense_run(self, queries: Sequence[Query], options: SearchOptions) -> Run:
        dense, embedder = self._opened(self.dense), self._opened(self.embedder)
        instruction = self.rerank_options.instruction
        params = complete_records(self.manifest)[EMBEDDINGS]["params"]
        vectors = cached_vectors(
            self.cache,
            [params.get("model_fingerprint"), params.get("recipe"), instruction],
            [query.text for query in queries],
            lambda texts: embedder.encode_queries(texts, task=instruction),
        )
        method = vector_method(options.dense_prf)
        if method is not None:
            settings = method.settings(options)
            vectors = moved_vectors(dense, vectors, method, settings, options.nprobe, options.refine)
        rows, scores = dense.search(vectors, options.depth, nprobe=options.nprobe, refine=options.refine)
        return _rows_to_run([query.qid for query in queries], rows, scores, self.store)

    def _opened(self, part: T | None) -> T:
        """A part the mode searches (the plan holds it whenever a side calls for it)."""
        if part is None:
            raise LyreError(f"{self.index_dir}: {self.options.mode} search has no such side")
        return part

    def feedback_record(self, queries: Sequence[Query]) -> dict[str, Any] | None:
        """What a run's sidecar says of feedback (None: none): each side's method and settings, and the
        BM25 side's expanded query of every query, so a user sees what was added."""
        record: dict[str, Any] = feedback_settings(self.options)
        if not record:
            return None
        if "bm25" in record:
            record["bm25"] = {**record["bm25"], "expansions": self.term_expansions(queries, self.options)}
        return record

    def _check_query_model(self) -> None:
        """Before dense lists or query vectors are read from the cache, the check loading the query encoder
        makes: the recorded model is still there with its recorded fingerprint. So a cached search refuses
        what an uncached one refuses (the entries are keyed by the recorded fingerprint, but the folder
        may have changed since). Where the model was found is remembered in the cache: a hub id is then
        not looked up in the Hugging Face cache again (that costs more than the cached search)."""
        if self.cache is None or self.query_model_checked:
            return  # without a cache the query encoder was loaded, and so checked, when the plan opened

        embeddings = complete_records(self.manifest)[EMBEDDINGS]
        key = content_key("model-folder", embeddings["params"]["model"])
        remembered = self.cache.get([key]).get(key)
        resolved = Path(remembered.decode("utf-8")) if remembered is not None else None
        folder, _ = checked_model_folder(self.index_dir, embeddings=embeddings, resolved=resolved)
        if folder != resolved:
            self.cache.put({key: str(folder).encode("utf-8")})
        self.query_model_checked = True

    def fuse(self, queries: Sequence[Query], sides: list[Run], options: SearchOptions) -> Run:
        """The sides fused with ``options``' fusion (one side: itself); every query present, cut to k."""
        if len(sides) == 2:
            return self.fuse_aligned(queries, _aligned(queries, sides), options)
        qids = [query.qid for query in queries]
        return top_k({qid: sides[0].get(qid, {}) for qid in qids}, options.k, options.remove_query_id)

    def fuse_aligned(
        self, queries: Sequence[Query], aligned: dict[str, Aligned], options: SearchOptions
    ) -> Run:
        """Each query's aligned lists fused with ``options``' fusion, cut to k in evaluated order."""
        method, arguments = fusion_arguments(options)
        remove = options.remove_query_id
        return {
            query.qid: method.top(aligned[query.qid], arguments, options.k, query.qid if remove else None)
            for query in queries
        }

    def search(self, queries: Sequence[Query], parts: GroupScores | None = None) -> Run:
        """The run of ``queries``: first stage, then the reranked head spliced above the tail.

        ``parts``: where finished rerank groups are kept, so an interrupted search resumes."""
        if not self.queries_checked:
            check_queries(self, queries)
            self.queries_checked = True
        if self.passages is not None and self.reranker is not None:
            run, passage_list = self.passage_first_stage(queries, keep_passages=True)
        else:
            run, passage_list = self.first_stage(queries), None
        if self.reranker is None:
            return run
        depth = self.rerank_options.rerank_depth
        reranker = self.reranker

        def rerank_run(head: Run, depth: int) -> Run:
            return rerank(
                head,
                queries,
                self.store,
                reranker.model,
                depth,
                parts=parts,
                identity=reranker.identity,
                pair_cache=self.cache,
            )

        if self.passages is not None:
            return self.passages.rerank(run, passage_list or {}, queries, rerank_run, depth)
        return rerank_run(run, depth)


def check_index_feedback(index_dir: Path, manifest: dict[str, Any], options: SearchOptions) -> None:
    """Feedback the index can give, before anything is opened: Bo1 weighs terms by their collection
    frequency, which a BM25 folder keeps from format 2 on (an older one searches, but cannot feed Bo1)."""
    method = term_method(options.prf)
    if method is None or not method.reads_collection_frequency:
        return
    if complete_records(manifest)[BM25]["params"].get("format", 1) < FREQUENCIES_SINCE:
        raise LyreError(
            f"{index_dir}: its BM25 stage was built before lyre kept collection term frequencies, which "
            f"{opt('prf')} {method.name} needs; run the `lyre index` command that built the index again "
            "(only BM25 is rebuilt), or use rm3 or rocchio"
        )


def check_plan_options(options: SearchOptions, rerank_options: RerankOptions) -> None:
    """Every setting that needs no file, in one place: options, fusion through the registry, template."""
    check_search_options(options)
    check_options(rerank_options)
    fusion_arguments(options)
    if rerank_options.rerank_depth > 0:
        check_rerank_template(rerank_options)


def _present(settings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``[settings]``, or nothing for a side without feedback."""
    return [settings] if settings is not None else []


__all__ = ["SearchPlan", "check_plan_options", "top_k"]
