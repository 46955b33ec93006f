"""Per-query score normalisations, selected by name (ranx style: one module per method)."""

from __future__ import annotations

from collections.abc import Callable

from basics.errors import OptionError
from formats.records import Run
from retrieval.normalization.min_max import min_max
from retrieval.normalization.zscore import zscore


def _identity(doc_scores: dict[str, float]) -> dict[str, float]:
    return dict(doc_scores)


NORMALIZATIONS: dict[str, Callable[[dict[str, float]], dict[str, float]]] = {
    "min_max": min_max,
    "zscore": zscore,
    "none": _identity,
}
"""Name -> function over one query's ``{docid: score}``; the names the CLI accepts."""


def normalize_run(run: Run, method: str) -> Run:
    """Normalise every query's list of ``run`` on its own (scores of different queries are never mixed)."""
    if method not in NORMALIZATIONS:
        raise OptionError("normalization", method, f"is not known; use one of {', '.join(NORMALIZATIONS)}")
    function = NORMALIZATIONS[method]
    return {qid: function(doc_scores) for qid, doc_scores in run.items()}


__all__ = ["NORMALIZATIONS", "min_max", "normalize_run", "zscore"]
