import math

import numpy as np
import pytest
from lyre.formats.runs import rank_order
from lyre.retrieval.fusion import linear, rrf
from lyre.retrieval.fusion.aligned import align, docid_array, ranked


def obvious_rrf(runs, k):
    fused = {}
    for run in runs:
        for qid, docs in run.items():
            votes = fused.setdefault(qid, {})
            for rank, (docid, _) in enumerate(rank_order(docs), start=1):
                votes[docid] = votes.get(docid, 0.0) + 1.0 / (k + rank)
    return fused


def obvious_linear(runs, weights, normalization):
    def normalize(docs):
        values = list(docs.values())
        if normalization == "min_max":
            low, high = min(values), max(values)
            return {d: 1.0 if high == low else (s - low) / (high - low) for d, s in docs.items()}
        if normalization == "zscore":
            mean = math.fsum(values) / len(values)
            std = math.sqrt(math.fsum((s - mean) * (s - mean) for s in values) / len(values))
            return {d: 0.0 if std == 0.0 else (s - mean) / std for d, s in docs.items()}
        return dict(docs)

    fused = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, docs in run.items():
            sums = fused.setdefault(qid, {})
            for docid, score in (normalize(docs) if docs else {}).items():
                sums[docid] = sums.get(docid, 0.0) + weight * score
    return fused


def random_runs(rng, count):
    runs = []
    for _ in range(count):
        run = {}
        for qid in rng.choice(["q1", "q2", "q3"], size=rng.integers(0, 4), replace=False):
            docids = [f"d{i}" for i in rng.choice(50, size=rng.integers(0, 30), replace=False)]
            values = rng.choice([0.0, -0.0, 1.5, 2.0], size=len(docids)) if rng.random() < 0.3 else None
            scores = (
                values if values is not None else rng.normal(size=len(docids)) * 10.0 ** rng.integers(-3, 3)
            )
            run[str(qid)] = dict(zip(docids, scores.tolist(), strict=True))
        runs.append(run)
    return runs


def same_floats(found, expected):
    """Every query, document and bit equal; each list in evaluated order."""
    assert found.keys() == expected.keys()
    for qid, docs in expected.items():
        assert sorted(found[qid].items()) == sorted(docs.items())
        assert list(found[qid].items()) == rank_order(found[qid])


def test_rrf_equals_the_obvious_loop_bit_for_bit():
    rng = np.random.default_rng(11)
    for _ in range(40):
        runs = random_runs(rng, int(rng.integers(1, 4)))
        for k in (0, 60, 2.5):
            same_floats(rrf(runs, k=k), obvious_rrf(runs, k))


@pytest.mark.parametrize("normalization", ["min_max", "zscore", "none"])
def test_linear_equals_the_obvious_loop_bit_for_bit(normalization):
    rng = np.random.default_rng(5)
    for _ in range(40):
        runs = random_runs(rng, int(rng.integers(1, 4)))
        weights = rng.random(len(runs)).tolist()
        expected = obvious_linear(runs, weights, normalization)
        same_floats(linear(runs, weights, normalization), expected)


def test_aligned_lists_are_in_docid_order_with_presence():
    aligned = align([{"b": 2.0, "a": 1.0}, {}, {"c": 0.5, "a": 3.0}])
    assert aligned.docids.tolist() == ["a", "b", "c"]
    assert aligned.scores.tolist() == [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.5]]
    assert aligned.present.tolist() == [[True, True, False], [False] * 3, [True, False, True]]


def test_ranked_breaks_ties_by_docid_descending_and_leaves_out_the_excluded_id():
    aligned = align([{"a": 1.0, "c": 1.0, "b": 2.0, "q": 5.0}])
    fused = aligned.scores[0]
    assert list(ranked(aligned, fused)) == ["q", "b", "c", "a"]
    assert ranked(aligned, fused, k=2, exclude="q") == {"b": 2.0, "c": 1.0}


def test_docids_ending_in_nul_keep_python_order():
    docids = ["a\x00", "a", "b"]
    array = docid_array(docids)
    assert array.dtype == object and sorted(array.tolist()) == sorted(docids)
    aligned = align([dict.fromkeys(docids, 1.0)])
    assert aligned.docids.tolist() == ["a", "a\x00", "b"]
    assert list(ranked(aligned, aligned.scores[0])) == ["b", "a\x00", "a"]
