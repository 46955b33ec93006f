import math

import numpy as np
import pytest
from lyre.basics.errors import OptionError
from lyre.retrieval.normalization import NORMALIZATIONS, min_max, normalize_run, zscore


def test_min_max_maps_range_to_unit_interval():
    assert min_max(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]


def test_min_max_constant_list_gives_full_credit():
    assert min_max(np.array([2.5])).tolist() == [1.0]
    assert min_max(np.array([-1.0, -1.0])).tolist() == [1.0, 1.0]


def test_zscore_uses_population_std():
    # mean 2, population std sqrt(2/3)
    out = zscore(np.array([1.0, 2.0, 3.0]))
    s = math.sqrt(2 / 3)
    assert out.tolist() == pytest.approx([-1 / s, 0.0, 1 / s])


def test_zscore_constant_list_is_zero_not_nan():
    assert zscore(np.array([4.0, 4.0])).tolist() == [0.0, 0.0]


def test_empty_lists_stay_empty():
    for function in NORMALIZATIONS.values():
        assert function(np.array([])).tolist() == []


def test_normalize_run_is_per_query():
    run = {"q1": {"a": 10.0, "b": 0.0}, "q2": {"a": 1.0, "b": 0.5}, "q3": {}}
    assert normalize_run(run, "min_max") == {"q1": {"a": 1.0, "b": 0.0}, "q2": {"a": 1.0, "b": 0.0}, "q3": {}}
    assert normalize_run(run, "none") == run


def test_unknown_normalization_is_one_line_error():
    with pytest.raises(OptionError, match="min_max, zscore, none"):
        normalize_run({}, "max")


def test_zscore_does_not_depend_on_list_order():
    # Exact sums (fsum): the same scores in another order give the same floats, document by document.
    scores = np.array([0.1, 1e16, 0.3, -1e16, 0.7])
    order = np.array([4, 2, 0, 3, 1])
    assert zscore(scores)[order].tolist() == zscore(scores[order]).tolist()


def test_normalize_run_keeps_each_documents_score():
    run = {"q": {"b": 2.0, "a": 4.0, "c": 0.0}}
    assert normalize_run(run, "min_max") == {"q": {"b": 0.5, "a": 1.0, "c": 0.0}}


def test_scores_near_the_float_limits_normalise_without_overflow() -> None:
    """A range or squared deviations beyond the float range would give inf or nan; the results are those
    of the same list scaled down (min-max and z-scores do not change with scale)."""
    largest = np.finfo(np.float64).max
    extreme = np.array([largest, -largest, 0.0])
    assert min_max(extreme).tolist() == [1.0, 0.0, 0.5]
    assert zscore(extreme).tolist() == pytest.approx([math.sqrt(1.5), -math.sqrt(1.5), 0.0], abs=1e-15)
    assert zscore(np.array([3e200, 1e200, 2e200])).tolist() == pytest.approx(
        [math.sqrt(1.5), -math.sqrt(1.5), 0]
    )
