"""Wilcoxon signed-rank test (scipy): ranks of |differences|, zero differences dropped (Wilcoxon's
convention), exact distribution for few queries and the normal approximation otherwise, two-sided.
When every difference is 0 the runs agree on every query and p = 1 (scipy refuses that case).
"""

from __future__ import annotations

import numpy as np
from lyre.retrieval.significance.differences import as_differences


def p_value(differences: np.ndarray, *, samples: int = 0, seed: int = 0) -> float:
    """Two-sided p-value of the signed-rank test (``samples`` and ``seed`` are unused)."""
    from scipy import stats

    values = as_differences(differences)
    if not np.any(values != 0.0):
        return 1.0
    return float(stats.wilcoxon(values, zero_method="wilcox", alternative="two-sided").pvalue)
