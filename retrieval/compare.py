"""``lyre compare``: runs against a baseline, per measure, with paired tests and corrected p-values.

Pairing is by query id over the qrels' queries, with the evaluation's rule that a query a run does not
answer scores 0 (``retrieval/evaluation.py``): each run's per-query values are laid out in the qrels'
query order before anything is subtracted, so runs that list queries in another order, or miss some,
are still compared query by query. Run queries absent from the qrels are ignored, as in ``lyre eval``.

For each measure and run: the mean, the difference to the baseline with a confidence interval, the
paired test's p-value, the p-value corrected over the runs compared on that measure (the family), a
significance marker (corrected p < alpha) and the queries the run wins, ties and loses.

This module computes the report; :mod:`retrieval.compare_tables` lays it out as text and
:mod:`retrieval.plots` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.declared import check_options, option
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.provenance import sha256_file
from lyre.formats.irds import source_record
from lyre.formats.queries import read_queries
from lyre.retrieval.correction import CORRECTIONS, correction
from lyre.retrieval.evaluation import DEFAULT_MEASURES, evaluate
from lyre.retrieval.significance import MAX_SAMPLES, SIGNIFICANCE_TESTS, paired_test, resample_bytes
from lyre.retrieval.sizes import check_memory

FORMATS = ("table", "markdown", "latex", "json", "csv")
"""What ``lyre compare`` prints (:mod:`retrieval.compare_tables` renders each)."""


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
