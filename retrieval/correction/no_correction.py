"""No correction: the raw p-values, for a single planned comparison or for readers who correct later."""

from __future__ import annotations

from collections.abc import Sequence


def adjust(p_values: Sequence[float]) -> list[float]:
    """The p-values unchanged (as a new list)."""
    return list(p_values)
