"""What several commands share: argument and option types, the global --quiet, template unescaping."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lyre.basics import progress


def _exists_unless_irds(value: Path | None) -> Path | None:
    """Paths must exist; ``irds:`` ids (``irds:beir/scifact/test``) are resolved by the readers."""
    if value is not None and not str(value).startswith("irds:") and not value.exists():
        raise typer.BadParameter(f"{value} does not exist (pass a file, a folder or an irds: id)")
    return value


ExistingPath = Annotated[
    Path, typer.Argument(callback=_exists_unless_irds, help="An existing file or folder, or an irds: id.")
]
IndexOption = Annotated[Path, typer.Option("--index", exists=True, file_okay=False, help="An index folder.")]
OutIndex = Annotated[Path, typer.Option("--out", help="The index folder to create or complete.")]
OutRun = Annotated[Path, typer.Option("--out", help="The TREC run file to write (plus RUN.meta.json).")]
QueriesOption = Annotated[
    Path,
    typer.Option(
        "--queries", callback=_exists_unless_irds, help="TSV, JSONL, TREC topics, Parquet or irds: id."
    ),
]
QrelsOption = Annotated[
    Path | None,
    typer.Option("--qrels", callback=_exists_unless_irds, help="Keep only judged queries (or irds: id)."),
]
TopicField = Annotated[str, typer.Option(help="TREC topics: title, desc or title+desc.")]


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
