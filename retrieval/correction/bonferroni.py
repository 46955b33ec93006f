"""Bonferroni: each of m p-values multiplied by m, capped at 1 (family-wise error, the simplest bound)."""

from __future__ import annotations

from collections.abc import Sequence


def adjust(p_values: Sequence[float]) -> list[float]:
    """Bonferroni-adjusted p-values, in the order given."""
    return [min(1.0, len(p_values) * p) for p in p_values]
