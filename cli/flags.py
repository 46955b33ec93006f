"""Typer flags made from declared options (``basics/declared.py``): one declaration, every command.

A command function names a parameter per options group, annotated with the group's dataclass
(``bm25: Bm25Options``); :func:`flags_from_options` replaces it by one flag per declared field, with the
field's default and help, in a help panel named after the class that declares the field (:data:`PANELS`),
and hands the command a built instance.

One flag per name: two groups of one command that both declare a field of the same name would get one flag
setting both. That is right for a few names that mean the same thing in every group (:data:`SHARED`:
``--overwrite`` rebuilds every stage ``lyre index`` builds) and a silent surprise anywhere else, so any
other repeated name (between groups, or between a group and a plain parameter) is refused when the command
is defined (:class:`FlagClash`, at import), and shared fields must agree on type and default.

A field renamed keeps its former flag for one release (:data:`FORMER_NAMES`): hidden from ``--help`` and
the CLI reference, still accepted, with a note saying the new name.

On/off fields become flags that take no value. Typer 0.29 prints the type of every option in the help
table, flags included (``--overwrite <bool>``, as if it took a value): ``TyperOption.display_type_rich``
returns ``<bool>`` unless the option has a metavar. So each flag made here gets an empty metavar.

:func:`flags_from_options` also collects the paths the command's parameters (and options groups' fields)
declare as read or written (:class:`basics.outputs.Reads`, :class:`basics.outputs.Writes`) into one
:class:`basics.outputs.Outputs`, checks it before the command runs, and passes it to the command's
parameter annotated ``Outputs`` (if any). The declarations stay readable on the command
(``declared_paths``, also on Typer's click callback), so a test can walk every command's inputs and
outputs; so do its options groups (``option_groups``).

The Typer behaviour relied on (a command's parameters read from ``__signature__`` and ``__annotations__``;
``typer.Option``'s ``metavar``, ``hidden`` and ``rich_help_panel``) is pinned by the version bound in
``pyproject.toml`` and checked by ``tests/test_cli_flags.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from lyre.basics.declared import OptionSpec, option_spec
from lyre.basics.errors import LyreError, opt
from lyre.basics.outputs import Output, Outputs, Reads, Source, Writes

SHARED: dict[str, str] = {
    "overwrite": "Every stage",
    "wait": "Locking",
}
"""Field names several groups of one command may declare, set together by one flag, and the help panel
of that flag. ``overwrite``: each stage's options carry it, and one ``--overwrite`` rebuilds every stage a
command builds; ``wait``: whatever a command writes, waiting for another writer means the same."""

PANELS: dict[str, str] = {
    "RunTagOptions": "Run file",
    "RunOptions": "Run file",
    "FuseOptions": "Fusion",
    "RerankRunOptions": "Rerank",
    "AggregationOptions": "Passages",
    "PassageOptions": "Passages",
    "OutputOptions": "Locking",
    "WriterOptions": "Locking",
    "VerifyOptions": "Integrity",
    "Bm25Options": "BM25",
    "EncodeOptions": "Encoding",
    "DenseOptions": "Dense index",
    "CompareOptions": "Comparison",
    "TuneOptions": "Tuning",
    "RunViewOptions": "Runs page",
}
"""Help panel of the fields each options class declares (by class name, so this module imports none of
them); a class not listed gets its name in words (``SearchOptions``: Search, ``CacheOptions``: Cache)."""

PATHS_PANEL = "Inputs and outputs"
"""Help panel of a plain parameter that declares a path read or written."""

FORMER_NAMES: dict[str, str] = {"slice_id": "shard_id", "slices": "num_shards"}
"""Renamed fields: new name -> former name, whose flag is still accepted (hidden) for one release."""


class FlagClash(TypeError):
    """A command whose options would give two settings one flag without saying so (see the module
    docstring): raised when the command is defined, so it never ships."""


def flag_of(name: str) -> str:
    """The flag that sets parameter ``name``."""
    return "--" + name.replace("_", "-")


def panel_of(cls: type) -> str:
    """The help panel of the fields ``cls`` declares: :data:`PANELS`, else the class name in words."""
    if cls.__name__ in PANELS:
        return PANELS[cls.__name__]
    words = re.findall(r"[A-Z][a-z0-9]*", cls.__name__.removesuffix("Options")) or [cls.__name__]
    return " ".join([words[0], *(word.lower() for word in words[1:])])


def declaring_class(group: type, name: str) -> type:
    """The class in ``group``'s bases that declares field ``name`` (fields of a base come from the base)."""
    return next(cls for cls in group.__mro__ if name in inspect.get_annotations(cls))


def groups_of(func: Callable[..., Any]) -> dict[str, type]:
    """The parameters of ``func`` annotated with an options group (a dataclass with declared options)."""
    hints = typing.get_type_hints(func, include_extras=True)
    return {
        name: hint
        for name, hint in hints.items()
        if isinstance(hint, type)
        and dataclasses.is_dataclass(hint)
        and any(option_spec(f) for f in dataclasses.fields(hint))
    }


@dataclasses.dataclass(frozen=True)
class Declared:
    """One user-facing field of an options group, as the flag maker sees it."""

    group: type
    field: dataclasses.Field[Any]
    spec: OptionSpec
    annotation: Any

    @property
    def name(self) -> str:
        return self.field.name

    def agrees_with(self, other: Declared) -> bool:
        """Whether one flag can set both: the same type and the same default."""
        return self.annotation == other.annotation and self.field.default == other.field.default


def declared_fields(group: type) -> list[Declared]:
    """The declared, user-facing fields of ``group`` (a path field keeps its Reads / Writes)."""
    hints = typing.get_type_hints(group, include_extras=True)
    found = []
    for field in dataclasses.fields(group):
        spec = option_spec(field)
        if spec is not None and spec.cli:
            found.append(Declared(group, field, spec, hints[field.name]))
    return found


def _bare(annotation: Any) -> Any:
    """The type inside ``Annotated[...]``."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation


def _is_bool(annotation: Any) -> bool:
    return _bare(annotation) is bool


def _option(name: str, *, help: str | None, panel: str | None, is_bool: bool, hidden: bool = False) -> Any:
    """The ``typer.Option`` of flag ``name``; an on/off option gets an empty metavar (no ``<bool>``)."""
    return typer.Option(
        flag_of(name), help=help, rich_help_panel=panel, hidden=hidden, metavar="" if is_bool else None
    )


def group_flag(declared: Declared, panel: str) -> inspect.Parameter:
    """The keyword-only Typer parameter of one declared field."""
    info = _option(
        declared.name, help=declared.spec.describe(), panel=panel, is_bool=_is_bool(declared.annotation)
    )
    extras = declared.annotation.__metadata__ if typing.get_origin(declared.annotation) is Annotated else ()
    return inspect.Parameter(
        declared.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=declared.field.default,
        annotation=Annotated[(_bare(declared.annotation), info, *extras)],
    )


def former_flag(declared: Declared, former: str) -> inspect.Parameter:
    """The hidden parameter of a renamed field's former flag (unset: None, or False for a flag)."""
    bare = _bare(declared.annotation)
    is_bool = bare is bool
    info = _option(
        former, help=f"Former name of {flag_of(declared.name)}.", panel=None, is_bool=is_bool, hidden=True
    )
    annotation = bool if is_bool else (bare | None)
    return inspect.Parameter(
        former,
        inspect.Parameter.KEYWORD_ONLY,
        default=False if is_bool else None,
        annotation=Annotated[annotation, info],
    )


def plain_parameter(param: inspect.Parameter, hint: Any) -> inspect.Parameter:
    """A parameter the command declares itself, with its flag fixed the same way: an on/off option gets an
    empty metavar, a path it reads or writes the :data:`PATHS_PANEL` (unless it names a panel itself)."""
    if typing.get_origin(hint) is not Annotated:
        return param.replace(annotation=hint)
    metadata = list(hint.__metadata__)
    for i, item in enumerate(metadata):
        if isinstance(item, typer.models.OptionInfo):
            fixed = copy.copy(item)
            if _is_bool(hint) and fixed.metavar is None:
                fixed.metavar = ""
            if fixed.rich_help_panel is None and any(isinstance(m, Reads | Writes) for m in metadata):
                fixed.rich_help_panel = PATHS_PANEL
            metadata[i] = fixed
    return param.replace(annotation=Annotated[(_bare(hint), *metadata)])


def _declared_paths(hints: dict[str, Any]) -> dict[str, Reads | Writes]:
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


def merged_fields(
    command: str, groups: Mapping[str, type], plain: set[str], shared: Mapping[str, str]
) -> dict[str, list[Declared]]:
    """Each flag name of the groups with the fields it sets (several only for :data:`SHARED` names);
    a clash is a :class:`FlagClash` naming the command, the name and the groups."""
    merged: dict[str, list[Declared]] = {}
    for declared in (d for group in groups.values() for d in declared_fields(group)):
        merged.setdefault(declared.name, []).append(declared)
    for name, fields in merged.items():
        owners = ", ".join(d.group.__name__ for d in fields)
        if name in plain:
            raise FlagClash(f"{command}: {flag_of(name)} is both a parameter and a field of {owners}")
        if len(fields) > 1 and name not in shared:
            raise FlagClash(
                f"{command}: {flag_of(name)} is declared by {owners}; one flag would set them all. "
                f"Rename one, or add {name!r} to cli.flags.SHARED if one setting is meant for all"
            )
        if not all(fields[0].agrees_with(other) for other in fields[1:]):
            raise FlagClash(f"{command}: the shared {flag_of(name)} has another type or default in {owners}")
    return merged


def flags_from_options(
    func: Callable[..., Any],
    *,
    shared: Mapping[str, str] = SHARED,
    former_names: Mapping[str, str] = FORMER_NAMES,
) -> Callable[..., Any]:
    """Decorator: turn each options-group parameter of ``func`` into the group's flags (grouped in help
    panels), and check the paths its parameters declare (:func:`collect_outputs`) before it runs.
    ``shared`` and ``former_names`` default to :data:`SHARED` and :data:`FORMER_NAMES`."""
    groups = groups_of(func)
    hints = typing.get_type_hints(func, include_extras=True)
    takes_outputs = [name for name, hint in hints.items() if hint is Outputs]
    plain = [
        p
        for name, p in inspect.signature(func).parameters.items()
        if name not in groups and name not in takes_outputs
    ]
    params = [plain_parameter(p, hints[p.name]) for p in plain]
    merged = merged_fields(func.__name__, groups, {p.name for p in plain}, shared)
    former = {new: old for new, old in former_names.items() if new in merged}
    taken = {p.name for p in params} | set(merged)
    for new, old in former.items():
        if old in taken:
            raise FlagClash(f"{func.__name__}: the former name {flag_of(old)} of {flag_of(new)} is in use")
    for name, fields in merged.items():
        panel = shared[name] if len(fields) > 1 else panel_of(declaring_class(fields[0].group, name))
        params.append(group_flag(fields[0], panel))
    params += [former_flag(merged[new][0], old) for new, old in former.items()]
    declared = _declared_paths({p.name: p.annotation for p in params})
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p not in positional]

    @functools.wraps(func)
    def command(**values: Any) -> Any:
        for new, old in former.items():
            _take_former(values, new, old, merged[new][0].field.default)
        outputs = collect_outputs(declared, values)
        outputs.check()
        built = {
            name: group(**{f.name: values[f.name] for f in dataclasses.fields(group) if f.name in values})
            for name, group in groups.items()
        }
        handed = {name: outputs for name in takes_outputs}
        return func(**{p.name: values[p.name] for p in plain}, **built, **handed)

    # A function takes any attribute at run time; its type declares none of these three.
    command.__signature__ = inspect.Signature([*positional, *keyword])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.declared_paths = declared  # type: ignore[attr-defined]
    command.option_groups = groups  # type: ignore[attr-defined]
    del command.__wrapped__  # Typer must read the expanded signature, not the original one
    return command


def _take_former(values: dict[str, Any], new: str, old: str, default: Any) -> None:
    """Move a value given with the former flag ``old`` to ``new`` (with a note on stderr); both given is a
    usage error."""
    given = values.pop(old)
    if given is None or given is False:
        return
    if values[new] != default:
        raise LyreError(f"{opt(old)} is the former name of {opt(new)}; give only {opt(new)}")
    print(
        f"note: {flag_of(old)} is now {flag_of(new)}; the former name goes in the next release",
        file=sys.stderr,
    )
    values[new] = given
