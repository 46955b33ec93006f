"""``lyre compare``: runs against a baseline, per measure, with paired tests and corrected p-values.

Pairing is by query id over the qrels' queries, with the evaluation's rule that a query a run does not
answer scores 0 (``retrieval/evaluation.py``): each run's per-query values are laid out in the qrels'
query order before anything is subtracted, so runs that list queries in another order, or miss some,
are still compared query by query. Run queries absent from the qrels are ignored, as in ``lyre eval``.

For each measure and run: the mean, the difference to the baseline with a confidence interval, the
paired test's p-value, the p-value corrected over the runs compared on that measure (the family), a
significance marker (corrected p < alpha) and the queries the run wins, ties and loses.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.options import check_options, option
from lyre.retrieval.correction import CORRECTIONS, correction
from lyre.retrieval.evaluation import DEFAULT_MEASURES, evaluate
from lyre.retrieval.significance import MAX_SAMPLES, SIGNIFICANCE_TESTS, paired_test, resample_bytes

FORMATS = ("table", "markdown", "latex", "json", "csv")
MARKER = "*"


@dataclass(frozen=True)
class CompareOptions:
    """The settings of ``lyre compare`` (flags are made from these fields)."""

    measures: str = option(",".join(DEFAULT_MEASURES), "Comma-separated ir-measures names.")
    test: str = option(
        "randomization",
        "Paired test: " + "; ".join(f"{t.name}: {t.summary}" for t in SIGNIFICANCE_TESTS.values()) + ".",
        choices=tuple(SIGNIFICANCE_TESTS),
    )
    samples: int = option(
        10_000,
        "Sign flips or bootstrap resamples (randomization, bootstrap, CIs).",
        minimum=1000,
        maximum=MAX_SAMPLES,
    )
    seed: int = option(0, "Seed of the randomization and bootstrap (same seed, same p-values).", minimum=0)
    correction: str = option(
        "holm",
        "Multiple-testing correction over the runs compared on each measure: "
        + "; ".join(f"{c.name}: {c.summary}" for c in CORRECTIONS.values())
        + ".",
        choices=tuple(CORRECTIONS),
    )
    alpha: float = option(
        0.05, "Significance level of the markers (corrected p < alpha).", above=0, maximum=0.5
    )
    confidence: float = option(
        0.95, "Level of the confidence interval of each difference.", above=0, maximum=0.999
    )
    per_query: int = option(
        0, "List the N largest wins and losses of each run on the first measure.", minimum=0
    )
    format: str = option("table", "Output: " + ", ".join(FORMATS) + ".", choices=FORMATS)

    def measure_list(self) -> list[str]:
        names = [name.strip() for name in self.measures.split(",") if name.strip()]
        if not names:
            raise OptionError("measures", self.measures, "names no measure; give e.g. nDCG@10,RR@10")
        return names


@dataclass(frozen=True)
class Comparison:
    """One run against the baseline on one measure."""

    run: str
    measure: str
    mean: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_corrected: float
    significant: bool
    wins: int
    ties: int
    losses: int


@dataclass(frozen=True)
class QueryChange:
    """One query's value under the baseline and the run (for ``--per-query``)."""

    qid: str
    baseline: float
    run: float
    difference: float
    text: str | None = None


@dataclass(frozen=True)
class CompareReport:
    qrels: str
    baseline: str
    runs: list[str]
    measures: list[str]
    num_queries: int
    test: str
    correction: str
    samples: int
    seed: int
    alpha: float
    confidence: float
    means: dict[str, dict[str, float]]
    comparisons: list[Comparison]
    largest_changes: dict[str, dict[str, list[QueryChange]]] = field(default_factory=dict)
    """run -> "wins"/"losses" -> changes on the first measure, largest first."""
    sources: dict[str, Any] = field(default_factory=dict)
    qids: list[str] = field(default_factory=list, repr=False)
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    """run -> measure -> per-query values in ``qids`` order (the paired data; not serialised)."""

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["qids"], record["values"]
        return record

    def comparison(self, run: str, measure: str) -> Comparison:
        return next(c for c in self.comparisons if c.run == run and c.measure == measure)

    def differences(self, run: str, measure: str) -> np.ndarray:
        return self.values[run][measure] - self.values[self.baseline][measure]


def paired_values(per_query: dict[str, dict[str, float]], qids: Sequence[str], measure: str) -> np.ndarray:
    """One run's values of ``measure`` in ``qids`` order; a query the run has no value for scores 0."""
    return np.array([per_query.get(qid, {}).get(measure, 0.0) for qid in qids], dtype=np.float64)


def _tally(differences: np.ndarray) -> tuple[int, int, int]:
    wins = int(np.count_nonzero(differences > 0.0))
    losses = int(np.count_nonzero(differences < 0.0))
    return wins, differences.size - wins - losses, losses


def check_compare(baseline: Path, runs: Sequence[Path], options: CompareOptions) -> None:
    """Every option and argument problem, before any run is read."""
    from lyre.retrieval.sizes import check_memory

    check_options(options)
    options.measure_list()
    if SIGNIFICANCE_TESTS[options.test].resamples:
        check_memory("samples", options.samples, resample_bytes(options.samples), "the resampled means")
    if not runs:
        raise LyreError("no run to compare; pass BASELINE and at least one RUN")
    paths = [str(Path(p).resolve()) for p in (baseline, *runs)]
    if len(set(paths)) != len(paths):
        raise LyreError("a run file is given twice (or is the baseline); pass each run once")


def compare(
    qrels: str | Path,
    baseline: Path,
    runs: Sequence[Path],
    options: CompareOptions,
    *,
    queries: str | Path | None = None,
) -> CompareReport:
    """Compare each of ``runs`` with ``baseline`` on every measure (see the module docstring)."""
    from lyre.basics.provenance import sha256_file
    from lyre.formats.irds import source_record

    check_compare(baseline, runs, options)
    test = paired_test(options.test)
    adjust = correction(options.correction).adjust
    all_runs = [str(baseline), *(str(r) for r in runs)]
    table = evaluate(qrels, all_runs, measures=options.measure_list(), per_query=True)
    assert table.per_query is not None
    qids = list(next(iter(table.per_query.values())))
    values = {
        run: {m: paired_values(table.per_query[run], qids, m) for m in table.measures} for run in all_runs
    }
    comparisons: list[Comparison] = []
    for measure in table.measures:
        raw, rows = [], []
        for run in all_runs[1:]:
            differences = values[run][measure] - values[all_runs[0]][measure]
            settings = {"samples": options.samples, "seed": options.seed}
            raw.append(test.p_value(differences, **settings))
            rows.append(
                (run, differences, test.interval(differences, confidence=options.confidence, **settings))
            )
        for (run, differences, (low, high)), p, corrected in zip(rows, raw, adjust(raw), strict=True):
            wins, ties, losses = _tally(differences)
            comparisons.append(
                Comparison(
                    run=run,
                    measure=measure,
                    mean=float(values[run][measure].mean()),
                    difference=float(differences.mean()),
                    ci_low=low,
                    ci_high=high,
                    p_value=p,
                    p_corrected=corrected,
                    significant=corrected < options.alpha,
                    wins=wins,
                    ties=ties,
                    losses=losses,
                )
            )
    texts = _query_texts(queries) if queries is not None else {}
    report = CompareReport(
        qrels=str(qrels),
        baseline=all_runs[0],
        runs=all_runs[1:],
        measures=table.measures,
        num_queries=len(qids),
        test=options.test,
        correction=options.correction,
        samples=options.samples,
        seed=options.seed,
        alpha=options.alpha,
        confidence=options.confidence,
        means=table.means,
        comparisons=comparisons,
        sources={
            "qrels": source_record(qrels, "qrels"),
            "runs": [{"path": run, "sha256": sha256_file(run)} for run in all_runs],
            **({"queries": source_record(queries, "queries")} if queries is not None else {}),
        },
        qids=qids,
        values=values,
    )
    if options.per_query:
        for run in report.runs:
            report.largest_changes[run] = largest_changes(report, run, options.per_query, texts)
    return report


def _query_texts(queries: str | Path) -> dict[str, str]:
    from lyre.formats.queries import read_queries

    return {query.qid: query.text for query in read_queries(queries)}


def largest_changes(
    report: CompareReport, run: str, count: int, texts: dict[str, str]
) -> dict[str, list[QueryChange]]:
    """The ``count`` largest wins and losses of ``run`` over the baseline on the first measure."""
    measure = report.measures[0]
    base, own = report.values[report.baseline][measure], report.values[run][measure]
    differences = own - base
    order = np.argsort(-differences, kind="stable")

    def change(i: int) -> QueryChange:
        qid = report.qids[i]
        return QueryChange(qid, float(base[i]), float(own[i]), float(differences[i]), texts.get(qid))

    wins = [change(i) for i in order[:count] if differences[i] > 0]
    losses = [change(i) for i in order[::-1][:count] if differences[i] < 0]
    return {"wins": wins, "losses": losses}


def run_labels(paths: Sequence[str]) -> dict[str, str]:
    """Short names for the runs: file names, or full paths when two files share a name."""
    names = [Path(p).name for p in paths]
    unique = len(set(names)) == len(names)
    return {p: (name if unique else p) for p, name in zip(paths, names, strict=True)}


def table_rows(report: CompareReport, digits: int) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by every text format and the plot: per measure, the baseline, then each run."""
    level = f"{report.confidence:.0%}"
    header = ["measure", "run", "mean", "diff", f"{level} CI", "p", f"p ({report.correction})", "W/T/L"]
    labels = run_labels([report.baseline, *report.runs])
    rows = []
    for measure in report.measures:
        rows.append(
            [
                measure,
                labels[report.baseline] + " (baseline)",
                f"{report.means[report.baseline][measure]:.{digits}f}",
                *[""] * 5,
            ]
        )
        for run in report.runs:
            c = report.comparison(run, measure)
            rows.append(
                [
                    measure,
                    labels[run],
                    f"{c.mean:.{digits}f}",
                    f"{c.difference:+.{digits}f}{MARKER if c.significant else ''}",
                    f"[{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}]",
                    _p(c.p_value),
                    _p(c.p_corrected),
                    f"{c.wins}/{c.ties}/{c.losses}",
                ]
            )
    return header, rows


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def describe(report: CompareReport) -> str:
    """The footer: what was paired, tested and corrected, and what the marker means."""
    test = SIGNIFICANCE_TESTS[report.test]
    draws = f", {report.samples} samples, seed {report.seed}" if test.resamples else ""
    family = len(report.runs)
    return (
        f"{report.num_queries} queries of {report.qrels} (unanswered queries score 0); {test.summary}; "
        f"{report.confidence:.0%} CI: {test.interval_summary}{draws}; p corrected with "
        f"{CORRECTIONS[report.correction].summary} over {family} comparison{'s' * (family != 1)} per "
        f"measure; {MARKER} = corrected p < {report.alpha:g}; W/T/L = queries won/tied/lost against "
        f"the baseline"
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


def _changes_lines(report: CompareReport, digits: int) -> list[str]:
    labels = run_labels([report.baseline, *report.runs])
    lines = []
    for run, groups in report.largest_changes.items():
        for kind, changes in groups.items():
            lines.append(
                f"\n{labels[run]}: largest {kind} on {report.measures[0]} against {labels[report.baseline]}"
            )
            for c in changes:
                text = f"  {c.text[:70]}" if c.text else ""
                values = f"{c.baseline:.{digits}f} -> {c.run:.{digits}f}  ({c.difference:+.{digits}f})"
                lines.append(f"  {c.qid}  {values}{text}")
            if not changes:
                lines.append("  (none)")
    return lines


def render(report: CompareReport, fmt: str, digits: int = 4) -> str:
    """The report as a terminal table, Markdown, LaTeX (booktabs), JSON or CSV."""
    header, rows = table_rows(report, digits)
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
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
            ]
        )
        for measure in report.measures:
            writer.writerow(
                [measure, report.baseline, "yes", repr(report.means[report.baseline][measure]), *[""] * 9]
            )
            for run in report.runs:
                c = report.comparison(run, measure)
                writer.writerow(
                    [
                        measure,
                        run,
                        "no",
                        repr(c.mean),
                        repr(c.difference),
                        repr(c.ci_low),
                        repr(c.ci_high),
                        repr(c.p_value),
                        repr(c.p_corrected),
                        c.significant,
                        c.wins,
                        c.ties,
                        c.losses,
                    ]
                )
        return out.getvalue()
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
        ]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|").replace("*", "\\*") for cell in row) + " |"
            for row in rows
        ]
        return "\n".join([*lines, "", describe(report), *_changes_lines(report, digits)])
    if fmt == "latex":
        return _latex(header, rows, report)
    if fmt != "table":
        raise OptionError("format", fmt, f"is not known; use one of {', '.join(FORMATS)}")
    return "\n".join([*_aligned(header, rows), describe(report), *_changes_lines(report, digits)])


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


def _latex(header: list[str], rows: list[list[str]], report: CompareReport) -> str:
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


def check_plot_path(plot: Path | None) -> None:
    """A --plot file must end in .png, .svg or .html, and matplotlib must be installed (checked first)."""
    if plot is None:
        return
    if plot.suffix.lower() not in (".png", ".svg", ".html"):
        raise OptionError("plot", plot, "must end in .png, .svg or .html")
    from lyre.retrieval.plots import require_matplotlib

    require_matplotlib()
