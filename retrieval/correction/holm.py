"""Holm (1979) step-down: the i-th smallest of m p-values is multiplied by (m - i + 1), then made
non-decreasing in that order and capped at 1. Controls the family-wise error like Bonferroni, never
less powerful."""

from __future__ import annotations

from collections.abc import Sequence


def adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given."""
    count = len(p_values)
    adjusted = [0.0] * count
    running = 0.0
    for position, index in enumerate(sorted(range(count), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (count - position) * p_values[index]))
        adjusted[index] = running
    return adjusted
