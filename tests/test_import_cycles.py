"""No two first-party modules import each other, directly or around a loop, whether the import is at the
top of a file, inside a function or under ``TYPE_CHECKING``.

A loop of imports is a knot: neither module can be read, tested or moved without the other, and one of the
imports has to hide inside a function so that Python can load them at all. The check is static, like the
layer test (``tests/test_layers.py``): it parses every module of every layer and of ``lyre/``, draws an
arrow for each import of another first-party module, and reports every loop (a strongly connected group
of modules) with one import that closes it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from test_layers import LAYERS, REPOSITORY

Graph = dict[str, dict[str, int]]
"""Module -> the first-party modules it imports, each with the line of (one of) its imports."""


def module_name(path: Path) -> str:
    """``indexes/dense_search.py`` -> ``lyre.indexes.dense_search``; a package's ``__init__.py`` -> the
    package."""
    parts = path.relative_to(REPOSITORY).with_suffix("").parts
    if parts[0] == "lyre":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("lyre", *parts))


def first_party_modules() -> dict[str, Path]:
    """Every module of the layers and of the ``lyre`` package itself, by its import name."""
    paths = [path for folder in (*LAYERS, "lyre") for path in sorted((REPOSITORY / folder).rglob("*.py"))]
    return {module_name(path): path for path in paths}


def imports_of(source: str, module: str, is_package: bool, known: Iterable[str]) -> dict[str, int]:
    """The first-party modules ``source`` (the module ``module``) imports anywhere, with a line each.

    ``from package import name`` imports the module ``package.name`` when there is one, else a name of the
    package's ``__init__``; a relative import is resolved against the module's package.
    """
    modules = set(known)
    package = module if is_package else module.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target in modules and target != module:
            found.setdefault(target, line)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                add(submodule if submodule in modules else origin, node.lineno)
    return found


def import_graph() -> Graph:
    modules = first_party_modules()
    return {
        name: imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", modules)
        for name, path in modules.items()
    }


def loops(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def describe(group: list[str], graph: Mapping[str, Mapping[str, int]]) -> str:
    """A loop and the imports inside it (``module:line -> module``), for the failure message."""
    arrows = [
        f"  {source}:{line} imports {target}"
        for source in group
        for target, line in sorted(graph[source].items())
        if target in group
    ]
    return " <-> ".join(group) + "\n" + "\n".join(arrows)


def test_no_first_party_modules_import_each_other() -> None:
    graph = import_graph()
    assert len(graph) > 100  # every layer was read
    found = loops(graph)
    assert not found, "import loops:\n" + "\n".join(describe(group, graph) for group in found)


KNOWN = ["lyre.a", "lyre.b", "lyre.c", "lyre.pkg", "lyre.pkg.sub", "lyre.pkg.other"]


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        ("lyre.a", False, "def f():\n    from lyre.b import thing\n", {"lyre.b": 2}),
        ("lyre.a", False, "if TYPE_CHECKING:\n    import lyre.c\n", {"lyre.c": 2}),
        ("lyre.a", False, "from lyre.pkg import sub, helper\n", {"lyre.pkg.sub": 1, "lyre.pkg": 1}),
        ("lyre.pkg.sub", False, "from . import other\nfrom .. import a\n", {"lyre.pkg.other": 1,
                                                                          "lyre.a": 2}),
        ("lyre.pkg", True, "from .sub import x\nimport numpy\n", {"lyre.pkg.sub": 1}),
        ("lyre.a", False, "import importlib\nfrom lyre.a import itself\n", {}),
    ],
)  # fmt: skip
def test_the_checker_sees_every_kind_of_import(
    module: str, is_package: bool, source: str, expected: dict[str, int]
) -> None:
    assert imports_of(source, module, is_package, KNOWN) == expected


def test_a_loop_through_a_function_level_import_is_reported() -> None:
    graph = {
        "lyre.a": {"lyre.b": 3},
        "lyre.b": {"lyre.c": 7},
        "lyre.c": {"lyre.a": 12},  # e.g. inside a function, to get past the loop at load time
        "lyre.d": {"lyre.a": 1},
    }
    assert loops(graph) == [["lyre.a", "lyre.b", "lyre.c"]]
    assert "lyre.c:12 imports lyre.a" in describe(["lyre.a", "lyre.b", "lyre.c"], graph)
    assert loops({"lyre.a": {"lyre.b": 1}, "lyre.b": {}}) == []
