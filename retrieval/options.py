"""The settings of ``lyre search``, ``lyre rerank`` and ``lyre fuse``, each declared once.

Fields are :func:`basics.declared.option` declarations: the library reads their defaults, the checks read
their ranges and choices, and ``cli/flags.py`` makes one flag per field. Groups shared by several
commands are base classes, so ``--fusion``/``--rrf-k``/``--normalization`` mean the same in ``lyre search``
and ``lyre fuse``, and ``lyre search`` and ``lyre rerank`` share every reranker option. Fusion parameters
are declared by the fusion registry itself (:mod:`retrieval.fusion`), feedback parameters by the feedback
registry (:mod:`retrieval.feedback`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lyre.basics.declared import check_options, option
from lyre.basics.errors import OptionError, opt
from lyre.models.engines import ENGINES
from lyre.models.rerank_templates import DEFAULT_RERANKER, LYCHEE
from lyre.retrieval import feedback
from lyre.retrieval.feedback import TERM_METHODS, VECTOR_METHODS
from lyre.retrieval.fusion import DEFAULT_METHOD, FUSION_METHODS

MODES = ("bm25", "dense", "hybrid")
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class RunTagOptions:
    """What names a written run."""

    tag: str | None = option(None, "Run tag (default: made from the settings).")


@dataclass(frozen=True)
class RunOptions(RunTagOptions):
    """How much of each query's list a written run keeps."""

    k: int = option(1000, "Documents per query in the run.", minimum=1)


@dataclass(frozen=True)
class FusionOptions:
    """How several lists of one query become one (the registry declares each method's parameters)."""

    fusion: str = option(
        DEFAULT_METHOD,
        "; ".join(f"{method.name}: {method.summary}" for method in FUSION_METHODS.values()) + ".",
        choices=tuple(FUSION_METHODS),
    )
    rrf_k: int = FUSION_METHODS["rrf"].param("k").field()
    normalization: str = FUSION_METHODS["linear"].param("normalization").field()


@dataclass(frozen=True)
class FeedbackOptions:
    """Pseudo-relevance feedback on each side of a search (the registry declares each method's parameters;
    an option several methods share defaults to each method's own published value)."""

    prf: str = option(
        feedback.NONE,
        feedback.choices_help("BM25", TERM_METHODS),
        choices=(feedback.NONE, *TERM_METHODS),
    )
    prf_docs: int | None = feedback.shared_field("prf_docs", "BM25 feedback: first-stage documents read")
    prf_terms: int | None = feedback.shared_field("prf_terms", "BM25 feedback: expansion terms")
    prf_weight: float | None = feedback.shared_field(
        "prf_weight", "BM25 feedback: weight of the original query (rm3: its share, at most 1)"
    )
    rocchio_beta: float = TERM_METHODS["rocchio"].param("rocchio_beta").field()
    dense_prf: str = option(
        feedback.NONE,
        feedback.choices_help("dense", VECTOR_METHODS),
        choices=(feedback.NONE, *VECTOR_METHODS),
    )
    dense_prf_docs: int = VECTOR_METHODS["rocchio"].param("dense_prf_docs").field()
    dense_prf_alpha: float = VECTOR_METHODS["rocchio"].param("dense_prf_alpha").field()
    dense_prf_beta: float = VECTOR_METHODS["rocchio"].param("dense_prf_beta").field()


@dataclass(frozen=True)
class SearchOptions(FeedbackOptions, FusionOptions, RunOptions):
    """Everything that decides a first-stage run; recorded verbatim in the run's sidecar."""

    mode: str = option("hybrid", "First stage: BM25, dense, or both fused.", choices=MODES)
    depth: int = option(
        1000,
        "First-stage depth of each side before fusion (at least k; beyond what the index holds, all of it).",
        minimum=1,
    )
    weight: float = option(
        0.5, "linear fusion: weight of the dense side (BM25 gets 1 - weight).", minimum=0, maximum=1
    )
    nprobe: int | None = option(None, "IVF lists probed (default: tuned at build).", minimum=1)
    refine: int | None = option(
        None, "Re-score the top R IVF-PQ candidates exactly; 0 turns it off (default: tuned).", minimum=0
    )
    remove_query_id: bool = option(False, "Drop hits whose docid equals the qid.")


@dataclass(frozen=True)
class FuseOptions(FusionOptions, RunOptions):
    """``lyre fuse``: the fusion options plus the weights of a linear fusion of N run files."""

    weights: str | None = option(
        None, "linear fusion: comma-separated weights, one per run (default: equal weights summing to 1)."
    )


@dataclass(frozen=True)
class RerankOptions:
    """The reranker and how deep it reads; shared by ``lyre search`` and ``lyre rerank``."""

    rerank_model: str = option(DEFAULT_RERANKER, "Hub id or local folder of the reranker.")
    rerank_depth: int = option(100, "Rerank the top K of each query; 0 turns reranking off.", minimum=0)
    rerank_template: str = option(
        LYCHEE.name, "Reranker prompt: lychee, qwen3-reranker, or a custom template text."
    )
    instruction: str | None = option(
        None, "Task instruction for the queries and the reranker (default: the model's own)."
    )
    engine: str = option(
        "local",
        "Who reranks: local (this process; one process per GPU when several are visible), gpus, or ray.",
        choices=ENGINES,
    )
    ray_address: str | None = option(None, "Ray cluster address (default: a local Ray).")
    ray_cpu_actors: int | None = option(None, "Ray actors on a cluster without GPUs.", minimum=1)


@dataclass(frozen=True)
class RerankRunOptions(RunTagOptions):
    """``lyre rerank`` beyond the reranker: the tag, and what to do with run queries lacking a text."""

    skip_missing_queries: bool = option(
        False, "Keep run queries absent from --queries unreranked instead of stopping."
    )


def check_tag(tag: str | None) -> None:
    """A TREC run's tag is one token: checked up front, not when the run is finally written."""
    if tag is not None and (not tag or _WHITESPACE.search(tag)):
        raise OptionError("tag", repr(tag), "must be non-empty, without whitespace")


def check_run_options(options: RunTagOptions) -> None:
    """Declared ranges and choices, then the tag."""
    check_options(options)
    check_tag(options.tag)


def check_search_options(options: SearchOptions) -> None:
    """Everything about a search's settings that needs no file: ranges, choices, tag, depth against k, and
    feedback (each method's ranges, each side's feedback against the mode)."""
    check_run_options(options)
    feedback.check_feedback(options)
    if options.depth < options.k:
        raise OptionError(
            "depth",
            options.depth,
            f"is below {opt('k')} {options.k}: each side must return at least that many documents",
        )
