"""Paired bootstrap: the test resamples queries from the differences shifted to mean 0 (the null
hypothesis made true, Efron & Tibshirani's shift method; Sakai, 2006) and counts resampled means at least
as far from 0 as the observed one; the interval is the percentile interval of resampled means of the
unshifted differences. Both are seeded and drawn in blocks so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from lyre.retrieval.significance.differences import as_differences

_BLOCK_ELEMENTS = 1 << 22
BLOCK_BYTES = _BLOCK_ELEMENTS * 16
"""Memory of one block of draws: the resampled rows (int64) and their values (float64)."""
_TOLERANCE = 1e-12


def _resampled_means(values: np.ndarray, samples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // values.size)
    for start in range(0, samples, block):
        rows = rng.integers(0, values.size, size=(min(block, samples - start), values.size))
        yield values[rows].mean(axis=1)


def p_value(differences: np.ndarray, *, samples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value, (1 + #{|resampled mean| >= |observed mean|}) / (1 + samples)."""
    values = as_differences(differences)
    observed = abs(float(values.mean()))
    extreme = sum(
        int(np.count_nonzero(np.abs(means) >= observed - _TOLERANCE))
        for means in _resampled_means(values - values.mean(), samples, seed)
    )
    return (1 + extreme) / (1 + samples)


def interval(
    differences: np.ndarray, *, confidence: float = 0.95, samples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean difference over ``samples`` resamples of the queries."""
    values = as_differences(differences)
    means = np.empty(samples)
    start = 0
    for block in _resampled_means(values, samples, seed):
        means[start : start + len(block)] = block
        start += len(block)
    low, high = np.quantile(means, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)
