"""``lyre compare``'s report as text: a terminal table, Markdown, LaTeX (booktabs), JSON or CSV.

The statistics are computed once (:mod:`retrieval.compare`); this module only lays them out. Every text
format and the plot (:mod:`retrieval.plots`) share one header and one row per run and measure
(:func:`table_rows`), printed the way lyre prints numbers (:mod:`basics.numbers`); CSV and JSON keep the
full precision for further work.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from lyre.basics.errors import OptionError
from lyre.basics.numbers import count, measure, share
from lyre.retrieval.compare import FORMATS, CompareReport
from lyre.retrieval.correction import CORRECTIONS
from lyre.retrieval.significance import SIGNIFICANCE_TESTS

MARKER = "*"
CSV_HEADER = (
    "measure",
    "run",
    "baseline",
    "mean",
    "diff",
    "ci_low",
    "ci_high",
    "p",
    "p_corrected",
    "significant",
    "wins",
    "ties",
    "losses",
)


def signed(value: float) -> str:
    """A difference of a measure: :func:`basics.numbers.measure` with its sign, ``+0.0123``."""
    return ("+" if value >= 0 else "") + measure(value)


def p_value(value: float) -> str:
    """A p-value: four decimals like a measure, in scientific notation below 1e-4 (where 0.0000 would
    hide how small it is)."""
    return measure(value) if value >= 1e-4 else f"{value:.1e}"


def run_labels(paths: Sequence[str]) -> dict[str, str]:
    """Short names for the runs: file names, or full paths when two files share a name."""
    names = [Path(p).name for p in paths]
    unique = len(set(names)) == len(names)
    return {p: (name if unique else p) for p, name in zip(paths, names, strict=True)}


def table_rows(report: CompareReport) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by every text format and the plot: per measure, the baseline, then each run."""
    level = share(report.confidence, 1)
    header = ["measure", "run", "mean", "diff", f"{level} CI", "p", f"p ({report.correction})", "W/T/L"]
    labels = run_labels([report.baseline, *report.runs])
    rows = []
    for name in report.measures:
        baseline = measure(report.means[report.baseline][name])
        rows.append([name, labels[report.baseline] + " (baseline)", baseline, *[""] * 5])
        for run in report.runs:
            c = report.comparison(run, name)
            rows.append(
                [
                    name,
                    labels[run],
                    measure(c.mean),
                    signed(c.difference) + (MARKER if c.significant else ""),
                    f"[{signed(c.ci_low)}, {signed(c.ci_high)}]",
                    p_value(c.p_value),
                    p_value(c.p_corrected),
                    f"{count(c.wins)}/{count(c.ties)}/{count(c.losses)}",
                ]
            )
    return header, rows


def describe(report: CompareReport) -> str:
    """The footer: what was paired, tested and corrected, and what the marker means."""
    test = SIGNIFICANCE_TESTS[report.test]
    draws = f", {count(report.samples, 'samples')}, seed {report.seed}" if test.resamples else ""
    family = count(len(report.runs), "comparisons")
    return (
        f"{count(report.num_queries, 'queries')} of {report.qrels} (unanswered queries score 0); "
        f"{test.summary}; {share(report.confidence, 1)} CI: {test.interval_summary}{draws}; p corrected "
        f"with {CORRECTIONS[report.correction].summary} over {family} per measure; {MARKER} = corrected "
        f"p < {report.alpha:g}; W/T/L = queries won/tied/lost against the baseline"
    )


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]


def _changes_lines(report: CompareReport) -> list[str]:
    labels = run_labels([report.baseline, *report.runs])
    lines = []
    for run, groups in report.largest_changes.items():
        for kind, changes in groups.items():
            lines.append(
                f"\n{labels[run]}: largest {kind} on {report.measures[0]} against {labels[report.baseline]}"
            )
            for c in changes:
                text = f"  {c.text[:70]}" if c.text else ""
                values = f"{measure(c.baseline)} -> {measure(c.run)}  ({signed(c.difference)})"
                lines.append(f"  {c.qid}  {values}{text}")
            if not changes:
                lines.append("  (none)")
    return lines


def csv_text(report: CompareReport) -> str:
    """One row per run and measure, every number at full precision (``repr``), for further work."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for name in report.measures:
        writer.writerow([name, report.baseline, "yes", repr(report.means[report.baseline][name]), *[""] * 9])
        for run in report.runs:
            c = report.comparison(run, name)
            values = (c.mean, c.difference, c.ci_low, c.ci_high, c.p_value, c.p_corrected)
            writer.writerow([name, run, "no", *map(repr, values), c.significant, c.wins, c.ties, c.losses])
    return out.getvalue()


def markdown_text(report: CompareReport) -> str:
    """A GitHub-flavoured Markdown table, the footer and the largest changes."""
    header, rows = table_rows(report)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|").replace("*", "\\*") for cell in row) + " |" for row in rows
    ]
    return "\n".join([*lines, "", describe(report), *_changes_lines(report)])


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        text = text.replace(char, escaped)
    return text


def latex_text(report: CompareReport) -> str:
    """A booktabs tabular, a rule between measures, the footer as a comment."""
    header, rows = table_rows(report)

    def cell(text: str) -> str:
        marked = text.endswith(MARKER)
        return _latex_escape(text.removesuffix(MARKER)) + ("$^{*}$" if marked else "")

    lines = [
        r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}",
        r"\toprule",
        " & ".join(map(cell, header)) + r" \\",
        r"\midrule",
    ]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            lines.append(r"\midrule")
        previous = row[0]
        lines.append(" & ".join(map(cell, row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "% " + describe(report)]
    return "\n".join(lines)


def terminal_text(report: CompareReport) -> str:
    """Aligned columns, the footer and the largest changes."""
    header, rows = table_rows(report)
    return "\n".join([*_aligned(header, rows), describe(report), *_changes_lines(report)])


def render(report: CompareReport, fmt: str) -> str:
    """The report as a terminal table, Markdown, LaTeX (booktabs), JSON or CSV."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    renderers = {"csv": csv_text, "markdown": markdown_text, "latex": latex_text, "table": terminal_text}
    if fmt not in renderers:
        raise OptionError("format", fmt, f"is not known; use one of {', '.join(FORMATS)}")
    return renderers[fmt](report)


__all__ = ["MARKER", "describe", "render", "run_labels", "table_rows"]
