"""``lyre search``, ``lyre rerank`` and ``lyre fuse``: flags made from the declared options, one library call.

The options dataclasses of :mod:`retrieval.options` are the only place a default, range or help text of
these commands is written; :func:`cli.options.expand` turns each into flags.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from cli.common import IndexOption, OutRun, QrelsOption, QueriesOption, Quiet, TopicField, unescape
from cli.options import expand
from retrieval.options import FuseOptions, RerankOptions, RerankRunOptions, SearchOptions


def _typed(rerank: RerankOptions) -> RerankOptions:
    """A template typed in a shell carries a literal backslash-n; the model needs the newline."""
    return replace(rerank, rerank_template=unescape(rerank.rerank_template))


@expand
def search(
    index: IndexOption,
    queries: QueriesOption,
    out: OutRun,
    options: SearchOptions,
    rerank: RerankOptions,
    qrels: QrelsOption = None,
    topic_field: TopicField = "title",
    quiet: Quiet = False,
) -> None:
    """Search a query file in batch and write a TREC run (hybrid BM25 + dense, fused, then reranked)."""
    from retrieval.run_files import search_to_run

    summary = search_to_run(
        index, queries, out, options, _typed(rerank), qrels=qrels, topic_field=topic_field
    )
    typer.echo(summary)


@expand
def rerank(
    index: IndexOption,
    queries: QueriesOption,
    run: Annotated[Path, typer.Option("--run", exists=True, dir_okay=False, help="The run to rerank.")],
    out: OutRun,
    rerank: RerankOptions,
    options: RerankRunOptions,
    topic_field: TopicField = "title",
    quiet: Quiet = False,
) -> None:
    """Rerank the top K of any existing run with the index's document texts (resumable when killed)."""
    from retrieval.run_files import rerank_run_file

    typer.echo(rerank_run_file(index, queries, run, out, _typed(rerank), options, topic_field=topic_field))


@expand
def fuse(
    runs: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Two or more run files.")],
    out: OutRun,
    options: FuseOptions,
    quiet: Quiet = False,
) -> None:
    """Fuse existing run files (RRF or normalised linear combination) into one run."""
    from retrieval.run_files import fuse_run_files

    typer.echo(fuse_run_files(runs, out, options))
