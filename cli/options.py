"""Typer flags made from declared options (``basics/options.py``): one declaration, every command.

A command function names a parameter per options group, annotated with the group's dataclass
(``bm25: Bm25Options``); :func:`expand` replaces it by one flag per declared field, with the field's
default and help, and hands the command a built instance. Names are shared across groups of one command
on purpose (``overwrite``): one flag sets them all.

:func:`expand` also collects the paths the command's parameters (and options groups' fields) declare as
read or written (:class:`basics.outputs.Reads`, :class:`basics.outputs.Writes`) into one
:class:`basics.outputs.Outputs`, checks it before the command runs, and passes it to the command's
parameter annotated ``Outputs`` (if any). The declarations stay readable on the command
(``declared_paths``, also on Typer's click callback), so a test can walk every command's inputs and
outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from lyre.basics.options import option_spec
from lyre.basics.outputs import Output, Outputs, Reads, Source, Writes


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
    hints = typing.get_type_hints(group, include_extras=True)  # a path field keeps its Reads / Writes
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


def _declared(hints: dict[str, Any]) -> dict[str, Reads | Writes]:
    """Each path parameter's declaration: the :class:`Reads` or :class:`Writes` in its annotation."""
    found = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is Annotated:
            role = next((m for m in hint.__metadata__ if isinstance(m, Reads | Writes)), None)
            if role is not None:
                found[name] = role
    return found


def collect_outputs(declared: dict[str, Reads | Writes], values: dict[str, Any]) -> Outputs:
    """The command's :class:`Outputs` from its parameter ``values`` (a list parameter declares each of
    its paths; an option not given declares nothing); ``wait`` is the command's ``--wait``, if it has one."""
    sources: list[Source] = []
    outputs: list[Output] = []
    for name, role in declared.items():
        value = values.get(name)
        for path in value if isinstance(value, list | tuple) else [value]:
            if path is None:
                continue
            if isinstance(role, Reads):
                sources.append(Source(role.what, Path(path), role.contents))
            else:
                outputs.append(Output(Path(path), name, role.what, folder=role.folder))
    return Outputs.declare(sources, outputs, wait=bool(values.get("wait", False)))


def expand(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: turn each options-group parameter of ``func`` into the group's flags, and check the
    paths its parameters declare (:func:`collect_outputs`) before it runs."""
    groups = _groups(func)
    hints = typing.get_type_hints(func, include_extras=True)
    takes_outputs = [name for name, hint in hints.items() if hint is Outputs]
    plain = [
        p
        for name, p in inspect.signature(func).parameters.items()
        if name not in groups and name not in takes_outputs
    ]
    params = [p.replace(annotation=hints[p.name]) for p in plain]
    seen = {p.name for p in params}
    for group in groups.values():
        for param in group_flags(group):
            if param.name not in seen:
                seen.add(param.name)
                params.append(param)
    declared = _declared({p.name: p.annotation for p in params})
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p not in positional]

    @functools.wraps(func)
    def command(**values: Any) -> Any:
        outputs = collect_outputs(declared, values)
        outputs.check()
        built = {
            name: group(**{f.name: values[f.name] for f in dataclasses.fields(group) if f.name in values})
            for name, group in groups.items()
        }
        handed = {name: outputs for name in takes_outputs}
        return func(**{p.name: values[p.name] for p in plain}, **built, **handed)

    command.__signature__ = inspect.Signature([*positional, *keyword])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.declared_paths = declared  # type: ignore[attr-defined]
    del command.__wrapped__  # Typer must read the expanded signature, not the original one
    return command
