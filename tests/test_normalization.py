import math

import pytest

from basics.errors import OptionError
from retrieval.normalization import NORMALIZATIONS, min_max, normalize_run, zscore


def test_min_max_maps_range_to_unit_interval():
    assert min_max({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 0.0, "c": 0.5}


def test_min_max_constant_list_gives_full_credit():
    assert min_max({"a": 2.5}) == {"a": 1.0}
    assert min_max({"a": -1.0, "b": -1.0}) == {"a": 1.0, "b": 1.0}


def test_zscore_uses_population_std():
    # mean 2, population std sqrt(2/3)
    out = zscore({"a": 1.0, "b": 2.0, "c": 3.0})
    s = math.sqrt(2 / 3)
    assert out == pytest.approx({"a": -1 / s, "b": 0.0, "c": 1 / s})


def test_zscore_constant_list_is_zero_not_nan():
    assert zscore({"a": 4.0, "b": 4.0}) == {"a": 0.0, "b": 0.0}


def test_empty_lists_stay_empty():
    for function in NORMALIZATIONS.values():
        assert function({}) == {}


def test_normalize_run_is_per_query():
    run = {"q1": {"a": 10.0, "b": 0.0}, "q2": {"a": 1.0, "b": 0.5}, "q3": {}}
    assert normalize_run(run, "min_max") == {"q1": {"a": 1.0, "b": 0.0}, "q2": {"a": 1.0, "b": 0.0}, "q3": {}}
    assert normalize_run(run, "none") == run


def test_unknown_normalization_is_one_line_error():
    with pytest.raises(OptionError, match="min_max, zscore, none"):
        normalize_run({}, "max")
