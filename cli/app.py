"""The `lyre` command line: one Typer app, one function per command (in `cli/*_commands.py`).

Each command parses its options, calls one library function and prints. Heavy libraries (torch,
transformers, faiss, bm25s, pyarrow) are imported inside the commands, so `lyre --help` answers instantly.
"""

from __future__ import annotations

import sys

import typer

from basics.errors import LyreError
from cli import eval_commands, experiment_commands, index_commands, search_commands
from cli.common import Quiet
from cli.options import flag_of

app = typer.Typer(
    help="lyre: ingest a corpus, index it (BM25 + dense), search, rerank, fuse and evaluate TREC runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(quiet: Quiet = False) -> None:
    """Only the global ``--quiet``; its callback does the work."""


app.command()(index_commands.ingest)
app.command()(index_commands.index)
app.command()(index_commands.encode)
app.command()(search_commands.search)
app.command()(search_commands.rerank)
app.command()(search_commands.fuse)
app.command("eval")(eval_commands.evaluate)
app.command()(eval_commands.doctor)
app.command()(experiment_commands.compare)
app.command()(experiment_commands.tune)


def render_error(error: LyreError, argv: list[str]) -> str:
    """The message with each named option shown as a flag of the command being run (``--rerank-depth``);
    an option that command does not have is named in words, so no message ever offers a flag that
    does not exist."""
    group = typer.main.get_command(app)
    words = [word for word in argv if not word.startswith("-")]
    command = group.commands.get(words[0]) if words else None  # type: ignore[attr-defined]
    flags = {flag for param in command.params for flag in param.opts} if command else set()

    def name(option: str) -> str:
        flag = flag_of(option)
        return flag if flag in flags else f"the {option.replace('_', ' ')} setting"

    return error.render(name)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        app()
    except LyreError as error:
        print(f"error: {render_error(error, sys.argv[1:])}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
