from types import SimpleNamespace

import pytest
from lyre.basics.errors import LyreError, OptionError
from lyre.retrieval.fusion import FUSION_METHODS, fuse, rrf


def test_rrf_closed_form_with_one_based_ranks():
    bm25 = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    dense = {"q": {"b": 0.9, "d": 0.8}}
    out = rrf([bm25, dense], k=60)
    assert out["q"] == pytest.approx(
        {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62}, rel=0, abs=1e-15
    )


def test_absent_documents_get_no_credit():
    out = rrf([{"q": {"a": 1.0}}, {"q": {"b": 1.0}}], k=0)
    assert out == {"q": {"a": 1.0, "b": 1.0}}


def test_ties_are_ranked_in_evaluated_order_docid_descending():
    # Equal scores: trec_eval ranks "b" before "a" (docid descending), so "b" is rank 1.
    out = rrf([{"q": {"a": 5.0, "b": 5.0}}], k=0)
    assert out == {"q": {"b": 1.0, "a": 0.5}}


def test_empty_safe_when_a_side_has_no_hits():
    bm25 = {"q1": {}, "q2": {"x": 2.0}}
    dense = {"q1": {"y": 0.5, "z": 0.4}}
    out = rrf([bm25, dense], k=60)
    assert out == {"q1": {"y": 1 / 61, "z": 1 / 62}, "q2": {"x": 1 / 61}}
    assert rrf([{"q": {}}, {}], k=60) == {"q": {}}
    assert rrf([], k=60) == {}


@pytest.mark.parametrize("k", [-1, float("nan"), 10**30])
def test_k_outside_its_range_is_rejected(k: float) -> None:
    with pytest.raises(LyreError, match="k must be between 0 and 1,000,000"):
        rrf([{"q": {"a": 1.0}}], k=k)


def test_the_largest_k_still_orders_by_rank() -> None:
    fused = rrf([{"q": {"a": 3.0, "b": 2.0, "c": 1.0}}], k=1_000_000)
    assert list(fused["q"]) == ["a", "b", "c"]
    assert fused["q"]["a"] == 1.0 / 1_000_001 and fused["q"]["c"] == 1.0 / 1_000_003


def test_registry_lists_methods_and_validates_parameters():
    assert set(FUSION_METHODS) == {"rrf", "linear"}
    assert [param.name for param in FUSION_METHODS["rrf"].params] == ["k"]
    assert fuse([{"q": {"a": 1.0}}], "rrf", k=1) == {"q": {"a": 0.5}}
    with pytest.raises(LyreError, match="no parameter 'alpha'"):
        fuse([{"q": {"a": 1.0}}], "rrf", alpha=0.5)
    with pytest.raises(OptionError, match="comb: is not known; use one of rrf, linear"):
        fuse([], "comb")


def test_registry_checks_declared_ranges_naming_the_option_that_set_them():
    with pytest.raises(OptionError) as caught:
        fuse([{"q": {"a": 1.0}}], "rrf", k=0)
    assert caught.value.option == "rrf_k" and "at least 1" in str(caught.value)


def test_labels_name_a_use_of_each_method_for_run_tags():
    rrf_method, linear_method = FUSION_METHODS["rrf"], FUSION_METHODS["linear"]
    assert rrf_method.label({"k": 60}) == "rrf60"
    assert linear_method.label({"weights": (0.3, 0.7), "normalization": "min_max"}) == "linear0.3,0.7"
    assert linear_method.label({"weights": None, "normalization": "zscore"}) == "linear-zscore"


def test_arguments_read_declared_options_and_take_only_supplied_values_the_method_has():
    options = SimpleNamespace(rrf_k=10, normalization="none")
    assert FUSION_METHODS["rrf"].arguments(options, weights=(0.5, 0.5)) == {"k": 10}
    assert FUSION_METHODS["linear"].arguments(options, weights=(0.5, 0.5)) == {
        "weights": (0.5, 0.5),
        "normalization": "none",
    }
