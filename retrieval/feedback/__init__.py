"""Pseudo-relevance feedback, selected by name with declared parameters (as :mod:`retrieval.fusion`).

Two sides, one registry each:

- the BM25 side (``prf``): ``rm3``, ``rocchio`` and ``bo1`` expand the query with terms of the first
  search's top documents (:mod:`~retrieval.feedback.term_vectors` holds what they read); the expanded,
  weighted query is searched again through the same BM25 index;
- the dense side (``dense_prf``): ``rocchio`` moves the query vector toward its top documents' stored
  vectors and searches again through the same dense index.

Each method declares its parameters (the option that sets it, its default, its range, where the default
comes from); the options the CLI shows (``--prf-docs``, ``--rocchio-beta``, ``--dense-prf-alpha``...) are
made from these declarations (:mod:`retrieval.options`), so a method's defaults live here and nowhere
else. Options several methods share (``prf_docs``, ``prf_terms``, ``prf_weight``) default to None: each
method then takes its own published default (Anserini's for RM3 and Rocchio, Terrier's for Bo1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lyre.basics.declared import OptionSpec, check_value, option, spec_field
from lyre.basics.errors import OptionError, opt
from lyre.retrieval.feedback import bo1, dense_rocchio, rm3, rocchio

NONE = "none"
"""The choice that turns a side's feedback off."""


@dataclass(frozen=True)
class Param:
    """One parameter of a feedback method: the option that sets it, the method's default, its range, and
    where the default comes from (said in the help)."""

    option: str
    default: Any
    spec: OptionSpec
    origin: str

    def field(self) -> Any:
        """This parameter as a declared option field with the method's default (a parameter of one method)."""
        return spec_field(self.default, self.spec, help=f"{self.spec.help} (default: {self.origin})")

    def check(self, method: str, value: Any) -> None:
        """Raise :class:`OptionError` naming the option and the method when ``value`` is out of range."""
        try:
            check_value(self.option, value, self.spec)
        except OptionError as error:
            raise OptionError(self.option, value, f"{_problem(error)} for {method} feedback") from None


def _problem(error: OptionError) -> str:
    return Exception.__str__(error).removeprefix(f"{opt(error.option)} {error.value}: ")


@dataclass(frozen=True)
class FeedbackMethod:
    """A feedback method: its formula (``apply``), declared parameters, and a one-line summary."""

    name: str
    summary: str
    params: tuple[Param, ...]
    apply: Callable[..., Any]
    """BM25 side: ``(FeedbackSet, settings) -> {term: weight}``; dense side: ``(query, documents, settings)
    -> moved vector``."""
    reads_collection_frequency: bool = False
    """Whether it weighs terms by their collection frequency (a format-2 BM25 folder keeps them)."""
    documents: str = "prf_docs"
    """The option that says how many first-stage documents it reads."""

    def param(self, option_name: str) -> Param:
        return next(param for param in self.params if param.option == option_name)

    def settings(self, options: Any) -> dict[str, Any]:
        """Each parameter's value: the option's where it is set, else this method's default."""
        values = {}
        for param in self.params:
            given = getattr(options, param.option)
            values[param.option] = param.default if given is None else given
        return values

    def check(self, options: Any) -> dict[str, Any]:
        """This method's settings from ``options``, each checked against the method's range; a method with
        weights declares which may not all be zero (the query would vanish)."""
        settings = self.settings(options)
        for param in self.params:
            param.check(self.name, settings[param.option])
        weights = [name for name in settings if name in WEIGHTS]
        if len(weights) > 1 and not any(settings[name] for name in weights):
            raise OptionError(
                weights[0],
                0,
                f"with {opt(weights[1])} 0 leaves no query to search; give one of them a positive weight",
            )
        return settings


WEIGHTS = ("prf_weight", "rocchio_beta", "dense_prf_alpha", "dense_prf_beta")
"""The weights of a method's parts: for Rocchio (both sides), the query's and the documents'."""


def _docs(default: int, origin: str) -> Param:
    return Param("prf_docs", default, OptionSpec("Feedback documents", minimum=1), origin)


def _terms(default: int, origin: str) -> Param:
    return Param("prf_terms", default, OptionSpec("Expansion terms", minimum=1), origin)


def _weight(default: float, origin: str, maximum: float | None = None) -> Param:
    return Param("prf_weight", default, OptionSpec("Weight of the query", minimum=0, maximum=maximum), origin)


TERM_METHODS: dict[str, FeedbackMethod] = {
    "rm3": FeedbackMethod(
        "rm3",
        "relevance model interpolated with the query (Anserini's -rm3)",
        (
            _docs(10, "Anserini -rm3.fbDocs"),
            _terms(10, "Anserini -rm3.fbTerms"),
            _weight(0.5, "Anserini -rm3.originalQueryWeight", maximum=1),
        ),
        rm3.expand,
    ),
    "rocchio": FeedbackMethod(
        "rocchio",
        "query vector moved toward the mean document vector (Anserini's -rocchio)",
        (
            _docs(10, "Anserini -rocchio.topFbDocs"),
            _terms(10, "Anserini -rocchio.topFbTerms"),
            _weight(1.0, "Anserini -rocchio.alpha"),
            Param(
                "rocchio_beta",
                0.75,
                OptionSpec("rocchio feedback: weight of the mean feedback document", minimum=0),
                "Anserini -rocchio.beta",
            ),
        ),
        rocchio.expand,
    ),
    "bo1": FeedbackMethod(
        "bo1",
        "Bose-Einstein weighted feedback terms, parameter-free (Terrier's Bo1)",
        (
            _docs(3, "Terrier expansion.documents"),
            _terms(10, "Terrier expansion.terms"),
            _weight(1.0, "Terrier's query weights"),
        ),
        bo1.expand,
        reads_collection_frequency=True,
    ),
}
"""The BM25 side's methods (``prf``)."""

VECTOR_METHODS: dict[str, FeedbackMethod] = {
    "rocchio": FeedbackMethod(
        "rocchio",
        "query vector moved toward its top documents' vectors (Li et al. 2021)",
        (
            Param(
                "dense_prf_docs",
                5,
                OptionSpec("dense feedback: documents (passages on a passage index) averaged", minimum=1),
                "5, Pyserini's vector-PRF reproduction",
            ),
            Param(
                "dense_prf_alpha",
                0.4,
                OptionSpec("dense feedback: weight of the query vector", minimum=0),
                "0.4, Pyserini's vector-PRF reproduction",
            ),
            Param(
                "dense_prf_beta",
                0.6,
                OptionSpec("dense feedback: weight of the mean document vector", minimum=0),
                "0.6, Pyserini's vector-PRF reproduction",
            ),
        ),
        dense_rocchio.move,
        documents="dense_prf_docs",
    ),
}
"""The dense side's methods (``dense_prf``)."""


SETTINGS = (
    "prf",
    *dict.fromkeys(param.option for method in TERM_METHODS.values() for param in method.params),
    "dense_prf",
    *dict.fromkeys(param.option for method in VECTOR_METHODS.values() for param in method.params),
)
"""Every feedback option: each changes a side's first-stage list."""


def shared_field(option_name: str, help: str) -> Any:
    """An option several BM25-side methods share, default None (each method's own), its help listing every
    method's default and where it comes from."""
    params = [(name, method.param(option_name)) for name, method in TERM_METHODS.items()]
    defaults = "; ".join(f"{name} {param.default:g} ({param.origin})" for name, param in params)
    spec = params[0][1].spec
    return option(None, f"{help} (default: {defaults}).", minimum=spec.minimum)


def choices_help(side: str, methods: Mapping[str, FeedbackMethod]) -> str:
    """The help of a side's method option: each method's summary, and ``none``."""
    listed = "; ".join(f"{name}: {method.summary}" for name, method in methods.items())
    return f"Pseudo-relevance feedback on the {side} side: {listed}; {NONE}: off."


def term_method(name: str) -> FeedbackMethod | None:
    """The BM25-side method called ``name`` (None for ``none``); an unknown name is one line."""
    return _method("prf", name, TERM_METHODS)


def vector_method(name: str) -> FeedbackMethod | None:
    """The dense-side method called ``name`` (None for ``none``); an unknown name is one line."""
    return _method("dense_prf", name, VECTOR_METHODS)


def _method(option_name: str, name: str, methods: Mapping[str, FeedbackMethod]) -> FeedbackMethod | None:
    if name == NONE:
        return None
    if name not in methods:
        raise OptionError(option_name, name, f"is not known; use one of {', '.join((NONE, *methods))}")
    return methods[name]


def check_feedback(options: Any) -> None:
    """The feedback settings of a search (``options``: :class:`retrieval.options.SearchOptions`), before any
    work: each method's parameters against its range, and each side's feedback against the mode (feedback
    on a side the search does not have would silently do nothing)."""
    sides = {"prf": ("bm25", "dense", "dense_prf"), "dense_prf": ("dense", "bm25", "prf")}
    chosen = (("prf", term_method(options.prf)), ("dense_prf", vector_method(options.dense_prf)))
    for option_name, method in chosen:
        if method is None:
            continue
        side, other, other_option = sides[option_name]
        if options.mode == other:
            raise OptionError(
                option_name,
                method.name,
                f"feeds back the {side} side, which {opt('mode')} {other} does not search; use "
                f"{opt('mode')} {side} or hybrid, or {opt(other_option)}",
            )
        method.check(options)


def feedback_settings(options: Any) -> dict[str, dict[str, Any]]:
    """Each side's feedback as a search applies it (``{"bm25": {"method": "rm3", "prf_docs": 10, ...}}``);
    a side without feedback is absent. What a run's sidecar records and a cache key holds."""
    found = {}
    for side, method in (("bm25", term_method(options.prf)), ("dense", vector_method(options.dense_prf))):
        if method is not None:
            found[side] = {"method": method.name, **method.settings(options)}
    return found


VECTOR_TAG_PREFIX = "v"
"""A dense-side method's word in a run tag is its name after this (``vrocchio``): vector feedback."""


def tag_words(options: Any) -> list[str]:
    """The FEEDBACK words of a run tag (:mod:`retrieval.run_tags`): the BM25 side's method (``rm3``), then
    the dense side's (``vrocchio``); none without feedback."""
    words = []
    if (method := term_method(options.prf)) is not None:
        words.append(method.name)
    if (method := vector_method(options.dense_prf)) is not None:
        words.append(VECTOR_TAG_PREFIX + method.name)
    return words


def ignored_settings(options: Any) -> set[str]:
    """The feedback options a search with ``options`` does not read (those of no chosen method, and the
    other side's when the mode has no such side): a tune grid's settings differing only in these are one."""
    methods = (*TERM_METHODS.values(), *VECTOR_METHODS.values())
    every = {param.option for method in methods for param in method.params}
    used: set[str] = set()
    for method in (term_method(options.prf), vector_method(options.dense_prf)):
        if method is not None:
            used |= {param.option for param in method.params}
    return every - used


__all__ = [
    "NONE",
    "SETTINGS",
    "TERM_METHODS",
    "VECTOR_METHODS",
    "FeedbackMethod",
    "Param",
    "check_feedback",
    "choices_help",
    "feedback_settings",
    "ignored_settings",
    "shared_field",
    "tag_words",
    "term_method",
    "vector_method",
]
