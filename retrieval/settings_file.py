"""Settings files: the search settings ``lyre tune`` chose, applied by ``lyre search --settings FILE``.

A settings file is JSON: ``{"lyre_settings": 1, "settings": {"fusion": "linear", "weight": 0.3}, ...}``
plus what ``lyre tune`` records about how they were chosen (measure, dev queries, folds), which a search
ignores. Only the tunable settings (:func:`tunable_types`) may appear, each with a value of its option's
type, checked with the same declarations as the flags.

Precedence: a flag typed on the command line wins over the file, the file wins over the declared
default; the run's sidecar records the file (path, SHA-256), its settings, and which of them the command
line overrode, so a run says exactly how it was made. An error about a value the file supplied names the
file (``depth 0 (from s.json): ...``), never a flag the user did not type (:func:`blamed_on`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from lyre.basics.errors import OPTION_MARK, InputError, LyreError, OptionError, opt
from lyre.basics.outputs import output
from lyre.basics.provenance import sha256_file
from lyre.retrieval.options import RerankOptions, SearchOptions

SETTINGS_FORMAT = 1
UNTUNABLE = ("tag", "mode")
"""Not tunable: a tag names one run, and the mode decides which indexes a search opens."""


@cache
def tunable_types() -> dict[str, tuple[type, type]]:
    """Each tunable setting -> (its options group, its value type): every search setting but the tag
    and the mode, and the rerank depth."""
    found: dict[str, tuple[type, type]] = {}
    for group, names in ((SearchOptions, None), (RerankOptions, ("rerank_depth",))):
        hints = typing.get_type_hints(group)
        for field in dataclasses.fields(group):
            if field.name in UNTUNABLE or (names is not None and field.name not in names):
                continue
            found[field.name] = (group, _value_type(hints[field.name]))
    return found


def _value_type(hint: Any) -> type:
    """``int | None`` -> int: the type of a set value (None stays allowed where the default is None)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def nullable(name: str) -> bool:
    """Whether ``name`` may be None (unset: the index's tuned value)."""
    group, _ = tunable_types()[name]
    return next(field for field in dataclasses.fields(group) if field.name == name).default is None


def check_value_type(name: str, value: Any) -> Any:
    """``value`` as the type of setting ``name`` (an int for a float setting becomes a float); raises
    ValueError when it has another type."""
    _, kind = tunable_types()[name]
    if value is None and nullable(name):
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, kind):
        return value
    raise ValueError(f"{name} must be a {kind.__name__}, not {value!r}")


def apply(
    settings: dict[str, Any], options: SearchOptions, rerank: RerankOptions, keep: Iterable[str] = ()
) -> tuple[SearchOptions, RerankOptions]:
    """``options`` and ``rerank`` with ``settings`` set, except the names in ``keep``."""
    kept = set(keep)
    chosen = {name: value for name, value in settings.items() if name not in kept}
    groups = {name: tunable_types()[name][0] for name in chosen}
    return (
        dataclasses.replace(options, **{n: v for n, v in chosen.items() if groups[n] is SearchOptions}),
        dataclasses.replace(rerank, **{n: v for n, v in chosen.items() if groups[n] is RerankOptions}),
    )


def write_settings(path: Path, settings: dict[str, Any], how: dict[str, Any]) -> None:
    """Write a settings file (through the guarded writer): the ``settings`` a search applies and ``how``
    they were chosen."""
    output(path, what="settings file").write_json(
        {"lyre_settings": SETTINGS_FORMAT, "settings": settings, **how}
    )


def read_settings(path: Path) -> dict[str, Any]:
    """The settings of a settings file, each checked for its name and type (ranges are checked with the
    other options, before any work)."""
    fix = "pass a file written by `lyre tune --out`"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise LyreError(f"{path}: cannot read the settings file ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, getattr(error, "lineno", None), "is not a JSON settings file", fix) from None
    if not isinstance(record, dict) or record.get("lyre_settings") != SETTINGS_FORMAT:
        raise InputError(path, None, f'has no "lyre_settings": {SETTINGS_FORMAT} record', fix)
    settings = record.get("settings")
    if not isinstance(settings, dict):
        raise InputError(path, None, 'has no "settings" object', fix)
    checked = {}
    for name, value in settings.items():
        if name not in tunable_types():
            known = ", ".join(tunable_types())
            raise InputError(path, None, f"sets {name!r}, which is not a tunable setting", f"use {known}")
        try:
            checked[name] = check_value_type(name, value)
        except ValueError as error:
            raise InputError(path, None, str(error), "correct the value or write the file again") from None
    return checked


def settings_record(path: Path, settings: dict[str, Any], overridden: Iterable[str]) -> dict[str, Any]:
    """What a run's sidecar says about the settings file it applied."""
    return {
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "settings": settings,
        "overridden_by_flags": sorted(set(overridden) & set(settings)),
    }


@contextlib.contextmanager
def blamed_on(path: Path, supplied: Iterable[str]) -> Iterator[None]:
    """Inside the block, an :class:`OptionError` about a setting the file at ``path`` supplied (the
    names in ``supplied``) is reported as the file's, with the way out: correct the file, or type the
    flag. Its other option names stay as they are, except those the file also supplied, which are named
    as settings rather than flags."""
    from_file = set(supplied)
    try:
        yield
    except OptionError as error:
        if error.option not in from_file:
            raise
        message = Exception.__str__(error).removeprefix(f"{opt(error.option)} {error.value}: ")
        problem = OPTION_MARK.sub(
            lambda match: match.group(1) if match.group(1) in from_file else match.group(0), message
        )
        raise LyreError(
            f"{error.option} {error.value} (from {path}): {problem}; correct it in {path}, "
            f"or override it with {opt(error.option)}"
        ) from None
