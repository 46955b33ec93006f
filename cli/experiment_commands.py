"""``lyre compare``: runs against a baseline with paired tests, corrected p-values, tables and plots.

The settings are declared once in :class:`retrieval.compare.CompareOptions`; :func:`cli.options.expand`
turns them into flags. Every option is checked, and ``--plot`` checked for its suffix and matplotlib,
before any run is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import Quiet
from cli.options import expand
from retrieval.compare import CompareOptions


@expand
def compare(
    qrels: Annotated[Path, typer.Argument(help="Qrels file (BEIR TSV or TREC), or an irds: id.")],
    baseline: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The baseline run.")],
    runs: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="Runs compared with the baseline.")
    ],
    options: CompareOptions,
    queries: Annotated[
        Path | None, typer.Option(help="Query file or irds: id: shows the text of --per-query queries.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also draw per-query differences, recall curves and the table: .png, .svg or .html."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Compare runs with a baseline: mean, difference with CI, paired test, corrected p, wins/ties/losses."""
    from basics import progress
    from retrieval.compare import check_compare, check_plot_path, render
    from retrieval.compare import compare as run_compare

    check_compare(baseline, runs, options)
    check_plot_path(plot)
    report = run_compare(qrels, baseline, runs, options, queries=queries)
    typer.echo(render(report, options.format))
    if plot is not None:
        from retrieval.plots import write_plot

        progress.say(f"wrote {write_plot(report, plot)}")
