"""Fusion of several runs into one, selected by name with declared parameters (ranx style).

The registry lets the CLI list the methods and their parameters in ``--help`` and validate them, without
knowing each function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from basics.errors import LyreError
from formats.records import Run
from retrieval.fusion.linear import linear
from retrieval.fusion.rrf import rrf
from retrieval.normalization import NORMALIZATIONS


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a fusion method, as the CLI shows it."""

    name: str
    default: Any
    help: str


@dataclass(frozen=True)
class FusionMethod:
    name: str
    function: Callable[..., Run]
    params: tuple[Param, ...]
    summary: str


FUSION_METHODS: dict[str, FusionMethod] = {
    "rrf": FusionMethod(
        name="rrf",
        function=rrf,
        params=(Param("k", 60, "rank offset in 1 / (k + rank); ranks are 1-based, absent documents get 0"),),
        summary="reciprocal rank fusion",
    ),
    "linear": FusionMethod(
        name="linear",
        function=linear,
        params=(
            Param("weights", None, "one weight per run (default: equal weights summing to 1)"),
            Param("normalization", "min_max", f"per-query normalisation: {', '.join(NORMALIZATIONS)}"),
        ),
        summary="weighted sum of normalised scores; absent documents contribute 0",
    ),
}


def fuse(runs: Sequence[Run], method: str = "rrf", **params: Any) -> Run:
    """Fuse ``runs`` with the named method; unknown methods or parameters are one-line errors."""
    if method not in FUSION_METHODS:
        raise LyreError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    fusion = FUSION_METHODS[method]
    known = {param.name for param in fusion.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise LyreError(
            f"fusion {method!r} has no parameter {unknown[0]!r}; it takes {', '.join(sorted(known))}"
        )
    return fusion.function(runs, **params)


__all__ = ["FUSION_METHODS", "FusionMethod", "Param", "fuse", "linear", "rrf"]
