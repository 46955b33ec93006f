"""Declared options: each setting's default, range, choices and help, written once.

A command's settings are plain frozen dataclasses whose fields are made with :func:`option`. The library
reads the defaults from them; :func:`check_options` checks every declared range and choice (before any
work, so a typo never costs an hour of encoding); the CLI builds its flags, defaults and help from the same
fields (``cli/flags.py``). Nothing else states a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lyre.basics.errors import OptionError

SPEC_KEY = "lyre.option"


@dataclass(frozen=True)
class OptionSpec:
    """What the CLI and the checks know of one option besides its default."""

    help: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    """Exclusive lower bound (``k1 > 0``)."""
    choices: tuple[str, ...] | None = None
    cli: bool = True
    """False for settings a command fills in itself (never typed by a user)."""

    def describe(self) -> str:
        """The help text with its range or choices, as ``--help`` shows it."""
        limits = []
        if self.choices:
            limits.append("one of " + ", ".join(self.choices))
        if self.above is not None:
            limits.append(f"> {self.above:g}")
        if self.minimum is not None:
            limits.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            limits.append(f"<= {self.maximum:g}")
        return f"{self.help} ({'; '.join(limits)})" if limits else self.help


def option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: Sequence[str] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field that declares an option (use as ``k1: float = option(0.9, "BM25 k1.", above=0)``)."""
    spec = OptionSpec(help, minimum, maximum, above, tuple(choices) if choices else None, cli)
    return dataclasses.field(default=default, metadata={SPEC_KEY: spec})


def spec_field(default: Any, spec: OptionSpec, help: str | None = None) -> Any:
    """A dataclass field that declares an option from a registry's ``spec`` (a fusion or feedback
    parameter), with ``help`` in place of the spec's where given."""
    declared = dataclasses.replace(spec, help=help) if help is not None else spec
    return dataclasses.field(default=default, metadata={SPEC_KEY: declared})


def option_spec(field: dataclasses.Field[Any]) -> OptionSpec | None:
    """The declaration of ``field``, or None for a plain field."""
    return field.metadata.get(SPEC_KEY)


def default_of(options_type: type, name: str) -> Any:
    """The declared default of one option, for code that needs it outside an options object."""
    return {field.name: field.default for field in dataclasses.fields(options_type)}[name]


def check_value(name: str, value: Any, spec: OptionSpec) -> None:
    """Raise :class:`OptionError` when ``value`` breaks its declared choices or range (None is unset)."""
    if value is None:
        return
    if spec.choices is not None and value not in spec.choices:
        raise OptionError(name, value, f"is not known; use one of {', '.join(spec.choices)}")
    if spec.above is not None and not value > spec.above:
        raise OptionError(name, value, f"must be greater than {spec.above:g}")
    if spec.minimum is not None and not value >= spec.minimum:
        raise OptionError(name, value, f"must be at least {spec.minimum:g}")
    if spec.maximum is not None and not value <= spec.maximum:
        raise OptionError(name, value, f"must be at most {spec.maximum:g}")


def check_options(options: Any) -> None:
    """Check every declared option of a dataclass instance; the first one at fault is raised."""
    for field in dataclasses.fields(options):
        spec = option_spec(field)
        if spec is not None:
            check_value(field.name, getattr(options, field.name), spec)
