"""Document runs from passage runs (MaxP, FirstP, SumP, none) and the reranker's choice of passages, on
hand-made runs with closed-form answers."""

from __future__ import annotations

import pytest
from lyre.basics.declared import default_of
from lyre.basics.errors import LyreError, OptionError
from lyre.retrieval.aggregation import (
    AGGREGATION_RULES,
    DEFAULT_RULE,
    AggregationOptions,
    aggregate,
    best_passages,
    rule,
)

PASSAGES = {
    "q1": {"a#0": 0.25, "a#2": 0.75, "b#1": 0.5, "b#3": 0.5, "c#0": 0.125, "x#y#1": 0.0625},
    "q2": {"d#4": 2.0},
    "q3": {},
}


def test_maxp_takes_each_documents_best_passage() -> None:
    assert aggregate(PASSAGES, "maxp") == {
        "q1": {"a": 0.75, "b": 0.5, "c": 0.125, "x#y": 0.0625},
        "q2": {"d": 2.0},
        "q3": {},
    }


def test_firstp_takes_passage_zero_or_the_earliest_retrieved() -> None:
    # a and c: passage 0 was retrieved; b: passages 1 and 3 only, so passage 1; d: passage 4 alone.
    assert aggregate(PASSAGES, "firstp") == {
        "q1": {"a": 0.25, "b": 0.5, "c": 0.125, "x#y": 0.0625},
        "q2": {"d": 2.0},
        "q3": {},
    }
    assert aggregate({"q": {"e#1": 9.0, "e#0": 1.0}}, "firstp") == {"q": {"e": 1.0}}


def test_sump_adds_the_passages_in_the_list_exactly() -> None:
    assert aggregate(PASSAGES, "sump")["q1"] == {"a": 1.0, "b": 1.0, "c": 0.125, "x#y": 0.0625}
    # fsum: the exact total whatever the order of the passages (a plain left-to-right sum gives 0.0)
    forward = {"q": {"f#0": 1e16, "f#1": 1.0, "f#2": -1e16}}
    backward = {"q": dict(reversed(forward["q"].items()))}
    assert aggregate(forward, "sump") == aggregate(backward, "sump") == {"q": {"f": 1.0}}


def test_none_keeps_the_passage_run() -> None:
    assert aggregate(PASSAGES, "none") == PASSAGES
    assert not rule("none").document_level and rule("maxp").document_level


def test_depth_counts_documents_in_trec_eval_tie_order() -> None:
    # maxp: a 0.75, b 0.5, c 0.125; depth 2 keeps a and b. sump: a and b tie at 1.0.
    assert aggregate(PASSAGES, "maxp", depth=2)["q1"] == {"a": 0.75, "b": 0.5}
    assert aggregate(PASSAGES, "sump", depth=1)["q1"] == {"b": 1.0}  # tie: docid descending, b before a
    assert aggregate(PASSAGES, "none", depth=2)["q1"] == {"a#2": 0.75, "b#3": 0.5}  # b#3 > b#1
    with pytest.raises(OptionError, match="depth 0: must be at least 1"):
        aggregate(PASSAGES, "maxp", depth=0)


def test_unknown_rule_and_document_ids_are_one_line_errors() -> None:
    with pytest.raises(
        OptionError, match="aggregate avgp: is not known; use one of maxp, firstp, sump, none"
    ):
        aggregate(PASSAGES, "avgp")
    with pytest.raises(LyreError, match="'plain' is not a passage id"):
        aggregate({"q": {"plain": 1.0}}, "maxp")


def test_options_declare_the_rules_and_the_default() -> None:
    assert default_of(AggregationOptions, "aggregate") is None
    assert default_of(AggregationOptions, "rerank_passages") is None
    unset = AggregationOptions()
    assert unset.rule_name == DEFAULT_RULE == "maxp" and unset.passages_per_document == 1
    AggregationOptions(aggregate="sump", rerank_passages=3).validate()
    with pytest.raises(OptionError, match="aggregate maxpp"):
        AggregationOptions(aggregate="maxpp").validate()
    with pytest.raises(OptionError, match="rerank_passages 0"):
        AggregationOptions(rerank_passages=0).validate()
    assert list(AGGREGATION_RULES) == ["maxp", "firstp", "sump", "none"]


def test_reranker_reads_each_candidates_best_passages() -> None:
    documents = {"q1": {"a": 0.75, "b": 0.5, "z": 0.1}, "q2": {"d": 2.0}}
    assert best_passages(documents, PASSAGES, 1) == {
        "q1": {"a": ["a#2"], "b": ["b#3"], "z": ["z#0"]},  # b: tie, id descending; z: no passage listed
        "q2": {"d": ["d#4"]},
    }
    two = best_passages(documents, PASSAGES, 2)
    assert two["q1"] == {"a": ["a#2", "a#0"], "b": ["b#3", "b#1"], "z": ["z#0"]}
    assert list(two["q1"]) == ["a", "b", "z"]  # candidates in ranked order
    # a query the passage run lacks still gets passage 0 of each candidate
    assert best_passages({"q9": {"k": 1.0}}, PASSAGES, 3) == {"q9": {"k": ["k#0"]}}
    with pytest.raises(OptionError, match="rerank_passages 0"):
        best_passages(documents, PASSAGES, 0)


def test_reranked_passages_aggregate_with_the_same_rule() -> None:
    """The rerank side end to end: choose M passages, score them (here: given reranker scores),
    aggregate them back to documents."""
    documents = {"q1": {"a": 0.75, "b": 0.5}}
    chosen = best_passages(documents, PASSAGES, 2)
    reranker = {"a#2": 0.125, "a#0": 0.875, "b#3": 0.5, "b#1": 0.25}
    reranked = {"q1": {pid: reranker[pid] for pids in chosen["q1"].values() for pid in pids}}
    assert aggregate(reranked, "maxp") == {"q1": {"a": 0.875, "b": 0.5}}
    assert aggregate(reranked, "firstp") == {"q1": {"a": 0.875, "b": 0.25}}
    assert aggregate(reranked, "sump") == {"q1": {"a": 1.0, "b": 0.75}}
