"""lyre's packages are layers and imports only point down: basics < formats < models < indexes <
retrieval < serve < cli. A module may import its own package and any lower one, never a higher one, whether
the import is at the top of the file, inside a function, or under ``TYPE_CHECKING`` (each is an arrow on the
drawing of the code). And `lyre --help` stays instant: it loads none of the heavy libraries.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import modules_imported_by

REPOSITORY = Path(__file__).resolve().parents[1]
LAYERS = ("basics", "formats", "models", "indexes", "retrieval", "serve", "cli")
HEAVY = (
    "torch", "transformers", "faiss", "bm25s", "pyarrow", "scipy", "matplotlib", "jax", "ray", "starlette",
    "fastapi", "uvicorn",
)  # fmt: skip


@dataclass(frozen=True)
class Arrow:
    """One import from a module of ``source`` (a layer) to ``target`` (a layer), at ``where``."""

    where: str
    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def imported_names(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, relative ones resolved against
    ``package`` (the dotted package the module lives in), plus ``importlib.import_module("literal")``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def upward_arrows(source: str, module_path: str) -> list[Arrow]:
    """Imports of the module at ``module_path`` (repository-relative, e.g. ``indexes/bm25.py``) that
    reach a higher layer than its own."""
    parts = Path(module_path).with_suffix("").parts
    layer = parts[0]
    package = ".".join(("lyre", *parts[:-1]))
    arrows = []
    for line, name in imported_names(ast.parse(source, module_path), package):
        top, _, rest = name.partition(".")
        target = rest.split(".")[0]
        if top == "lyre" and target in LAYERS and LAYERS.index(target) > LAYERS.index(layer):
            arrows.append(Arrow(f"{module_path}:{line}", layer, target))
    return arrows


def library_modules() -> list[Path]:
    return sorted(path for layer in LAYERS for path in (REPOSITORY / layer).rglob("*.py"))


def test_every_layer_has_modules_to_check() -> None:
    found = {path.relative_to(REPOSITORY).parts[0] for path in library_modules()}
    assert found == set(LAYERS)


def test_no_import_points_up_a_layer() -> None:
    arrows = [
        arrow
        for path in library_modules()
        for arrow in upward_arrows(path.read_text(encoding="utf-8"), str(path.relative_to(REPOSITORY)))
    ]
    assert not arrows, "imports that point up a layer:\n" + "\n".join(map(str, arrows))


def bare_layer_imports(source: str, module_path: str) -> list[str]:
    """Imports in ``source`` of a layer by its folder name (``import retrieval``) instead of through
    ``lyre.``: installed, such a name is not lyre's but whatever a user's folder or PyPI holds."""
    return [
        f"{module_path}:{line}: {name}"
        for line, name in imported_names(ast.parse(source, module_path), "lyre")
        if name.split(".")[0] in LAYERS
    ]


def test_every_first_party_import_goes_through_lyre() -> None:
    first_party = [*library_modules(), *sorted((REPOSITORY / "tests").glob("*.py"))]
    first_party += sorted((REPOSITORY / "benchmarks").glob("*.py"))
    bare = [
        found
        for path in first_party
        for found in bare_layer_imports(path.read_text(encoding="utf-8"), str(path.relative_to(REPOSITORY)))
    ]
    assert not bare, "imports of a layer's folder name instead of lyre.*:\n" + "\n".join(bare)


def test_the_bare_import_check_sees_absolute_imports_only() -> None:
    source = "import retrieval.plan\nfrom lyre.cli import app\nfrom . import models\nimport numpy\n"
    assert bare_layer_imports(source, "cli/app.py") == ["cli/app.py:1: retrieval.plan"]


CHECKER_CASES = [
    ("indexes/bm25.py", "def f():\n    from lyre.retrieval.plan import SearchPlan\n", ["indexes->retrieval"]),
    (
        "basics/errors.py",
        "import lyre.cli.app\nimport lyre.formats.runs as runs\n",
        ["basics->cli", "basics->formats"],
    ),
    (
        "models/embedder.py",
        "import importlib\nimportlib.import_module('lyre.indexes.docstore')\n",
        ["models->indexes"],
    ),
    ("retrieval/fusion/rrf.py", "from .. import plan\nfrom ..fusion import linear\n", []),
    ("indexes/dense.py", "from ..retrieval import plan\n", ["indexes->retrieval"]),
    ("cli/app.py", "from lyre.retrieval import plan\nfrom lyre.basics.errors import opt\n", []),
    ("indexes/bm25.py", "if TYPE_CHECKING:\n    from lyre.cli.common import Quiet\n", ["indexes->cli"]),
    ("formats/runs.py", "import numpy\nfrom lyre.formats.records import Query\n", []),
]


@pytest.mark.parametrize(("module_path", "source", "expected"), CHECKER_CASES)
def test_the_checker_sees_every_kind_of_upward_import(
    module_path: str, source: str, expected: list[str]
) -> None:
    found = [f"{arrow.source}->{arrow.target}" for arrow in upward_arrows(source, module_path)]
    assert sorted(found) == sorted(expected)


HELP_PROBE = """
import json, sys
from lyre.cli.app import app
for argv in ([], *[[name] for name in sys.argv[1:]]):
    try:
        app([*argv, "--help"], prog_name="lyre")
    except SystemExit as exit:
        assert exit.code in (0, None), (argv, exit.code)
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.stdin.read())))
print("HEAVY=" + json.dumps(heavy))
"""


@pytest.mark.slow
def test_help_of_every_command_imports_no_heavy_library() -> None:
    import typer
    from lyre.cli.app import app

    commands = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"index", "search", "eval"} <= set(commands)
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *commands],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "search" in result.stdout and "--index" in result.stdout  # the help was really printed
    marker = [line for line in result.stdout.splitlines() if line.startswith("HEAVY=")]
    assert json.loads(marker[-1].removeprefix("HEAVY=")) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["search", "--help"], ["app", "common", "flags", "search_commands"]),
        (["--quiet", "eval", "--help"], ["app", "common", "eval_commands", "flags"]),
        # serve's search settings are search's flags (and its --settings file)
        (["serve", "--help"], ["app", "common", "flags", "search_commands", "serve_commands"]),
        (
            ["--help"],
            ["app", "common", "eval_commands", "experiment_commands", "flags", "index_commands",
             "search_commands", "serve_commands"],
        ),
    ],
)  # fmt: skip
def test_a_command_imports_only_its_own_command_module(argv: list[str], expected: list[str]) -> None:
    result, modules = modules_imported_by(*argv)
    assert "Usage" in result.stdout  # the help was really printed
    own = sorted(name.removeprefix("lyre.cli.") for name in modules if name.startswith("lyre.cli."))
    assert own == expected
