"""``lyre compare`` (runs against a baseline with paired tests, corrected p-values, tables and plots) and
``lyre tune`` (search settings chosen on dev queries with cross-validation).

The settings are declared once in :class:`retrieval.compare.CompareOptions`;
:func:`cli.flags.flags_from_options` turns them into flags. Every option is checked, and ``--plot`` checked
for its suffix, matplotlib, and against every input (it may not replace a run, the qrels or the queries),
before any run is read; the plot and the settings file are written through the declared outputs
(:mod:`basics.outputs`), under their lock from the checks on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from lyre.basics import progress
from lyre.basics.outputs import OutputOptions, Outputs, Reads, Writes
from lyre.cli.common import IndexOption, QueriesOption, Quiet, TopicField, _exists_unless_irds
from lyre.cli.flags import flags_from_options
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.compare import CompareOptions, check_compare
from lyre.retrieval.compare import compare as run_compare
from lyre.retrieval.compare_tables import render as render_comparison
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plots import check_plot_path, write_plot
from lyre.retrieval.tune import TuneOptions, check_tune, write_report
from lyre.retrieval.tune import render as render_tuning
from lyre.retrieval.tune import tune as run_tune


@flags_from_options
def compare(
    qrels: Annotated[
        Path, typer.Argument(help="Qrels file (BEIR TSV or TREC), or an irds: id."), Reads("qrels")
    ],
    baseline: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The baseline run."), Reads("baseline run")
    ],
    runs: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="Runs compared with the baseline."),
        Reads("run"),
    ],
    options: CompareOptions,
    writer: OutputOptions,
    outputs: Outputs,
    queries: Annotated[
        Path | None,
        typer.Option(help="Query file or irds: id: shows the text of --per-query queries."),
        Reads("queries file"),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also draw per-query differences, recall curves and the table: .png, .svg or .html."
        ),
        Writes("plot"),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Compare runs with a baseline: mean, difference with CI, paired test, corrected p, wins/ties/losses."""
    check_compare(baseline, runs, options)
    check_plot_path(plot)
    target = outputs.get("plot")
    with target.claimed() if target is not None else contextlib.nullcontext():
        report = run_compare(qrels, baseline, runs, options, queries=queries)
        if target is not None:
            progress.say(f"wrote {write_plot(report, target)}")
    typer.echo(render_comparison(report, options.format))


@flags_from_options
def tune(
    index: IndexOption,
    queries: QueriesOption,
    qrels: Annotated[
        Path,
        typer.Option(
            "--qrels", callback=_exists_unless_irds, help="Judgements of the dev queries (or an irds: id)."
        ),
        Reads("qrels"),
    ],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            help="NAME=v1,v2,... or NAME=start:stop:step (stop included), repeatable; NAME is a search "
            "setting such as fusion, rrf-k, weight, normalization, depth, k, rerank-depth.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Write the chosen settings here (JSON, for lyre search --settings)."),
        Writes("settings file"),
    ],
    tune_options: TuneOptions,
    options: SearchOptions,
    rerank: RerankOptions,
    cache: CacheOptions,
    writer: OutputOptions,
    outputs: Outputs,
    topic_field: TopicField = "title",
    quiet: Quiet = False,
) -> None:
    """Choose search settings on dev queries (grid, k-fold cross-validation) and write them for --settings."""
    check_tune(grid, options, rerank, tune_options, cache)
    with outputs.file("out").claimed():
        report = run_tune(
            index, queries, qrels, grid, options, rerank, tune_options, cache=cache, topic_field=topic_field
        )
        inputs = {"queries": queries, "qrels": qrels, "index": index}
        write_report(out, report, tune_options, options, rerank, inputs)
    typer.echo(render_tuning(report, tune_options.folds))
    typer.echo(f"wrote {out}")
