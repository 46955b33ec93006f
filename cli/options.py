"""Typer flags made from declared options (``basics/options.py``): one declaration, every command.

A command function names a parameter per options group, annotated with the group's dataclass
(``bm25: Bm25Options``); :func:`expand` replaces it by one flag per declared field, with the field's
default and help, and hands the command a built instance. Names are shared across groups of one command
on purpose (``overwrite``): one flag sets them all.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
from lyre.basics.options import option_spec


def flag_of(name: str) -> str:
    """The flag that sets parameter ``name``."""
    return "--" + name.replace("_", "-")


def _groups(func: Callable[..., Any]) -> dict[str, type]:
    hints = typing.get_type_hints(func, include_extras=True)
    return {
        name: hint
        for name, hint in hints.items()
        if dataclasses.is_dataclass(hint) and any(option_spec(f) for f in dataclasses.fields(hint))
    }


def group_flags(group: type) -> list[inspect.Parameter]:
    """One keyword-only Typer parameter per declared, user-facing field of ``group``."""
    hints = typing.get_type_hints(group)
    params = []
    for field in dataclasses.fields(group):
        spec = option_spec(field)
        if spec is None or not spec.cli:
            continue
        annotation = Annotated[hints[field.name], typer.Option(flag_of(field.name), help=spec.describe())]
        params.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=annotation
            )
        )
    return params


def expand(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: turn each options-group parameter of ``func`` into the group's flags."""
    groups = _groups(func)
    hints = typing.get_type_hints(func, include_extras=True)
    plain = [p for name, p in inspect.signature(func).parameters.items() if name not in groups]
    params = [p.replace(annotation=hints[p.name]) for p in plain]
    seen = {p.name for p in params}
    for group in groups.values():
        for param in group_flags(group):
            if param.name not in seen:
                seen.add(param.name)
                params.append(param)
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p not in positional]

    @functools.wraps(func)
    def command(**values: Any) -> Any:
        built = {
            name: group(**{f.name: values[f.name] for f in dataclasses.fields(group) if f.name in values})
            for name, group in groups.items()
        }
        return func(**{p.name: values[p.name] for p in plain}, **built)

    command.__signature__ = inspect.Signature([*positional, *keyword])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # Typer must read the expanded signature, not the original one
    return command
