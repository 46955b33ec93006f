"""Document runs from passage runs: how a passage index answers with documents (MaxP, FirstP, SumP).

Each rule is a small object naming its function and what it does; the CLI's ``--aggregate`` choices and
help are made from this registry, and the search plan calls :func:`aggregate`. A rule maps one query's
``DOCID#N -> score`` to ``DOCID -> score``; ``none`` keeps the passage ids (for passage tasks and for
inspection). Depth counts what the rule returns: documents, or passages for ``none``; the cut follows
lyre's one tie order (:func:`formats.runs.rank_order`, trec_eval's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lyre.basics.declared import check_options, option
from lyre.basics.errors import OptionError
from lyre.formats.records import Run
from lyre.formats.runs import rank_order
from lyre.retrieval.aggregation.best_passages import best_passages
from lyre.retrieval.aggregation.firstp import firstp
from lyre.retrieval.aggregation.maxp import maxp
from lyre.retrieval.aggregation.sump import sump


def keep_passages(passage_scores: Mapping[str, float]) -> dict[str, float]:
    """The ``none`` rule: the passage list as it is, ids ``DOCID#N``."""
    return dict(passage_scores)


@dataclass(frozen=True)
class AggregationRule:
    name: str
    function: Callable[[Mapping[str, float]], dict[str, float]]
    summary: str
    document_level: bool
    """False for ``none``, whose run lists passages (its ids are not the qrels' document ids)."""


AGGREGATION_RULES: dict[str, AggregationRule] = {
    rule.name: rule
    for rule in (
        AggregationRule("maxp", maxp, "a document scores as its best passage", True),
        AggregationRule(
            "firstp", firstp, "its first passage (the earliest one retrieved when passage 0 is not)", True
        ),
        AggregationRule("sump", sump, "the sum of its passages' scores in the list", True),
        AggregationRule("none", keep_passages, "no aggregation: a passage run, ids DOCID#N", False),
    )
}
DEFAULT_RULE = "maxp"


DEFAULT_RERANK_PASSAGES = 1


@dataclass(frozen=True)
class AggregationOptions:
    """How a search on a passage index turns passage scores into a run. Unset (None) means the default
    on a passage index, and is the only value a document index accepts besides ``none``: a rule asked
    for on whole documents would silently do nothing."""

    aggregate: str | None = option(
        None,
        "Passage index: "
        + "; ".join(f"{rule.name}: {rule.summary}" for rule in AGGREGATION_RULES.values())
        + f" (default {DEFAULT_RULE}).",
        choices=tuple(AGGREGATION_RULES),
    )
    rerank_passages: int | None = option(
        None,
        "Passage index: passages of each candidate document the reranker reads, best first "
        f"(default {DEFAULT_RERANK_PASSAGES}).",
        minimum=1,
    )

    def validate(self) -> None:
        check_options(self)

    @property
    def rule_name(self) -> str:
        """The rule in effect on a passage index."""
        return self.aggregate or DEFAULT_RULE

    @property
    def passages_per_document(self) -> int:
        """The passages of a candidate the reranker reads, in effect on a passage index."""
        return self.rerank_passages or DEFAULT_RERANK_PASSAGES


def rule(name: str) -> AggregationRule:
    """The rule called ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in AGGREGATION_RULES:
        raise OptionError("aggregate", name, f"is not known; use one of {', '.join(AGGREGATION_RULES)}")
    return AGGREGATION_RULES[name]


def aggregate(passage_run: Run, name: str = DEFAULT_RULE, depth: int | None = None) -> Run:
    """The run of ``passage_run`` under rule ``name``, each query cut to its top ``depth`` entries."""
    chosen = rule(name)
    if depth is not None and depth < 1:
        raise OptionError("depth", depth, "must be at least 1")
    result: Run = {}
    for qid, passage_scores in passage_run.items():
        scores = chosen.function(passage_scores)
        if depth is not None and len(scores) > depth:
            scores = dict(rank_order(scores)[:depth])
        result[qid] = scores
    return result


__all__ = [
    "AGGREGATION_RULES",
    "DEFAULT_RERANK_PASSAGES",
    "DEFAULT_RULE",
    "AggregationOptions",
    "AggregationRule",
    "aggregate",
    "best_passages",
    "firstp",
    "keep_passages",
    "maxp",
    "rule",
    "sump",
]
