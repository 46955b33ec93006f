"""The searching side of the server: one search plan opened at start, searched per batch of queries.

:class:`Searcher` lives in the batching thread (:mod:`serve.batching`). It opens the plan the way
``lyre search`` does and loads every part at once (a server answers its first request warm). A request
may ask for other settings (k, mode, rerank depth) within what was loaded: each such variant is the same
plan with the same loaded parts and other options (:meth:`Searcher.variant`), so its hits are those of
``lyre search`` with those options. The BM25 and dense ranks that led to a fused rank are the plan's own
side lists, kept as it fuses them (:class:`SideKeepingPlan`), not a second search.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from lyre.basics.errors import OptionError, opt
from lyre.basics.numbers import count
from lyre.formats.records import Document, Query, Run
from lyre.formats.runs import ranked_columns
from lyre.indexes.analyzer import Analyzer
from lyre.indexes.docstore import DocStore
from lyre.indexes.manifest import DOCSTORE
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions, Deferred
from lyre.retrieval.fusion.aligned import Aligned, evaluated_order
from lyre.retrieval.options import MODES, RerankOptions, SearchOptions
from lyre.retrieval.passage_search import PassageSearch
from lyre.retrieval.plan import SearchPlan, check_plan_options
from lyre.serve.snippets import AnalyzedText, highlight, snippet

SIDES = ("bm25", "dense")
Kept = TypeVar("Kept")
DOCUMENTS_KEPT = 20_000
"""Documents, and their analyses for snippets, kept in memory (about 60 MB of BEIR abstracts): popular
documents come back in many answers, a docstore read costs a Parquet row group each, and an analysis a
stemmer call per word."""
TERMS_KEPT = 200_000
"""Surface words whose analysis is kept (the words of documents recur across documents)."""


@dataclass(frozen=True)
class RequestSettings:
    """What one request may choose; queries with equal settings are searched in one call."""

    k: int
    mode: str
    rerank_depth: int


@dataclass(frozen=True)
class Capabilities:
    """What the loaded plan can answer: the range of each request setting, and its defaults."""

    modes: tuple[str, ...]
    max_k: int
    max_rerank_depth: int
    defaults: RequestSettings

    def check(self, settings: RequestSettings) -> None:
        """Refuse settings the loaded models and index cannot answer, naming the request parameter."""
        if settings.mode not in MODES:
            raise OptionError("mode", settings.mode, f"is not known; use one of {', '.join(MODES)}")
        if settings.mode not in self.modes:
            raise OptionError(
                "mode",
                settings.mode,
                f"needs parts this server did not load (it serves {', '.join(self.modes)}); "
                f"restart it with {opt('mode')} hybrid on an index with both stages",
            )
        if not 1 <= settings.k <= self.max_k:
            raise OptionError("k", settings.k, f"must be between 1 and {count(self.max_k)} (the server's k)")
        if self.max_rerank_depth == 0 and settings.rerank_depth > 0:
            raise OptionError(
                "rerank_depth",
                settings.rerank_depth,
                "asks for a reranker this server did not load; use 0, or restart it with a reranker",
            )
        if not 0 <= settings.rerank_depth <= self.max_rerank_depth:
            raise OptionError(
                "rerank_depth",
                settings.rerank_depth,
                f"must be between 0 and {count(self.max_rerank_depth)} (the server's rerank depth)",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "modes": list(self.modes),
            "max_k": self.max_k,
            "max_rerank_depth": self.max_rerank_depth,
            "defaults": vars(self.defaults),
        }


@dataclass
class SideKeepingPlan(SearchPlan):
    """A search plan that keeps the first-stage lists its last search fused: the aligned lists of a
    hybrid search, or the one side of a single-side search (a passage index keeps none: its sides are
    passage lists)."""

    kept: dict[str, Any] = field(default_factory=dict, repr=False)

    def aligned_lists(
        self, queries: Sequence[Query], options: SearchOptions | None = None
    ) -> dict[str, Aligned]:
        aligned = super().aligned_lists(queries, options)
        self.kept["aligned"] = aligned
        return aligned

    def side_runs(self, queries: Sequence[Query], options: SearchOptions | None = None) -> list[Run]:
        sides = super().side_runs(queries, options)
        if not self.hybrid and self.passages is None:
            self.kept["side"] = sides[0]
        return sides

    def search_keeping_sides(
        self, queries: Sequence[Query]
    ) -> tuple[Run, dict[str, dict[str, dict[str, int]]]]:
        """The run of ``queries`` (:meth:`SearchPlan.search`) and, per query, each side's rank of every
        document it listed (``{qid: {"bm25": {docid: rank}, "dense": {...}}}``; ranks from 1)."""
        self.kept = {}
        run = self.search(queries)
        ranks: dict[str, dict[str, dict[str, int]]] = {query.qid: {} for query in queries}
        if "aligned" in self.kept:
            for qid, aligned in self.kept["aligned"].items():
                ranks[qid] = {side: aligned_ranks(aligned, row) for row, side in enumerate(SIDES)}
        elif "side" in self.kept:
            side = "bm25" if self.bm25 is not None else "dense"
            for qid, docs in self.kept["side"].items():
                ranks[qid] = {side: {docid: rank for rank, docid in enumerate(ranked_columns(docs)[0], 1)}}
        return run, ranks


def aligned_ranks(aligned: Aligned, row: int) -> dict[str, int]:
    """Rank (from 1) of each document run ``row`` listed, in evaluated order (score, then docid, both
    descending), which is the order its list had before alignment."""
    present = aligned.present[row]
    scores = np.where(present, aligned.scores[row], -np.inf)
    order = evaluated_order(scores)[: int(present.sum())]
    return {docid: rank for rank, docid in enumerate(aligned.docids[order].tolist(), 1)}


def loaded_modes(mode: str) -> tuple[str, ...]:
    """The modes a plan opened for ``mode`` can answer with its loaded parts."""
    return MODES if mode == "hybrid" else (mode,)


class Searcher:
    """The plan, its variants per request settings, and the documents; used by one thread only."""

    def __init__(
        self, plan: SideKeepingPlan, aggregation: AggregationOptions, capabilities: Capabilities
    ) -> None:
        self.plan = plan
        self.aggregation = aggregation
        self.capabilities = capabilities
        self._variants: dict[RequestSettings, SideKeepingPlan] = {}
        self._documents = plan.store if plan.passages is None else Deferred(self._open_docstore)
        analyzer = plan.bm25.analyzer if plan.bm25 is not None else _default_analyzer()
        self._analyze = functools.lru_cache(maxsize=TERMS_KEPT)(analyzer.analyze)  # words recur: stem once
        self._words = re.compile(analyzer.token_pattern)
        self._kept: Recent[Document] = Recent(DOCUMENTS_KEPT)
        self._analysed: Recent[AnalyzedText] = Recent(DOCUMENTS_KEPT)

    @classmethod
    def open(
        cls,
        index_dir: Path,
        opened: Any,
        options: SearchOptions,
        rerank_options: RerankOptions,
        cache: CacheOptions | None,
        aggregation: AggregationOptions,
        default_k: int,
    ) -> Searcher:
        """The plan opened as ``lyre search`` opens it (``opened``: the index held under its read lock),
        every part loaded now; a request gets ``default_k`` hits unless it asks for another k."""
        plan = SideKeepingPlan.open(index_dir, options, rerank_options, cache, aggregation, opened=opened)
        for part in (plan.store, plan.bm25, plan.dense, plan.embedder):
            Deferred.now(part)
        depth = rerank_options.rerank_depth if plan.reranker is not None else 0
        most = plan.options.k  # as the plan holds it: capped to what the index holds
        defaults = RequestSettings(min(default_k, most), options.mode, depth)
        return cls(plan, aggregation, Capabilities(loaded_modes(options.mode), most, depth, defaults))

    def _open_docstore(self) -> Any:
        return DocStore.open(self.plan.index_dir / DOCSTORE)

    def variant(self, settings: RequestSettings) -> SideKeepingPlan:
        """The loaded plan with ``settings``: the parts the mode does not read left out, the reranker
        only where the request reranks, made once per distinct settings."""
        found = self._variants.get(settings)
        if found is not None:
            return found

        plan = self.plan
        options = replace(plan.options, k=settings.k, mode=settings.mode)
        rerank_options = replace(plan.rerank_options, rerank_depth=settings.rerank_depth)
        check_plan_options(options, rerank_options)
        bm25 = settings.mode in ("bm25", "hybrid")
        dense = settings.mode in ("dense", "hybrid")
        variant = replace(
            plan,
            options=options,
            rerank_options=rerank_options,
            bm25=plan.bm25 if bm25 else None,
            dense=plan.dense if dense else None,
            embedder=plan.embedder if dense else None,
            reranker=plan.reranker if settings.rerank_depth > 0 else None,
            passages=PassageSearch.open(plan.index_dir, plan.manifest, settings.mode, self.aggregation),
            kept={},
        )
        self._variants[settings] = variant
        return variant

    def tag(self, settings: RequestSettings) -> str:
        """The run tag ``lyre search`` would write for these settings."""
        return self.variant(settings).tag

    def run_batch(self, key: Hashable, items: Sequence[Query]) -> list[list[dict[str, Any]]]:
        """The hits of each query in ``items`` searched with settings ``key`` (the batching thread's call)."""
        assert isinstance(key, RequestSettings)
        run, ranks = self.variant(key).search_keeping_sides(items)
        ranked = {query.qid: ranked_columns(run.get(query.qid, {})) for query in items}
        wanted = list(dict.fromkeys(docid for docids, _ in ranked.values() for docid in docids))
        documents = self.documents(wanted)
        return [self._hits(query, *ranked[query.qid], ranks[query.qid], documents) for query in items]

    def _hits(
        self,
        query: Query,
        docids: list[str],
        scores: list[float],
        ranks: dict[str, dict[str, int]],
        documents: dict[str, Document | None],
    ) -> list[dict[str, Any]]:
        terms = frozenset(self._analyze(query.text))
        hits = []
        for rank, (docid, score) in enumerate(zip(docids, scores, strict=True), 1):
            document = documents[docid]
            marked = snippet(self._analysis(docid, document.text), terms) if document else None
            hits.append(
                {
                    "rank": rank,
                    "docid": docid,
                    "score": float(score),
                    "title": document.title if document else None,
                    "snippet": marked.text if marked else None,
                    "highlights": [list(span) for span in marked.spans] if marked else [],
                    **{f"{side}_rank": ranks.get(side, {}).get(docid) for side in SIDES},
                }
            )
        return hits

    def _analysis(self, docid: str, text: str) -> AnalyzedText:
        """A document's text analysed once (:class:`serve.snippets.AnalyzedText`), for any query."""
        analysed = self._analysed.get(docid)
        if analysed is None:
            analysed = AnalyzedText.of(text, self._analyze, self._words)
        self._analysed.keep(docid, analysed)
        return analysed

    def documents(self, docids: Sequence[str]) -> dict[str, Document | None]:
        """Each docid's document (None where the index has none): the :data:`DOCUMENTS_KEPT` most
        recently used ones from memory (the index cannot change under the read lock), the others from
        the docstore, and on a passage index searched without aggregation from its passage store (whose
        ids are ``DOCID#N``)."""
        found: dict[str, Document | None] = {docid: self._kept.get(docid) for docid in docids}
        stores = [self._documents, *([self.plan.store] if self.plan.passages is not None else [])]
        for store in stores:
            missing = [docid for docid, document in found.items() if document is None]
            if not missing:
                break
            rows = store.rows_of(missing)
            known = [(docid, int(row)) for docid, row in zip(missing, rows.tolist(), strict=True) if row >= 0]
            if known:
                for (docid, _), document in zip(known, store.fetch([row for _, row in known]), strict=True):
                    found[docid] = document
        for docid, document in found.items():
            if document is not None:
                self._kept.keep(docid, document)
        return found

    def document(self, docid: str, query: str | None) -> dict[str, Any] | None:
        """One document's title and text, the query's terms marked in the text (None: unknown id)."""
        document = self.documents([docid])[docid]
        if document is None:
            return None
        terms = frozenset(self._analyze(query or ""))
        marked = highlight(self._analysis(docid, document.text), terms)
        title = highlight(AnalyzedText.of(document.title, self._analyze, self._words), terms)
        return {
            "docid": docid,
            "title": document.title,
            "text": document.text,
            "title_highlights": [list(span) for span in title.spans],
            "highlights": [list(span) for span in marked.spans],
        }

    def close(self) -> None:
        """Stop the reranker's workers and close the cache (in the thread that opened them)."""
        if self.plan.reranker is not None:
            self.plan.reranker.close()
        if self.plan.cache is not None:
            self.plan.cache.close()


class Recent(OrderedDict[str, Kept]):
    """The ``limit`` most recently kept or read entries (the index cannot change under the read lock, so
    they never go stale)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def keep(self, key: str, value: Kept) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def _default_analyzer() -> Any:
    """Where the index has no BM25 stage, snippets mark words with the default English analyzer."""
    return Analyzer.preset("english")
