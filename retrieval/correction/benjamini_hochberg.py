"""Benjamini-Hochberg (1995) step-up: the i-th smallest of m p-values becomes p * m / i, then the
running minimum from the largest down, capped at 1. Controls the false discovery rate, not the
family-wise error, so it rejects more when many runs are compared."""

from __future__ import annotations

from collections.abc import Sequence


def adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg-adjusted p-values (q-values), in the order given."""
    count = len(p_values)
    adjusted = [0.0] * count
    running = 1.0
    order = sorted(range(count), key=lambda i: p_values[i])
    for rank in range(count, 0, -1):
        index = order[rank - 1]
        running = min(running, p_values[index] * count / rank)
        adjusted[index] = running
    return adjusted
