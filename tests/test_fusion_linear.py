import math

import pytest
from lyre.basics.errors import LyreError, OptionError
from lyre.retrieval.fusion import fuse, linear
from lyre.retrieval.fusion.linear import parse_weights


def test_min_max_weighted_sum_closed_form():
    bm25 = {"q": {"a": 10.0, "b": 5.0, "c": 0.0}}  # -> a 1, b 0.5, c 0
    dense = {"q": {"b": 0.8, "d": 0.4}}  # -> b 1, d 0
    out = linear([bm25, dense], weights=[0.3, 0.7], normalization="min_max")
    assert out["q"] == pytest.approx({"a": 0.3, "b": 0.3 * 0.5 + 0.7, "c": 0.0, "d": 0.0})


def test_default_weights_are_equal():
    out = linear([{"q": {"a": 2.0, "b": 0.0}}, {"q": {"a": 0.0, "b": 1.0, "c": 0.5}}])
    assert out["q"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.25})


def test_zscore_absent_document_contributes_nothing():
    s = math.sqrt(2 / 3)
    out = linear([{"q": {"a": 1.0, "b": 2.0, "c": 3.0}}, {"q": {"d": 7.0}}], [1.0, 1.0], "zscore")
    assert out["q"] == pytest.approx({"a": -1 / s, "b": 0.0, "c": 1 / s, "d": 0.0})


def test_none_normalization_sums_raw_scores():
    out = linear([{"q": {"a": 2.0}}, {"q": {"a": 3.0}, "q2": {"b": 1.0}}], [1.0, 2.0], "none")
    assert out == {"q": {"a": 8.0}, "q2": {"b": 2.0}}


def test_empty_safe():
    assert linear([{"q": {}}, {"q": {"a": 1.0}}]) == {"q": {"a": 0.5}}
    assert linear([]) == {}


def test_weight_count_must_match_runs():
    with pytest.raises(LyreError, match="2 weights for 3 runs"):
        linear([{}, {}, {}], weights=[0.5, 0.5])


def test_registry_passes_parameters():
    out = fuse([{"q": {"a": 1.0, "b": 0.0}}], "linear", weights=[2.0], normalization="min_max")
    assert out == {"q": {"a": 2.0, "b": 0.0}}


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ([0.0, 0.0], "are all zero"),
        ([1e308, 1e308], "sum beyond the float range"),
        ([math.inf, 1.0], "must not be negative (each a finite number >= 0)"),
        ([math.nan, 1.0], "must not be negative (each a finite number >= 0)"),
        ([-0.5, 1.5], "must not be negative"),
    ],
)
def test_weights_no_one_means_are_refused(weights: list[float], problem: str) -> None:
    with pytest.raises(OptionError) as caught:
        linear([{"q": {"a": 1.0}}, {"q": {"b": 2.0}}], weights=weights)
    assert caught.value.option == "weights" and problem in str(caught.value)


def test_typed_weights_are_parsed_and_checked_once() -> None:
    assert parse_weights("0.3,0.7", 2) == [0.3, 0.7] and parse_weights(None, 2) is None
    with pytest.raises(OptionError, match="weights 0,0: are all zero"):
        parse_weights("0,0", 2)
    with pytest.raises(OptionError, match="has 3 values for 2 runs"):
        parse_weights("1,2,3", 2)


def test_a_fused_score_beyond_the_float_range_is_refused_never_inf() -> None:
    runs = [{"q": {"a": 10.0, "b": 1.0}}, {"q": {"a": 10.0}}]
    with pytest.raises(OptionError, match="fused scores beyond the float range"):
        linear(runs, weights=[1e307, 1e307], normalization="none")
    finite = linear(runs, weights=[1e306, 1e306], normalization="none")  # 2e307: within the range
    assert finite["q"] == {"a": 2e307, "b": 1e306}
