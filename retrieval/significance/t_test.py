"""Paired Student t-test: t = mean(d) / (sd(d) / sqrt(n)) with n - 1 degrees of freedom, two-sided.

The same statistic as ``scipy.stats.ttest_rel(run, baseline)``. Differences that are all equal have no
spread: identical runs get p = 1, a constant non-zero shift gets p = 0 (scipy answers NaN for both).
"""

from __future__ import annotations

import math

import numpy as np
from lyre.retrieval.significance.differences import as_differences


def _mean_and_error(differences: np.ndarray) -> tuple[float, float]:
    values = as_differences(differences)
    return float(values.mean()), float(values.std(ddof=1)) / math.sqrt(values.size)


def p_value(differences: np.ndarray, *, samples: int = 0, seed: int = 0) -> float:
    """Two-sided p-value of the paired t-test (``samples`` and ``seed`` are unused: it is exact)."""
    from scipy import stats

    mean, error = _mean_and_error(differences)
    if error == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    degrees = np.asarray(differences).size - 1
    return float(2.0 * stats.t.sf(abs(mean / error), degrees))


def interval(
    differences: np.ndarray, *, confidence: float = 0.95, samples: int = 0, seed: int = 0
) -> tuple[float, float]:
    """The Student t interval of the mean difference: mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)."""
    from scipy import stats

    mean, error = _mean_and_error(differences)
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, np.asarray(differences).size - 1)) * error
    return mean - half, mean + half
