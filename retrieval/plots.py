"""``lyre compare --plot``: one figure a reader takes in at a glance.

Top: each run's per-query difference to the baseline on the first measure, sorted, wins above the line
and losses below (how many queries move, and by how much, which a mean hides). Middle: recall at depth
1..1000 of every run (where a first stage or a reranking depth leaves relevant documents behind).
Bottom: the comparison table. The title names the runs, the baseline, the qrels and the measure.

PNG and SVG come from matplotlib (the ``plots`` extra); HTML is one self-contained file: the SVG embedded
as base64, with the table as real HTML text next to it (copyable). The file is written through the guarded
writer (:mod:`basics.outputs`): never over a run or the qrels it was drawn from, atomically, and a failed
write names ``--plot``.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.numbers import count
from lyre.basics.outputs import Output, Source, output
from lyre.retrieval.compare import CompareReport
from lyre.retrieval.compare_tables import describe, p_value, run_labels, signed, table_rows
from lyre.retrieval.evaluation import evaluate

RECALL_DEPTHS = tuple(int(d) for d in np.unique(np.round(np.logspace(0, 3, 46))))
"""Depths of the recall curve: 1 to 1000, evenly spaced on the log axis it is drawn on."""


def require_matplotlib() -> None:
    """One line saying what to install when matplotlib is missing (checked before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LyreError(f"{opt('plot')} needs matplotlib; pip install 'lychee-retrieval[plots]'") from None


def check_plot_path(plot: Path | None) -> None:
    """A plot file must end in .png, .svg or .html, and matplotlib must be installed (checked first)."""
    if plot is None:
        return
    if plot.suffix.lower() not in (".png", ".svg", ".html"):
        raise OptionError("plot", plot, "must end in .png, .svg or .html")
    require_matplotlib()


def recall_curves(qrels: str | Path, runs: Sequence[str]) -> dict[str, list[float]]:
    """Mean recall of each run at every :data:`RECALL_DEPTHS` depth (lyre eval's averaging rules)."""
    measures = [f"R@{depth}" for depth in RECALL_DEPTHS]
    table = evaluate(qrels, list(runs), measures=measures)
    return {run: [table.means[run][m] for m in table.measures] for run in runs}


def _figure(report: CompareReport, recall: dict[str, list[float]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = run_labels([report.baseline, *report.runs])
    measure = report.measures[0]
    header, rows = table_rows(report)
    table_height = 0.25 * (len(rows) + 1) + 0.6
    heights = [2.4] * len(report.runs) + [3.2, table_height]
    figure, axes = plt.subplots(
        len(heights), 1, figsize=(12, sum(heights) + 1.2), gridspec_kw={"height_ratios": heights}
    )
    for ax, run in zip(axes, report.runs, strict=False):
        c = report.comparison(run, measure)
        differences = np.sort(report.differences(run, measure))[::-1]
        colours = np.where(differences > 0, "#2a9d8f", np.where(differences < 0, "#e76f51", "#999999"))
        ax.bar(np.arange(differences.size), differences, width=1.0, color=colours)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlim(-0.5, differences.size - 0.5)
        ax.set_xticks([])
        ax.set_ylabel(f"Δ {measure}")
        ax.set_title(
            f"{labels[run]} − {labels[report.baseline]}: {measure} per query, sorted "
            f"(mean {signed(c.difference)}, p {report.correction} {p_value(c.p_corrected)}, "
            f"W/T/L {count(c.wins)}/{count(c.ties)}/{count(c.losses)})",
            fontsize=10,
        )
    curve = axes[len(report.runs)]
    for run in [report.baseline, *report.runs]:
        curve.plot(RECALL_DEPTHS, recall[run], marker=".", label=labels[run])
    curve.set_xscale("log")
    curve.set_xlim(1, RECALL_DEPTHS[-1])
    curve.set_ylim(0, 1)
    curve.set_xlabel("depth k")
    curve.set_ylabel("mean R@k")
    curve.set_title("Recall at depth 1..1000", fontsize=10)
    curve.grid(True, which="both", alpha=0.3)
    curve.legend(loc="lower right", fontsize=9)
    table_ax = axes[-1]
    table_ax.axis("off")
    table = table_ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    figure.suptitle(_title(report), fontsize=11)
    figure.text(0.01, 0.005, textwrap.fill(describe(report), 190), fontsize=7, va="bottom")
    figure.tight_layout(rect=(0, 0.04, 1, 0.98))
    return figure


def _title(report: CompareReport) -> str:
    labels = run_labels([report.baseline, *report.runs])
    others = ", ".join(labels[r] for r in report.runs)
    return (
        f"{others} against {labels[report.baseline]} on {report.qrels} "
        f"({count(report.num_queries, 'queries')}; bars: {report.measures[0]})"
    )


def write_plot(report: CompareReport, path: Path | Output) -> Path:
    """Draw the figure for ``report`` into ``path`` (.png, .svg or a self-contained .html), atomically;
    ``path`` is the ``plot`` output the command declared, or a path (checked against the runs and qrels
    of the report either way)."""
    import matplotlib.pyplot as plt

    require_matplotlib()
    inputs = [Source("qrels", Path(report.qrels)), Source("baseline run", Path(report.baseline))]
    target = output(path, "plot", "plot").guarding(
        [*inputs, *(Source("run", Path(run)) for run in report.runs)]
    )
    recall = recall_curves(report.qrels, [report.baseline, *report.runs])
    figure = _figure(report, recall)
    try:
        suffix = target.path.suffix.lower()
        if suffix == ".html":
            target.write_text(_html(report, figure))
        else:
            with target.publishing() as (tmp,):
                figure.savefig(tmp, format=suffix.lstrip("."), dpi=130)
    finally:
        plt.close(figure)
    return target.path


def _html(report: CompareReport, figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    header, rows = table_rows(report)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    title = html.escape(_title(report))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>lyre compare</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}img{max-width:100%}</style></head><body>"
        f"<h2>{title}</h2><img alt='{title}' src='data:image/svg+xml;base64,{image}'>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>{html.escape(describe(report))}</p></body></html>\n"
    )
