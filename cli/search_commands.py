"""``lyre search``, ``lyre rerank`` and ``lyre fuse``: flags made from the declared options, one library call.

The options dataclasses of :mod:`retrieval.options` are the only place a default, range or help text of these
commands is written; :func:`cli.flags.flags_from_options` turns each into flags. Each command's paths are
declared on its parameters and checked before it runs; the run is written through the declared output
(:mod:`basics.outputs`), which a second command writing the same ``--out`` cannot mix with.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from lyre.basics.outputs import OutputOptions, Outputs, Reads
from lyre.cli.common import (
    IndexOption,
    OutRun,
    QrelsOption,
    QueriesOption,
    Quiet,
    TopicField,
    unescape,
)
from lyre.cli.flags import flags_from_options
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.fuse_runs import fuse_run_files
from lyre.retrieval.options import FuseOptions, RerankOptions, RerankRunOptions, SearchOptions
from lyre.retrieval.rerank_run import rerank_run_file
from lyre.retrieval.search_run import search_to_run
from lyre.retrieval.settings_file import apply, blamed_on, read_settings, settings_record

SettingsOption = Annotated[
    Path | None,
    typer.Option(
        "--settings",
        exists=True,
        dir_okay=False,
        help="Apply a settings file written by `lyre tune --out`; flags typed here win over it.",
    ),
    Reads("settings file"),
]


def _typed(rerank: RerankOptions) -> RerankOptions:
    """A template typed in a shell carries a literal backslash-n; the model needs the newline."""
    return replace(rerank, rerank_template=unescape(rerank.rerank_template))


def typed_on_command_line(context: typer.Context) -> set[str]:
    """The options the user typed (not left at their defaults): they win over a settings file."""
    sources = {name: context.get_parameter_source(name) for name in context.params}
    return {name for name, source in sources.items() if source is not None and source.name == "COMMANDLINE"}


@flags_from_options
def search(
    context: typer.Context,
    index: IndexOption,
    queries: QueriesOption,
    out: OutRun,
    options: SearchOptions,
    rerank: RerankOptions,
    cache: CacheOptions,
    aggregation: AggregationOptions,
    lock: OutputOptions,
    outputs: Outputs,
    qrels: QrelsOption = None,
    settings: SettingsOption = None,
    topic_field: TopicField = "title",
    quiet: Quiet = False,
) -> None:
    """Search a query file in batch and write a TREC run (hybrid BM25 + dense, fused, then reranked)."""
    record = None
    blame: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if settings is not None:
        chosen, typed = read_settings(settings), typed_on_command_line(context)
        options, rerank = apply(chosen, options, rerank, keep=typed)
        record = settings_record(settings, chosen, typed)
        blame = blamed_on(settings, set(chosen) - typed)
    with blame:
        summary = search_to_run(
            index,
            queries,
            outputs.file("out"),
            options,
            _typed(rerank),
            qrels=qrels,
            topic_field=topic_field,
            cache=cache,
            settings_file=record,
            aggregation=aggregation,
            wait=lock.wait,
        )
    typer.echo(summary)


@flags_from_options
def rerank(
    index: IndexOption,
    queries: QueriesOption,
    run: Annotated[
        Path,
        typer.Option("--run", exists=True, dir_okay=False, help="The run to rerank."),
        Reads("input run"),
    ],
    out: OutRun,
    rerank: RerankOptions,
    options: RerankRunOptions,
    cache: CacheOptions,
    lock: OutputOptions,
    outputs: Outputs,
    topic_field: TopicField = "title",
    quiet: Quiet = False,
) -> None:
    """Rerank the top K of any existing run with the index's texts (resumable; reuses cached scores)."""
    summary = rerank_run_file(
        index,
        queries,
        run,
        outputs.file("out"),
        _typed(rerank),
        options,
        topic_field=topic_field,
        cache=cache,
        wait=lock.wait,
    )
    typer.echo(summary)


@flags_from_options
def fuse(
    runs: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="Two or more run files."),
        Reads("input run"),
    ],
    out: OutRun,
    options: FuseOptions,
    writer: OutputOptions,
    outputs: Outputs,
    quiet: Quiet = False,
) -> None:
    """Fuse existing run files (RRF or normalised linear combination) into one run."""
    typer.echo(fuse_run_files(runs, outputs.file("out"), options))
