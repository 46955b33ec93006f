"""The one reader of an index's JSON files: bytes checked, parsed, and made into typed records.

Every JSON file lyre keeps in an index folder (the manifest, ``docstore.json``, BM25's parameters,
vocabulary, analyzer and record, the embedding store's spec, the dense build and search parameters) is read
by :func:`read_metadata`, never by ``json.loads`` at the call site, so no caller meets a value of the wrong
type deep inside a search. In order:

1. the bytes are read once; where the manifest recorded the file (:class:`FileEntry`), their size and
   SHA-256 must match it (a SHA-256 of a few KiB takes microseconds), so a flipped byte that still parses
   is caught too, not only one that breaks the JSON;
2. they must be UTF-8 JSON;
3. the value must have the shape of the record type asked for (:func:`conform`): a frozen dataclass, a
   ``dict[str, T]``, a ``list[T]``..., each value of the declared type, every field without a default
   present. Keys a record does not declare are ignored, so a record may grow new optional fields.

Anything else is one :class:`MetadataError` line: the file, what is wrong with it (``stages.bm25.files is
null, not an object``), and the caller's ``repair`` (the command that rebuilds it).

The records of the manifest itself, :class:`FileEntry` and :class:`StageRecord`, live here too: this module
imports nothing else of lyre's indexes, so the manifest, the integrity checks and the stage runner all
build on it without importing each other.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count

T = TypeVar("T")

CHANGED = "content changed since it was written (SHA-256 differs)"
"""The problem of a file whose bytes are not those recorded, though its size is."""


class MetadataError(LyreError):
    """An index metadata file that cannot be trusted: unreadable, damaged, or not of the expected shape."""

    def __init__(self, path: Path, problem: str, repair: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}; {repair}")


class ShapeError(ValueError):
    """A parsed value that does not have the declared type; ``where`` locates it in the file."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where or 'the file'} {problem}")


@dataclass(frozen=True)
class FileEntry:
    """What a stage recorded of one file it wrote."""

    size: int
    sha256: str

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"size {self.size} is negative")


@dataclass(frozen=True)
class StageRecord:
    """What the manifest keeps of a complete stage: one shape for every stage."""

    summary: str
    """One line for the user (``bm25: 5,183 documents, 31,012 terms``)."""
    params: dict[str, Any]
    """What decides the stage's content; ``is_current`` compares against these."""
    counts: dict[str, Any] = field(default_factory=dict)
    """What was built: documents, terms, chunks, shards, tokens..."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Command, versions, time (``basics.provenance.provenance``)."""
    files: dict[str, FileEntry] = field(default_factory=dict)
    """Files the stage produced, by path relative to the index (``indexes.integrity.file_entries``): every
    command checks their sizes (and hashes the small metadata files), ``lyre index --verify`` hashes all."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageRecord:
        """A record from its dict form, checked like a manifest read (:class:`ShapeError` otherwise)."""
        return conform(dict(data), cls)


def size_problem(size: int, recorded: int) -> str:
    """How a file whose size is not the recorded one is described."""
    what = "empty" if size == 0 else count(size, "bytes")
    return f"{what}, but {count(recorded, 'bytes')} were written (truncated or replaced)"


def read_metadata(path: Path, kind: type[T], *, repair: str, entry: FileEntry | None = None) -> T:
    """The JSON file ``path`` as a ``kind`` (see the module docstring); ``entry``: what the manifest
    recorded of the file (None: not recorded, e.g. a stage still being built, or an index's manifest)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MetadataError(path, "missing", repair) from None
    except OSError as error:
        raise MetadataError(path, f"cannot read it ({error.strerror or error})", repair) from None
    if entry is not None:
        if len(data) != entry.size:
            raise MetadataError(path, size_problem(len(data), entry.size), repair)
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise MetadataError(path, CHANGED, repair)
    return conform_metadata(path, decode_json(path, data, repair), kind, repair)


def decode_json(path: Path, data: bytes, repair: str) -> Any:
    """The JSON value of ``data`` (read from ``path``): empty, non-UTF-8 or invalid bytes are one line."""
    if not data.strip():
        raise MetadataError(path, "empty" if not data else "blank", repair)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise MetadataError(path, "not UTF-8 text (damaged)", repair) from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise MetadataError(path, f"not valid JSON ({where}: {error.msg})", repair) from None


def conform_metadata(path: Path, value: Any, kind: type[T], repair: str) -> T:
    """:func:`conform`, its :class:`ShapeError` made the one line naming ``path``."""
    try:
        return conform(value, kind)
    except ShapeError as error:
        raise MetadataError(path, str(error), repair) from None


# Shapes --------------------------------------------------------------------------------------------------

_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
    type(None): ((type(None),), "null"),
}
"""JSON scalars by declared type: the Python types ``json`` gives for them, and how they are named."""


def conform(value: Any, kind: Any, where: str = "") -> Any:
    """``value`` (as ``json`` parsed it) as the declared type ``kind``: scalars, ``X | Y``, ``Literal``,
    ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``Any`` and dataclasses (built from their fields, with
    their ``__post_init__`` checks). A :class:`ShapeError` locates the first value that is not of its type.
    ``bool`` is no integer here, though Python says it is."""
    if kind is Any:
        return value
    if kind in _SCALARS:
        accepted, _ = _SCALARS[kind]
        if type(value) not in accepted:
            raise ShapeError(where, f"is {_describe(value)}, not {_expected(kind)}")
        return float(value) if kind is float else value
    if dataclasses.is_dataclass(kind):
        return _conform_dataclass(value, kind, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return _conform_union(value, args, where)
    if origin is typing.Literal:
        if value not in args or type(value) not in {type(arg) for arg in args}:
            raise ShapeError(where, f"is {_describe(value)}, not {_expected(kind)}")
        return value
    if origin in (list, tuple) or kind in (list, tuple):
        if type(value) is not list:
            raise ShapeError(where, f"is {_describe(value)}, not a list")
        item = args[0] if args else Any
        items = [conform(element, item, f"{where}[{number}]") for number, element in enumerate(value)]
        return tuple(items) if tuple in (origin, kind) else items
    if origin is dict or kind is dict:
        if type(value) is not dict:
            raise ShapeError(where, f"is {_describe(value)}, not an object")
        item = args[1] if args else Any
        if item in _SCALARS:  # a vocabulary has millions of entries: check them at C speed
            accepted, _ = _SCALARS[item]
            bad = next((key for key, element in value.items() if type(element) not in accepted), None)
            if bad is None:
                return {key: float(element) for key, element in value.items()} if item is float else value
            return conform(value[bad], item, _key(where, bad))
        return {key: conform(element, item, _key(where, key)) for key, element in value.items()}
    raise TypeError(f"conform cannot check the declared type {kind!r}")


def _conform_union(value: Any, members: tuple[Any, ...], where: str) -> Any:
    if value is None and type(None) in members:
        return None
    others = [member for member in members if member is not type(None)]
    if len(others) == 1:
        try:
            return conform(value, others[0], where)
        except ShapeError as error:
            if error.where != where or type(None) not in members:
                raise
            raise ShapeError(where, f"is {_describe(value)}, not {_expected(members)}") from None
    for member in others:
        try:
            return conform(value, member, where)
        except ShapeError:
            continue
    raise ShapeError(where, f"is {_describe(value)}, not {_expected(members)}")


def _conform_dataclass(value: Any, kind: Any, where: str) -> Any:
    if type(value) is not dict:
        raise ShapeError(where, f"is {_describe(value)}, not an object")
    values = {}
    for declared in dataclasses.fields(kind):
        if not declared.init:
            continue
        place = f"{where}.{declared.name}" if where else declared.name
        if declared.name in value:
            values[declared.name] = conform(value[declared.name], _hints(kind)[declared.name], place)
        elif declared.default is dataclasses.MISSING and declared.default_factory is dataclasses.MISSING:
            raise ShapeError(place, "is missing")
    try:
        return kind(**values)
    except (ValueError, TypeError, LyreError) as error:  # the record's own checks (__post_init__)
        raise ShapeError(where, f"is inconsistent ({error})") from None


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """A dataclass's field types, resolved once (the modules use postponed annotations)."""
    return typing.get_type_hints(kind)


def _key(where: str, key: str) -> str:
    return f"{where}[{json.dumps(key, ensure_ascii=False)}]"


def _describe(value: Any) -> str:
    """A parsed JSON value as a message names it: its JSON type, with short scalars shown."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"a {'string' if isinstance(value, str) else 'number'} ({shown})"


def _expected(kind: Any) -> str:
    """How a declared type is named in a message (a tuple: the members of a union)."""
    if isinstance(kind, tuple):
        return " or ".join(_expected(member) for member in kind)
    if kind in _SCALARS:
        return _SCALARS[kind][1]
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(json.dumps(arg) for arg in typing.get_args(kind))
    if typing.get_origin(kind) in (list, tuple) or kind in (list, tuple):
        return "a list"
    return "an object"
