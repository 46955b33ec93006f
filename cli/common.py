"""What several commands share: argument and option types, the global --quiet, template unescaping.

Every path parameter is declared as read (:class:`~basics.outputs.Reads`) or written
(:class:`~basics.outputs.Writes`) in its annotation (a path field of an options group too).
:func:`cli.flags.flags_from_options` collects them into one :class:`basics.outputs.Outputs`, checks it before
the command does anything (no output may replace an input, lie inside the index, or be another output), and
hands it to a command that asks for it (a parameter annotated ``Outputs``); the command writes only through
it. A test walks every command's declarations (the ``declared_paths`` each command carries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, overload

import typer
from lyre.basics import progress
from lyre.basics.outputs import Reads, Writes
from lyre.cli.flags import PATHS_PANEL


def _exists_unless_irds(value: Path | None) -> Path | None:
    """Paths must exist; ``irds:`` ids (``irds:beir/scifact/test``) are resolved by the readers."""
    if value is not None and not str(value).startswith("irds:") and not value.exists():
        raise typer.BadParameter(f"{value} does not exist (pass a file, a folder or an irds: id)")
    return value


Corpus = Annotated[
    Path,
    typer.Argument(callback=_exists_unless_irds, help="An existing file or folder, or an irds: id."),
    Reads("corpus"),
]
Qrels = Annotated[
    Path,
    typer.Argument(callback=_exists_unless_irds, help="An existing file or folder, or an irds: id."),
    Reads("qrels"),
]
IndexOption = Annotated[
    Path,
    typer.Option("--index", exists=True, file_okay=False, help="An index folder."),
    Reads("index", contents=True),
]
IndexToComplete = Annotated[
    Path,
    typer.Option("--index", exists=True, file_okay=False, help="An index folder."),
    Writes("index", folder=True),
]
OutIndex = Annotated[
    Path, typer.Option("--out", help="The index folder to create or complete."), Writes("index", folder=True)
]
OutRun = Annotated[
    Path, typer.Option("--out", help="The TREC run file to write (plus RUN.meta.json)."), Writes("run")
]
QueriesOption = Annotated[
    Path,
    typer.Option(
        "--queries", callback=_exists_unless_irds, help="TSV, JSONL, TREC topics, Parquet or irds: id."
    ),
    Reads("queries file"),
]
QrelsOption = Annotated[
    Path | None,
    typer.Option("--qrels", callback=_exists_unless_irds, help="Keep only judged queries (or irds: id)."),
    Reads("qrels"),
]
TopicField = Annotated[
    str, typer.Option(help="TREC topics: title, desc or title+desc.", rich_help_panel=PATHS_PANEL)
]


@overload
def unescape(template: str) -> str: ...
@overload
def unescape(template: None) -> None: ...
def unescape(template: str | None) -> str | None:
    """Templates typed in a shell carry a literal backslash-n; the models need the newline itself."""
    return template.replace("\\n", "\n") if template else template


def _silence(quiet: bool) -> bool:
    if quiet:
        progress.set_quiet(True)
    return quiet


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", callback=_silence, help="No progress bars or status lines.")
]
"""Accepted before the command (``lyre -q index``) and after it (``lyre index ... --quiet``)."""
