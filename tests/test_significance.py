"""Paired tests against scipy, exact enumeration and independent simple implementations."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from lyre.basics.errors import LyreError
from lyre.retrieval.significance import SIGNIFICANCE_TESTS, paired_test
from scipy import stats

RNG = np.random.default_rng(7)
BASELINE = RNG.uniform(0, 1, 60)
RUN = np.clip(BASELINE + RNG.normal(0.04, 0.15, 60), 0, 1)
DIFFERENCES = RUN - BASELINE


def monte_carlo_bound(p: float, samples: int) -> float:
    """Four standard errors of a Monte Carlo p-value estimated from ``samples`` draws."""
    return 4.0 * np.sqrt(max(p * (1.0 - p), 1e-4) / samples)


def test_t_test_equals_scipy_ttest_rel_and_its_interval() -> None:
    test = paired_test("t")
    expected = stats.ttest_rel(RUN, BASELINE)
    assert test.p_value(DIFFERENCES) == pytest.approx(expected.pvalue, abs=1e-12)
    low, high = test.interval(DIFFERENCES, confidence=0.95)
    ci = expected.confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_randomization_matches_exact_enumeration_within_monte_carlo_error() -> None:
    """With 12 queries all 4096 sign patterns can be enumerated: the exact two-sided p-value."""
    differences = np.array([0.31, -0.05, 0.12, 0.2, 0.0, 0.07, -0.11, 0.15, 0.09, -0.02, 0.18, 0.04])
    observed = abs(differences.mean())
    flips = [
        abs(np.dot(signs, differences)) / differences.size for signs in itertools.product((1, -1), repeat=12)
    ]
    exact = sum(f >= observed - 1e-12 for f in flips) / len(flips)
    estimate = paired_test("randomization").p_value(differences, samples=20_000, seed=3)
    assert abs(estimate - exact) < monte_carlo_bound(exact, 20_000)
    assert 0.0 < exact < 0.1  # a case where the test matters, not a trivial p of 1


def test_randomization_agrees_with_an_independent_loop_implementation() -> None:
    samples = 4000
    rng = random.Random(11)
    observed = abs(sum(DIFFERENCES)) / DIFFERENCES.size
    extreme = 0
    for _ in range(samples):
        total = sum(d if rng.random() < 0.5 else -d for d in DIFFERENCES)
        extreme += abs(total) / DIFFERENCES.size >= observed
    independent = (extreme + 1) / (samples + 1)
    ours = paired_test("randomization").p_value(DIFFERENCES, samples=10_000, seed=0)
    assert abs(ours - independent) < monte_carlo_bound(independent, samples) + monte_carlo_bound(ours, 10_000)


def test_bootstrap_agrees_with_an_independent_loop_implementation() -> None:
    samples = 4000
    rng = random.Random(5)
    centred = DIFFERENCES - DIFFERENCES.mean()
    observed = abs(DIFFERENCES.mean())
    means = [sum(rng.choice(centred) for _ in centred) / centred.size for _ in range(samples)]
    independent = (sum(abs(m) >= observed for m in means) + 1) / (samples + 1)
    test = paired_test("bootstrap")
    ours = test.p_value(DIFFERENCES, samples=10_000, seed=0)
    assert abs(ours - independent) < monte_carlo_bound(independent, samples) + monte_carlo_bound(ours, 10_000)
    low, high = test.interval(DIFFERENCES, confidence=0.95, samples=10_000, seed=0)
    raw_means = sorted(
        sum(rng.choice(DIFFERENCES) for _ in DIFFERENCES) / DIFFERENCES.size for _ in range(samples)
    )
    se = DIFFERENCES.std(ddof=1) / np.sqrt(DIFFERENCES.size)
    assert low == pytest.approx(raw_means[int(0.025 * samples)], abs=0.3 * se)
    assert high == pytest.approx(raw_means[int(0.975 * samples)], abs=0.3 * se)


def test_wilcoxon_exact_closed_form() -> None:
    """Five positive differences of distinct size: only the all-positive and all-negative sign patterns are
    as extreme, so the exact two-sided p-value is 2 / 2**5; zeros are dropped first."""
    differences = np.array([0.1, 0.2, 0.0, 0.3, 0.45, 0.5])
    assert paired_test("wilcoxon").p_value(differences) == pytest.approx(2 / 32, abs=1e-12)


def test_seeded_tests_repeat_and_identical_runs_get_p_one() -> None:
    for name in ("randomization", "bootstrap"):
        test = paired_test(name)
        assert test.p_value(DIFFERENCES, samples=2000, seed=4) == test.p_value(
            DIFFERENCES, samples=2000, seed=4
        )
    for test in SIGNIFICANCE_TESTS.values():
        assert test.p_value(np.zeros(10), samples=1000, seed=0) == 1.0
        assert test.interval(np.zeros(10), confidence=0.95, samples=1000, seed=0) == (0.0, 0.0)


def test_a_large_shift_is_significant_and_too_few_queries_are_refused() -> None:
    shifted = DIFFERENCES + 0.3
    for test in SIGNIFICANCE_TESTS.values():
        assert test.p_value(shifted, samples=1000, seed=0) < 0.002
        with pytest.raises(LyreError, match="at least 2 queries"):
            test.p_value(np.array([0.1]), samples=1000, seed=0)
    with pytest.raises(LyreError, match="randomization"):
        paired_test("sign")
