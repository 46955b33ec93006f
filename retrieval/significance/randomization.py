"""Paired randomization (permutation) test: under "no difference", each query's difference is as likely
to have either sign, so the observed mean is compared with the means of ``samples`` random sign flips.

p = (1 + #{|flipped mean| >= |observed mean|}) / (1 + samples), the Monte Carlo estimate that never
reports 0 (Smucker et al., 2007; Phipson & Smyth, 2010). Seeded, so a rerun prints the same p-value.
Flips are drawn in blocks so memory stays bounded for many queries.
"""

from __future__ import annotations

import numpy as np
from lyre.retrieval.significance.differences import as_differences

_BLOCK_ELEMENTS = 1 << 22
_TOLERANCE = 1e-12
"""Sums in another order differ in the last bits; a flip whose mean equals the observed one counts."""


def p_value(differences: np.ndarray, *, samples: int = 10_000, seed: int = 0) -> float:
    """Two-sided Monte Carlo p-value of the mean difference from ``samples`` random sign flips."""
    values = as_differences(differences)
    observed = abs(float(values.mean()))
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // values.size)
    extreme = 0
    for start in range(0, samples, block):
        count = min(block, samples - start)
        signs = rng.integers(0, 2, size=(count, values.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ values) / values.size
        extreme += int(np.count_nonzero(means >= observed - _TOLERANCE))
    return (1 + extreme) / (1 + samples)
