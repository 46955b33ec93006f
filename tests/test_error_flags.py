"""Every flag an error message offers exists on a lyre command.

The library does not know how a setting was given, so it never writes a flag: it names an option with
``basics.errors.opt("name")`` (or ``OptionError("name", ...)``) and ``cli/app.py:render_error`` turns the
marker into the running command's flag, or into words when that command has no such flag. These tests read
the library's source with ``ast`` (so every message is checked, not only those a test happens to trigger):
(a) no error message spells a flag, (b) every option named is a flag of some command, (c) the renderer
never invents a flag.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from lyre.basics.errors import OPTION_MARK, LyreError, opt
from lyre.cli.app import app, render_error
from lyre.cli.flags import flag_of

REPOSITORY = Path(__file__).resolve().parents[1]
LIBRARY = ("basics", "formats", "models", "indexes", "retrieval", "serve")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OTHER_PROGRAM = re.compile(r"`(?!lyre\b)[^`]*`")
LYRE_COMMAND = re.compile(r"`lyre (?P<command>[a-z]+)(?P<rest>[^`]*)`")
BASE_ERRORS = frozenset({"LyreError", "InputError", "OptionError"})


def library_trees() -> list[tuple[str, ast.Module]]:
    paths = sorted(path for package in LIBRARY for path in (REPOSITORY / package).rglob("*.py"))
    return [
        (str(path.relative_to(REPOSITORY)), ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for path in paths
    ]


def callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def error_classes(trees: list[tuple[str, ast.Module]]) -> frozenset[str]:
    """LyreError and every class the library derives from it (by name, through any depth)."""
    known = set(BASE_ERRORS)
    classes = [node for _, tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    grew = True
    while grew:
        grew = False
        for node in classes:
            bases = {
                base.id if isinstance(base, ast.Name) else getattr(base, "attr", None) for base in node.bases
            }
            if node.name not in known and bases & known:
                known.add(node.name)
                grew = True
    return frozenset(known)


def message_text(node: ast.AST) -> str:
    """The text an expression builds, with ``{}`` for each part only known at run time (f-string
    fields, names, calls), so a quoted command stays whole across f-string fields."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else "{}"
    if isinstance(node, ast.JoinedStr):
        return "".join(message_text(part) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return message_text(node.left) + message_text(node.right)
    return "{}"


def flags_in_errors(
    path: str, tree: ast.Module, errors: frozenset[str], commands: dict[str, set[str]] | None = None
) -> list[str]:
    """``path:line: --flag`` for each flag spelled in the text of an error constructed in ``tree``.
    Quoted commands of other programs (```ray start --head```) are skipped: their flags are theirs. With
    ``commands`` (each lyre command's flags), a quoted lyre command line (```lyre index CORPUS --out
    INDEX```) may spell that command's own flags: it tells the user what to type next, whatever command
    failed; a flag the quoted command does not have is still reported."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and callee(node) in errors:
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                text = OTHER_PROGRAM.sub("", message_text(argument))
                if commands is not None:
                    for quoted in LYRE_COMMAND.finditer(text):
                        own = commands.get(quoted["command"], set())
                        found += [
                            f"{path}:{node.lineno}: {flag} (not a flag of lyre {quoted['command']})"
                            for flag in FLAG.findall(quoted["rest"])
                            if flag not in own
                        ]
                    text = LYRE_COMMAND.sub("", text)
                found += [f"{path}:{node.lineno}: {flag}" for flag in FLAG.findall(text)]
    return found


def named_options(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, name) of every option named with a literal: ``opt("name")`` or ``OptionError("name", ...)``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or callee(node) not in ("opt", "OptionError"):
            continue
        first = (
            node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "option"), None)
        )
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            yield node.lineno, first.value


def command_flags() -> dict[str, set[str]]:
    """Each lyre command's flags (with the global ones, such as ``--quiet``, given to every command)."""
    group = typer.main.get_command(app)
    shared = {flag for param in group.params for flag in param.opts if flag.startswith("--")}
    return {
        name: shared | {flag for param in command.params for flag in param.opts if flag.startswith("--")}
        for name, command in group.commands.items()  # type: ignore[attr-defined]
    }


def test_the_scanner_finds_flags_in_every_kind_of_error_text() -> None:
    source = (
        "class StageError(LyreError): ...\n"
        "class DeepError(StageError): ...\n"
        "def f(k1):\n"
        "    raise LyreError(f'bad k1 {k1}; rebuild with `lyre index --bm25-k1 {k1}`')\n"
        "def g(path):\n"
        "    raise InputError(path, 3, 'malformed', fix='pass --on-error skip')\n"
        "def h():\n"
        "    raise errors.DeepError('use ' + '--dense')\n"
        "def fine(k1):\n"
        "    raise OptionError('k1', k1, 'must be at least 0 -- see ' + opt('b'))\n"
        "def other_program(address):\n"
        "    raise LyreError(f'no cluster at {address}; start one with `ray start --head` or '\n"
        "                    f'`lyre index {address} --ray-address`')\n"
        "def not_an_error():\n"
        "    print('--not-an-error')\n"
    )
    tree = ast.parse(source)
    errors = error_classes([("m.py", tree)])
    assert {"StageError", "DeepError"} <= errors
    assert flags_in_errors("m.py", tree, errors) == [
        "m.py:4: --bm25-k1",
        "m.py:6: --on-error",
        "m.py:8: --dense",
        "m.py:12: --ray-address",
    ]
    assert sorted(named_options(tree)) == [(10, "b"), (10, "k1")]
    quoted = {"index": {"--out", "--overwrite"}}
    assert flags_in_errors("m.py", tree, errors, quoted) == [
        "m.py:4: --bm25-k1 (not a flag of lyre index)",
        "m.py:6: --on-error",
        "m.py:8: --dense",
        "m.py:12: --ray-address (not a flag of lyre index)",
    ]


@pytest.mark.slow
def test_library_error_messages_name_options_never_flags() -> None:
    trees = library_trees()
    errors = error_classes(trees)
    commands = command_flags()
    found = [site for path, tree in trees for site in flags_in_errors(path, tree, errors, commands)]
    assert not found, "error messages that spell a flag (name the option with opt(...)):\n" + "\n".join(found)


@pytest.mark.slow
def test_every_option_named_in_the_library_is_a_flag_of_some_command() -> None:
    every_flag = set().union(*command_flags().values())
    named = [(f"{path}:{line}", name) for path, tree in library_trees() for line, name in named_options(tree)]
    malformed = [f"{where}: {name!r}" for where, name in named if not OPTION_MARK.fullmatch(opt(name))]
    assert not malformed, "option names opt() cannot mark (use a parameter name):\n" + "\n".join(malformed)
    missing = [
        f"{where}: {name} ({flag_of(name)})" for where, name in named if flag_of(name) not in every_flag
    ]
    assert not missing, "options no lyre command has:\n" + "\n".join(missing)


def only_on(commands: dict[str, set[str]], owner: str, other: str) -> str:
    """A parameter name whose flag ``owner`` has and ``other`` lacks."""
    flag = sorted(commands[owner] - commands[other])[0]
    return flag.removeprefix("--").replace("-", "_")


@pytest.mark.parametrize("argv_prefix", [[], ["--quiet"], ["-q"]])
def test_render_error_gives_flags_of_the_running_command_and_words_otherwise(argv_prefix: list[str]) -> None:
    commands = command_flags()
    index_only = only_on(commands, "index", "search")  # a real flag, just not search's
    error = LyreError(
        f"{opt('rerank_depth')} 5 exceeds {opt('depth')}; {opt(index_only)} is fixed; {opt('no_such_thing')}"
    )
    argv = [*argv_prefix, "search", "--index", "/tmp/x", "--rerank-depth", "5"]
    rendered = render_error(error, argv)
    index_words = f"the {index_only.replace('_', ' ')} setting"
    assert rendered == f"--rerank-depth 5 exceeds --depth; {index_words} is fixed; the no such thing setting"
    assert set(FLAG.findall(rendered)) <= commands["search"]
    assert "--" + index_only.replace("_", "-") in render_error(error, [*argv_prefix, "index", "corpus.jsonl"])


def test_render_error_without_a_command_names_every_option_in_words() -> None:
    error = LyreError(f"{opt('rerank_depth')} must be at most {opt('depth')}")
    assert render_error(error, ["--quiet"]) == "the rerank depth setting must be at most the depth setting"
    assert render_error(error, ["no-such-command"]) == render_error(error, [])
