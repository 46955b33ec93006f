from itertools import pairwise

from lyre.retrieval.splice import splice


def test_head_reordered_tail_strictly_below_in_first_stage_order():
    first_stage = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.6)]
    out = splice(first_stage, {"a": 0.1, "b": 0.7, "c": 0.4})
    assert out == [("b", 0.7), ("c", 0.4), ("a", 0.1), ("d", 0.1 - 1), ("e", 0.1 - 2)]


def test_deep_membership_is_unchanged_and_scores_strictly_decrease():
    first_stage = [(f"d{i:03d}", 100.0 - i) for i in range(50)]
    reranked = {docid: (i * 7919 % 13) / 13 for i, (docid, _) in enumerate(first_stage[:10])}
    out = splice(first_stage, reranked)
    assert sorted(docid for docid, _ in out) == sorted(docid for docid, _ in first_stage)
    assert [docid for docid, _ in out[10:]] == [docid for docid, _ in first_stage[10:]]
    scores = [score for _, score in out]
    assert all(later < earlier for earlier, later in pairwise(scores[9:]))
    assert max(scores[10:]) < min(reranked.values())


def test_reranker_ties_follow_evaluated_order():
    out = splice([("a", 2.0), ("b", 1.0), ("c", 0.5)], {"a": 0.5, "b": 0.5})
    assert out == [("b", 0.5), ("a", 0.5), ("c", -0.5)]


def test_nothing_reranked_keeps_first_stage():
    first_stage = [("a", 2.0), ("b", 1.0)]
    assert splice(first_stage, {}) == first_stage
    assert splice([], {}) == []


def test_everything_reranked_has_no_tail():
    assert splice([("a", 2.0), ("b", 1.0)], {"a": 0.2, "b": 0.9}) == [("b", 0.9), ("a", 0.2)]
