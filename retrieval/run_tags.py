"""How a search made its run: the run's tag, and the record of it in the run's sidecar.

Two runs made differently should not carry the same tag, and the tag should stay short enough to read in
a table of runs. The grammar marks what departs from the plain search of a document index; exact search
and whole documents are unmarked::

    lyre.MODE[-FUSION][-FEEDBACK][-ENGINE][-AGGREGATION][.rerankN]

``MODE``
    ``bm25``, ``dense`` or ``hybrid``.
``FUSION``
    hybrid only: the fusion method's label (``rrf60``, ``linear0.3,0.7``, ``linear-zscore``).
``FEEDBACK``
    pseudo-relevance feedback (:mod:`retrieval.feedback`): the BM25 side's method (``rm3``, ``rocchio``,
    ``bo1``), then the dense side's prefixed with ``v`` (``vrocchio``); its settings are in the sidecar.
``ENGINE``
    a dense side searched on an IVF-PQ index: ``ivfpq-refineR``, ``R`` the depth of the exact re-scoring
    actually used (``refine0``: none, the PQ scores as they are). A flat index searches exactly: unmarked.
``AGGREGATION``
    a passage index: the rule that turned passages into documents (``maxp``, ``firstp``, ``sump``), or
    ``passages`` for a run left at passage level (ids ``DOCID#N``).
``.rerankN``
    the top ``N`` of each query reranked.

So ``lyre.dense`` is an exact dense search, ``lyre.dense-ivfpq-refine128`` an IVF-PQ one re-scored at
depth 128, and ``lyre.hybrid-rrf60-maxp.rerank100`` a hybrid search of a passage index aggregated with
MaxP, then reranked. A tag given with the ``tag`` option replaces the whole word. The sidecar records the
same facts with the numbers the tag leaves out (:func:`search_record`: nprobe used, aggregation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lyre.indexes.manifest import DENSE, complete_records
from lyre.retrieval import feedback, fusion
from lyre.retrieval.options import RerankOptions, SearchOptions

if TYPE_CHECKING:
    from lyre.retrieval.passage_search import PassageSearch

PREFIX = "lyre"
PASSAGE_RUN = "passages"
"""The AGGREGATION word of a run left at passage level (``aggregate none``)."""


class Searching(Protocol):
    """What a tag reads of a search plan (:class:`retrieval.plan.SearchPlan`)."""

    options: SearchOptions
    """The settings, capped to the index."""
    rerank_options: RerankOptions
    manifest: dict[str, Any]
    passages: PassageSearch | None


def fusion_arguments(options: SearchOptions) -> tuple[fusion.FusionMethod, dict[str, Any]]:
    """The hybrid's fusion method and its arguments (BM25 first, dense second), checked by the registry."""
    method = fusion.method(options.fusion)
    arguments = method.arguments(options, weights=(1.0 - options.weight, options.weight))
    method.check(arguments)
    return method, arguments


@dataclass(frozen=True)
class DenseEngine:
    """How the dense side searched: the index type and the nprobe and refine depth actually used."""

    index_type: str
    """``flat`` (exact) or ``ivfpq``."""
    nprobe: int | None
    """IVF lists probed (None for flat)."""
    refine: int
    """Candidates re-scored exactly (0: none; always 0 for flat, which is exact already)."""

    @classmethod
    def of(cls, manifest: dict[str, Any], options: SearchOptions) -> DenseEngine:
        """The engine of the index's dense stage under ``options`` (already capped to the index): a value
        the options leave unset is the one tuned at build, recorded in the stage's counts."""
        counts = complete_records(manifest)[DENSE]["counts"]
        if counts["index_type"] == "flat":
            return cls("flat", None, 0)
        nprobe = options.nprobe if options.nprobe is not None else counts["nprobe"]
        refine = options.refine if options.refine is not None else counts["refine"]
        return cls("ivfpq", nprobe, refine)

    @property
    def word(self) -> str | None:
        """The ENGINE word of a tag (None: exact search, unmarked)."""
        return None if self.index_type == "flat" else f"{self.index_type}-refine{self.refine}"


def aggregation_word(passages: PassageSearch | None) -> str | None:
    """The AGGREGATION word of a tag (None: a document index)."""
    if passages is None:
        return None
    return passages.rule.name if passages.rule.document_level else PASSAGE_RUN


def search_tag(
    options: SearchOptions,
    rerank_options: RerankOptions,
    engine: DenseEngine | None = None,
    passages: PassageSearch | None = None,
) -> str:
    """The tag of a search with these settings (see the module docstring); ``engine``: the dense side's
    (None without one), ``passages``: how a passage index was searched (None: a document index)."""
    if options.tag:
        return options.tag
    words = [options.mode]
    if options.mode == "hybrid":
        method, arguments = fusion_arguments(options)
        words.append(method.label(arguments))
    words += feedback.tag_words(options)
    if engine is not None and engine.word is not None:
        words.append(engine.word)
    aggregation = aggregation_word(passages)
    if aggregation is not None:
        words.append(aggregation)
    depth = rerank_options.rerank_depth
    return f"{PREFIX}." + "-".join(words) + (f".rerank{depth}" if depth > 0 else "")


def dense_engine(plan: Searching) -> DenseEngine | None:
    """The dense side's engine of ``plan`` (None when it searches BM25 only)."""
    if plan.options.mode == "bm25":
        return None
    return DenseEngine.of(plan.manifest, plan.options)


def run_tag(plan: Searching) -> str:
    """The tag of a run searched with ``plan``."""
    return search_tag(plan.options, plan.rerank_options, dense_engine(plan), plan.passages)


def search_record(plan: Searching) -> dict[str, Any]:
    """What a run's sidecar says of how the search was made: the tag and the facts behind each of its
    words, with the values actually used (after capping to the index, and the tuned ones for unset
    nprobe and refine)."""
    engine = dense_engine(plan)
    options = plan.options
    fused = fusion_arguments(options) if options.mode == "hybrid" else None
    return {
        "tag": run_tag(plan),
        "mode": options.mode,
        "fusion": fused[0].label(fused[1]) if fused is not None else None,
        "dense": None
        if engine is None
        else {"index_type": engine.index_type, "nprobe": engine.nprobe, "refine": engine.refine},
        "aggregation": None if plan.passages is None else plan.passages.rule.name,
        "rerank_depth": plan.rerank_options.rerank_depth,
    }


__all__ = [
    "DenseEngine",
    "Searching",
    "aggregation_word",
    "dense_engine",
    "fusion_arguments",
    "run_tag",
    "search_record",
    "search_tag",
]
