"""What several commands share: argument and option types, the global --quiet, template unescaping."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from basics import progress
from retrieval.fusion import FUSION_METHODS

FUSION_HELP = "; ".join(
    f"{method.name}: {method.summary} ({', '.join(f'{p.name}={p.default}' for p in method.params)})"
    for method in FUSION_METHODS.values()
)


ExistingPath = Annotated[Path, typer.Argument(exists=True, help="An existing file or folder.")]
IndexOption = Annotated[Path, typer.Option("--index", exists=True, file_okay=False, help="An index folder.")]
OutIndex = Annotated[Path, typer.Option("--out", help="The index folder to create or complete.")]
OutRun = Annotated[Path, typer.Option("--out", help="The TREC run file to write (plus RUN.meta.json).")]
QueriesOption = Annotated[
    Path, typer.Option("--queries", exists=True, help="TSV, JSONL, TREC topics or Parquet.")
]
QrelsOption = Annotated[Path | None, typer.Option("--qrels", exists=True, help="Keep only judged queries.")]
TopicField = Annotated[str, typer.Option(help="TREC topics: title, desc or title+desc.")]
IdField = Annotated[str | None, typer.Option(help="Corpus field holding the document id (default: guessed).")]
TitleField = Annotated[str | None, typer.Option(help="Corpus field holding the title (default: guessed).")]
TextField = Annotated[str | None, typer.Option(help="Corpus field holding the text (default: guessed).")]
OnError = Annotated[
    str, typer.Option(help="fail: stop at the first bad document; skip: skip and count them.")
]
EmbedModel = Annotated[str, typer.Option(help="Hub id or local folder of the embedding model.")]
RerankModel = Annotated[str, typer.Option(help="Hub id or local folder of the reranker.")]
ShardId = Annotated[int | None, typer.Option(help="Encode only this slice (default: SLURM_ARRAY_TASK_ID).")]
MaxLength = Annotated[int | None, typer.Option(help="Token limit per document.")]
Dim = Annotated[int | None, typer.Option(help="Matryoshka: keep the first DIM dimensions.")]
Pooling = Annotated[str | None, typer.Option(help="Override the recipe: last-token, mean or cls.")]
QueryTemplate = Annotated[str | None, typer.Option(help="Override, e.g. 'Instruct: {task}\\nQuery:{query}'.")]
QueryInstruction = Annotated[str | None, typer.Option(help="Override the task instruction given to queries.")]
Dtype = Annotated[str | None, typer.Option(help="auto (bf16 on CUDA, float32 on CPU), float32 or bfloat16.")]
NumShards = Annotated[int | None, typer.Option(help="Number of slices (default: SLURM_ARRAY_TASK_COUNT).")]


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
