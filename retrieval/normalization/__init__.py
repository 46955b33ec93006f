"""Per-query score normalisations, selected by name (ranx style: one module per method).

Each method maps one query's scores (a float64 array in the list's order) to normalised scores in the
same order: the fusion methods work on arrays, and :func:`normalize_run` applies a method to a whole run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from lyre.basics.errors import OptionError
from lyre.formats.records import Run
from lyre.retrieval.normalization.min_max import min_max
from lyre.retrieval.normalization.zscore import zscore


def _identity(scores: np.ndarray) -> np.ndarray:
    return scores.astype(np.float64)


NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "min_max": min_max,
    "zscore": zscore,
    "none": _identity,
}
"""Name -> function over one query's scores; the names the CLI accepts."""


def normalizer(method: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function called ``method``; an unknown name is a one-line error listing the known ones."""
    if method not in NORMALIZATIONS:
        raise OptionError("normalization", method, f"is not known; use one of {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[method]


def normalize_run(run: Run, method: str) -> Run:
    """Normalise every query's list of ``run`` on its own (scores of different queries are never mixed)."""
    function = normalizer(method)
    return {
        qid: dict(zip(doc_scores, function(scores_of(doc_scores)).tolist(), strict=True))
        for qid, doc_scores in run.items()
    }


def scores_of(doc_scores: dict[str, float]) -> np.ndarray:
    """One query's scores as float64, in the list's order."""
    return np.fromiter(doc_scores.values(), dtype=np.float64, count=len(doc_scores))


__all__ = ["NORMALIZATIONS", "min_max", "normalize_run", "normalizer", "scores_of", "zscore"]
