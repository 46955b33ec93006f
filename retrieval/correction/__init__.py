"""Multiple-testing corrections, selected by name (``--correction``).

Comparing several runs against one baseline runs one test per run; each correction turns those raw
p-values into adjusted ones that can be read against the usual level (0.05) as if one test had been run.
The family is the set of comparisons of one measure (every run against the baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lyre.basics.errors import LyreError
from lyre.retrieval.correction import benjamini_hochberg, bonferroni, holm, no_correction

Adjust = Callable[[Sequence[float]], list[float]]


@dataclass(frozen=True)
class Correction:
    name: str
    adjust: Adjust
    summary: str


CORRECTIONS: dict[str, Correction] = {
    "holm": Correction("holm", holm.adjust, "Holm step-down (family-wise error)"),
    "bonferroni": Correction("bonferroni", bonferroni.adjust, "Bonferroni (family-wise error)"),
    "bh": Correction("bh", benjamini_hochberg.adjust, "Benjamini-Hochberg (false discovery rate)"),
    "none": Correction("none", no_correction.adjust, "no correction"),
}


def correction(name: str) -> Correction:
    """The correction called ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in CORRECTIONS:
        raise LyreError(f"unknown correction {name!r}; choose one of {', '.join(CORRECTIONS)}")
    return CORRECTIONS[name]


__all__ = ["CORRECTIONS", "Correction", "correction"]
