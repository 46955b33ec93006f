"""Searching a passage index: passage hits in, document runs out (or a passage run with ``none``).

A passage index (``lyre index --passage-tokens N``) has BM25 and the embeddings over passages
(``indexes/passage_stage.py``). Each side of a search retrieves passages, enough to fill ``depth``
documents: ``depth x`` the index's mean passages per document (rounded up, capped at
:data:`MAX_PASSAGES_PER_DOCUMENT`), then the aggregation rule (MaxP, FirstP, SumP) turns that side's
passage list into its top ``depth`` documents, and fusion works on documents as on a document index. With
``none`` the sides stay passage lists of ``depth`` passages, fused as they are, ids ``DOCID#N``.

Reranking a document run reads each candidate's top ``M`` passages of the first stage (in a hybrid
search, of the passage-level fusion of the two sides' passage lists: the same fusion method as the
document runs), scores them with the reranker, aggregates those scores with the same rule, and splices
the reranked documents above the first-stage tail, as for a document index. Which store a side reads is
decided by the index's records, so a search never mixes passage and document rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError, OptionError, opt
from lyre.formats.records import Query, Run
from lyre.formats.runs import rank_order
from lyre.indexes.manifest import BM25, DOCSTORE, EMBEDDINGS, HOW_TO_BUILD, PASSAGES, complete_records
from lyre.indexes.source_store import index_store
from lyre.retrieval.aggregation import AggregationOptions, AggregationRule, aggregate, best_passages, rule
from lyre.retrieval.splice import splice

MAX_PASSAGES_PER_DOCUMENT = 16
"""Cap of the depth multiplier: a collection with a few huge documents should not make every query
retrieve tens of thousands of passages; its long documents' later passages compete for fewer slots."""

SIDE_RECORDS = {"bm25": (BM25,), "dense": (EMBEDDINGS,), "hybrid": (BM25, EMBEDDINGS)}


def searched_store(records: Mapping[str, Mapping[str, Any]], mode: str) -> str:
    """The store the sides of ``mode`` read (``docstore`` or ``passages``); an index whose BM25 and
    embeddings were built over different stores cannot be searched in hybrid."""
    stores = {index_store(records.get(stage)) for stage in SIDE_RECORDS[mode]}
    if len(stores) > 1:
        raise LyreError(
            "the index's BM25 and embeddings were built over different stores (documents and passages); "
            "rebuild it with the same passage options for both (`lyre index CORPUS --out INDEX --overwrite`)"
        )
    return stores.pop()


def check_document_index(options: AggregationOptions) -> None:
    """A document index takes no aggregation: an asked-for rule would silently do nothing."""
    if options.aggregate not in (None, "none"):
        raise OptionError(
            "aggregate",
            options.aggregate,
            f"applies to a passage index (built with {opt('passage_tokens')}); this one holds whole "
            "documents: drop the option",
        )
    if options.rerank_passages is not None:
        raise OptionError(
            "rerank_passages",
            options.rerank_passages,
            f"applies to a passage index (built with {opt('passage_tokens')}); drop the option",
        )


@dataclass(frozen=True)
class PassageSearch:
    """How one search reads a passage index: the rule, the passages the reranker reads per candidate, and
    how many passages a side retrieves per document asked for."""

    rule: AggregationRule
    rerank_passages: int
    passages_per_document: float
    """The index's mean passages per document, from the passages stage's record."""
    passages: int | None = None
    """The passages the index holds (None: not recorded): no side retrieves more."""

    @classmethod
    def open(
        cls, index_dir: Path, manifest: Mapping[str, Any], mode: str, options: AggregationOptions
    ) -> PassageSearch | None:
        """The passage search of an index (its manifest read once by the plan), or None for a document
        index, whose aggregation options are then checked to be unset."""
        options.validate()
        records = complete_records(dict(manifest))
        if searched_store(records, mode) == DOCSTORE:
            check_document_index(options)
            return None
        if PASSAGES not in records:
            raise LyreError(
                f"{index_dir}: the {PASSAGES} stage is missing or incomplete; run "
                f"`{HOW_TO_BUILD[PASSAGES]}` to build or finish it"
            )
        counts = records[PASSAGES]["counts"]
        return cls(
            rule(options.rule_name),
            options.passages_per_document,
            counts["passages_per_document_mean"],
            counts.get("passages"),
        )

    @property
    def factor(self) -> int:
        """Passages retrieved per document asked for (1 with ``none``, whose depth counts passages)."""
        if not self.rule.document_level:
            return 1
        return max(1, min(math.ceil(self.passages_per_document), MAX_PASSAGES_PER_DOCUMENT))

    def side_depth(self, depth: int) -> int:
        """Passages each side retrieves for ``depth`` entries: at most every passage of the index (a
        deeper search finds the same ones, in arrays that may not fit in memory)."""
        wanted = depth * self.factor
        return min(wanted, self.passages) if self.passages else wanted

    def documents(self, side: Run, depth: int) -> Run:
        """One side's passage list as its top ``depth`` entries under the rule."""
        return aggregate(side, self.rule.name, depth)

    def describe(self) -> str:
        """The status line a search of a passage index prints: what its run lists, and by which rule."""
        if not self.rule.document_level:
            return "passage index, no aggregation: the run lists passages (ids DOCID#N)"
        return f"passage index: passages aggregated to documents with {self.rule.name} ({self.rule.summary})"

    def sidecar(self, depth: int) -> dict[str, Any]:
        """What a run's sidecar says about the passage search."""
        return {
            "aggregate": self.rule.name,
            "rerank_passages": self.rerank_passages,
            "passages_per_document_mean": self.passages_per_document,
            "depth_factor": self.factor,
            "depth_factor_cap": MAX_PASSAGES_PER_DOCUMENT,
            "passage_depth": self.side_depth(depth),
        }

    def rerank(
        self,
        run: Run,
        passages: Run,
        queries: Sequence[Query],
        rerank_passages_run: Callable[[Run, int], Run],
        depth: int,
    ) -> Run:
        """``run`` (documents) with its top ``depth`` per query reranked through their best passages.

        ``passages``: the first stage's passage list (fused in hybrid); ``rerank_passages_run(run,
        depth)``: the document reranker applied to a passage run (the passage store's texts), returning
        the reranker's score of every passage of its top ``depth``."""
        if not self.rule.document_level:
            return rerank_passages_run(run, depth)
        texts = {query.qid for query in queries}
        heads = {qid: dict(rank_order(documents)[:depth]) for qid, documents in run.items() if qid in texts}
        chosen = best_passages(heads, passages, self.rerank_passages)
        to_score: Run = {
            qid: {
                identifier: passages.get(qid, {}).get(identifier, 0.0)
                for picks in per_document.values()
                for identifier in picks
            }
            for qid, per_document in chosen.items()
        }
        widest = max((len(scores) for scores in to_score.values()), default=0)
        if widest == 0:
            return run
        scored = rerank_passages_run(to_score, widest)
        reranked: Run = {}
        for qid, documents in run.items():
            if qid not in to_score:
                reranked[qid] = documents
                continue
            head_scores = self.rule.function(scored[qid])
            reranked[qid] = dict(splice(rank_order(documents), head_scores))
        return reranked


def search_passage_index(
    search: PassageSearch,
    side_runs: Callable[[int], list[Run]],
    fuse: Callable[[list[Run], int], Run],
    depth: int,
    k: int,
    keep_passages: bool,
) -> tuple[Run, Run | None]:
    """The first stage on a passage index: (the run, documents or with ``none`` passages, cut to ``k``;
    the fused passage list the reranker chooses from, when ``keep_passages`` and the run is documents).

    ``side_runs(n)``: each side's top ``n`` passages (one run per side); ``fuse(runs, k)``: the search's
    fusion of several runs of one kind (a single run as it is), cut to ``k``."""
    wide = search.side_depth(depth)
    sides = side_runs(wide)
    if not search.rule.document_level:
        return fuse(sides, k), None
    documents = fuse([search.documents(side, depth) for side in sides], k)
    return documents, fuse(sides, wide) if keep_passages else None


__all__ = [
    "MAX_PASSAGES_PER_DOCUMENT",
    "PassageSearch",
    "check_document_index",
    "search_passage_index",
    "searched_store",
]
