"""Fusion of several runs into one, selected by name with declared parameters (ranx style).

Each method is a small object that declares its parameters (default, range, help, and the option that sets
it), checks them, fuses, and names itself for a run tag. The options the CLI shows (``--fusion``,
``--rrf-k``, ``--normalization``) are made from these declarations, so a method's defaults and ranges live
here and nowhere else; the search plan and ``lyre fuse`` both go through :func:`method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from lyre.basics.declared import OptionSpec, check_value, spec_field
from lyre.basics.errors import LyreError, OptionError
from lyre.formats.records import Run
from lyre.retrieval.fusion.aligned import Aligned, fuse_runs, ranked
from lyre.retrieval.fusion.linear import DEFAULT_NORMALIZATION, linear, linear_scores
from lyre.retrieval.fusion.rrf import DEFAULT_K, MAX_K, rrf, rrf_scores
from lyre.retrieval.normalization import NORMALIZATIONS


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a fusion method: its declaration, and the option that sets it.

    ``option`` is None for a parameter the caller computes (linear weights come from ``weight`` in a
    search and from ``weights`` in ``lyre fuse``)."""

    name: str
    default: Any
    spec: OptionSpec
    option: str | None = None

    def field(self) -> Any:
        """This parameter as a declared option field (the CLI flag of :attr:`option`)."""
        return spec_field(self.default, self.spec)

    def check(self, value: Any) -> None:
        """Raise :class:`OptionError`, naming the option that set the value, when it is out of range."""
        check_value(self.option or self.name, value, self.spec)


@dataclass(frozen=True)
class FusionMethod:
    """A fusion method: its function, declared parameters, and how a run tag names a use of it."""

    name: str
    scores: Callable[..., np.ndarray]
    """One query's fused scores from its :class:`~retrieval.fusion.aligned.Aligned` lists."""
    params: tuple[Param, ...]
    summary: str
    label: Callable[[Mapping[str, Any]], str]
    """The short name of one use of the method in a run tag (``rrf60``, ``linear0.3,0.7``)."""

    def param(self, name: str) -> Param:
        return next(param for param in self.params if param.name == name)

    def arguments(self, options: Any, **supplied: Any) -> dict[str, Any]:
        """This method's keyword arguments: ``supplied`` values for the parameters they name, the
        rest read from ``options`` (an object with the parameters' option fields). Supplied values the
        method does not take are left out, so a caller can offer what any method might need."""
        arguments = {}
        for param in self.params:
            if param.name in supplied:
                arguments[param.name] = supplied[param.name]
            elif param.option is not None:
                arguments[param.name] = getattr(options, param.option)
        return arguments

    def check(self, arguments: Mapping[str, Any]) -> None:
        """Unknown parameters and out-of-range values are one-line errors, raised before any work."""
        known = {param.name for param in self.params}
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise LyreError(
                f"fusion {self.name!r} has no parameter {unknown[0]!r}; it takes {', '.join(sorted(known))}"
            )
        for param in self.params:
            if param.name in arguments:
                param.check(arguments[param.name])

    def fuse(self, runs: Sequence[Run], arguments: Mapping[str, Any]) -> Run:
        """``runs`` fused query by query, each list in evaluated order."""
        self.check(arguments)
        return fuse_runs(runs, lambda aligned: self.scores(aligned, **arguments))

    def top(
        self, aligned: Aligned, arguments: Mapping[str, Any], k: int, exclude: str | None = None
    ) -> dict[str, float]:
        """One query's fused top ``k`` in evaluated order without ``exclude`` (``arguments`` checked by
        the caller)."""
        return ranked(aligned, self.scores(aligned, **arguments), k, exclude)


def _linear_label(arguments: Mapping[str, Any]) -> str:
    weights = arguments.get("weights")
    label = "linear" + (",".join(f"{weight:g}" for weight in weights) if weights else "")
    normalization = arguments.get("normalization", DEFAULT_NORMALIZATION)
    return label if normalization == DEFAULT_NORMALIZATION else f"{label}-{normalization}"


FUSION_METHODS: dict[str, FusionMethod] = {
    "rrf": FusionMethod(
        name="rrf",
        scores=rrf_scores,
        params=(
            Param(
                "k",
                DEFAULT_K,
                OptionSpec("RRF rank offset k in 1 / (k + rank), ranks 1-based", minimum=1, maximum=MAX_K),
                option="rrf_k",
            ),
        ),
        summary="reciprocal rank fusion",
        label=lambda arguments: f"rrf{arguments['k']:g}",
    ),
    "linear": FusionMethod(
        name="linear",
        scores=linear_scores,
        params=(
            Param("weights", None, OptionSpec("one weight per run (default: equal weights summing to 1)")),
            Param(
                "normalization",
                DEFAULT_NORMALIZATION,
                OptionSpec("linear fusion: per-query score normalisation", choices=tuple(NORMALIZATIONS)),
                option="normalization",
            ),
        ),
        summary="weighted sum of normalised scores; absent documents contribute 0",
        label=_linear_label,
    ),
}
DEFAULT_METHOD = "rrf"


def method(name: str) -> FusionMethod:
    """The method called ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in FUSION_METHODS:
        raise OptionError("fusion", name, f"is not known; use one of {', '.join(FUSION_METHODS)}")
    return FUSION_METHODS[name]


def fuse(runs: Sequence[Run], name: str = DEFAULT_METHOD, **arguments: Any) -> Run:
    """Fuse ``runs`` with the named method; unknown methods or parameters are one-line errors."""
    return method(name).fuse(runs, arguments)


__all__ = ["DEFAULT_METHOD", "FUSION_METHODS", "FusionMethod", "Param", "fuse", "linear", "method", "rrf"]
