"""The `lyre` command line: one Typer app, one function per command (in `cli/*_commands.py`).

Each command parses its options, calls one library function and prints. Heavy libraries (torch,
transformers, faiss, bm25s, pyarrow) are imported inside the commands, so `lyre --help` answers instantly.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import typer
from lyre.basics import progress
from lyre.basics.errors import LyreError
from lyre.cli.common import Quiet
from lyre.cli.flags import flag_of, flags_from_options
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # the range pyproject pins

COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("lyre.cli.index_commands", "ingest"),
    "index": ("lyre.cli.index_commands", "index"),
    "encode": ("lyre.cli.index_commands", "encode"),
    "search": ("lyre.cli.search_commands", "search"),
    "rerank": ("lyre.cli.search_commands", "rerank"),
    "fuse": ("lyre.cli.search_commands", "fuse"),
    "eval": ("lyre.cli.eval_commands", "evaluate"),
    "doctor": ("lyre.cli.eval_commands", "doctor"),
    "compare": ("lyre.cli.experiment_commands", "compare"),
    "tune": ("lyre.cli.experiment_commands", "tune"),
    "serve": ("lyre.cli.serve_commands", "serve"),
}
"""Command -> (module, function). ``lyre CMD`` imports only CMD's module and the library under it (the
option dataclasses of every command import a good part of the library: ~50 ms a command start would
otherwise pay); ``lyre --help`` imports them all."""


@flags_from_options
def _global(quiet: Quiet = False) -> None:
    """Only the global ``--quiet``; its callback does the work."""


class _HelpFlag:
    """``--help`` shown as a flag: Typer 0.29 prints its type (``<bool>``) unless it has a metavar, and
    ``--help`` is the one flag :func:`cli.flags.flags_from_options` does not make."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]  # a mixin: the Typer class after it has it
        if option is not None:
            option.metavar = ""
        return option


class LyreCommand(_HelpFlag, typer.core.TyperCommand):
    """A ``lyre`` command."""


class LyreGroup(_HelpFlag, typer.core.TyperGroup):
    """The ``lyre`` app."""


@cache
def build_app(names: tuple[str, ...] = tuple(COMMANDS)) -> typer.Typer:
    """The Typer app with the commands ``names`` (all by default)."""
    built = typer.Typer(
        help="lyre: ingest a corpus, index it (BM25 + dense), search, rerank, fuse and evaluate TREC runs.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        cls=LyreGroup,
    )
    built.callback()(_global)  # with a callback the app stays a group, even with one command
    for name in names:
        module, function = COMMANDS[name]
        built.command(name, cls=LyreCommand)(getattr(importlib.import_module(module), function))
    return built


def command_word(argv: Iterable[str]) -> str | None:
    """The command a command line names (its first word that is not a flag: the only global option,
    ``--quiet``, takes no value), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def app_for(argv: Iterable[str]) -> typer.Typer:
    """The app a command line needs: the command it names alone, or every command (help, a typo)."""
    word = command_word(argv)
    return build_app((word,)) if word in COMMANDS else build_app()


def __getattr__(name: str) -> typer.Typer:
    """``cli.app.app``: the app with every command (for tests and tools that inspect the CLI)."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def option_namer(argv: list[str]) -> Callable[[str], str]:
    """How messages name an option: as a flag of the command being run (``--rerank-depth``), or in words
    for an option that command does not have, so no message ever offers a flag that does not exist.
    The command's flags are looked up on the first message, never on a run that says nothing."""

    @cache
    def flags() -> set[str]:
        group = typer.main.get_command(app_for(argv))
        word = command_word(argv)
        commands = group.commands if isinstance(group, typer.core.TyperGroup) else {}
        command = commands.get(word) if word else None
        return {flag for param in command.params for flag in param.opts} if command else set()

    def name(option: str) -> str:
        flag = flag_of(option)
        return flag if flag in flags() else f"the {option.replace('_', ' ')} setting"

    return name


def render_error(error: LyreError, argv: list[str]) -> str:
    """The message with each named option shown as :func:`option_namer` names it."""
    return error.render(option_namer(argv))


def usage_line(error: ClickException) -> str:
    """A command line the parser refuses (an unknown flag, a bad value, a missing argument), as one line
    that names the command and where its flags are listed, instead of Typer's framed box."""
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "lyre"
    return f"{command}: {error.format_message().rstrip('.')} (see '{command} --help')"


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    argv = sys.argv[1:]
    name_option = option_namer(argv)  # one namer for notices and the error line: flags looked up once
    progress.set_option_names(name_option)
    try:
        status = app_for(argv)(args=argv, prog_name="lyre", standalone_mode=False)
    except NoArgsIsHelpError as error:
        error.show()  # `lyre` or `lyre CMD` alone: the help, as Click prints it
        sys.exit(error.exit_code)
    except ClickException as error:
        print(f"error: {usage_line(error)}", file=sys.stderr)
        sys.exit(error.exit_code)
    except LyreError as error:
        print(f"error: {error.render(name_option)}", file=sys.stderr)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("error: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)  # Click hands back a typer.Exit's code


if __name__ == "__main__":
    main()
