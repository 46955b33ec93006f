"""The per-query differences every paired test reads, checked once: its own module, so the tests import it
without importing the registry (:mod:`retrieval.significance`) that imports them."""

from __future__ import annotations

import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count


def as_differences(differences: np.ndarray) -> np.ndarray:
    """The differences as a 1-d float64 array; fewer than two queries cannot be tested."""
    values = np.asarray(differences, dtype=np.float64).reshape(-1)
    if values.size < 2:
        raise LyreError(f"a paired test needs at least 2 queries, got {count(values.size)}; check the qrels")
    return values
