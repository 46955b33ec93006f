"""``lyre eval`` (runs against qrels, side by side) and ``lyre doctor`` (the environment and a model's
recipe). Neither writes a file; eval's paths are declared as read like every command's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from lyre.basics.outputs import Reads
from lyre.cli.common import Qrels, Quiet
from lyre.cli.flags import flags_from_options
from lyre.retrieval.doctor import doctor as run_doctor
from lyre.retrieval.evaluation import evaluate as run_eval
from lyre.retrieval.evaluation import format_table


@flags_from_options
def evaluate(
    qrels: Qrels,
    runs: Annotated[list[Path], typer.Argument(exists=True, help="One or more run files."), Reads("run")],
    measures: Annotated[str | None, typer.Option(help="Comma-separated, e.g. nDCG@10,RR@10,R@100.")] = None,
    per_query: Annotated[bool, typer.Option(help="One row per query as well.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate runs against qrels (trec_eval-compatible, through ir-measures), side by side."""
    table = run_eval(qrels, runs, measures=measures.split(",") if measures else None, per_query=per_query)
    typer.echo(json.dumps(table.to_dict(), indent=2) if as_json else format_table(table))


@flags_from_options
def doctor(
    embed_model: Annotated[
        str | None, typer.Option(help="Check this embedding model's recipe end to end.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit to check with.")] = None,
    quiet: Quiet = False,
) -> None:
    """Report the environment (versions, devices, faiss GPU support) and self-check an embedding model."""
    report = run_doctor(embed_model, max_length=max_length)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)
