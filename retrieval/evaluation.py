"""Evaluation of TREC runs against qrels through ir-measures (trec_eval-compatible, no external binary).

Conventions, chosen to match ``trec_eval -c`` and stated once here:

- Averages are taken over every query id in the qrels. A qrels query that a run does not answer counts
  as 0 for every measure (ir-measures' default: its evaluator fills such queries with the measure's
  default, 0). Run queries absent from the qrels are ignored (unjudged, as trec_eval does).
- A run that is empty, or whose queries are all unjudged, scores 0 everywhere: such a table is almost
  always a mistake (another query set, ids with a prefix), so it comes with a one-line warning on stderr
  (kept in ``EvalTable.warnings`` for ``--json``), and the table is still printed. A run that answers
  only some of the judged queries gets one warning too, saying how many score 0 for having no results
  in it: the mean is still over every judged query (trec_eval's ``-c``), but never silently.
- A run of passage ids (``DOCID#N``, from a passage index searched with ``aggregate none``) matches no
  judged document of document-level qrels and scores 0: when its ids are passages of judged documents,
  one warning says so and how to get a document run.
- Each query's documents are ranked in trec_eval's order (score descending, ties by docid descending),
  and that order is handed to ir-measures as strictly decreasing scores, so every ir-measures provider
  (pytrec_eval, msmarco, judged) sees the same ranking whatever its own tie-breaking.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count, measure
from lyre.formats.qrels import qrels_dict, read_qrels
from lyre.formats.records import Run
from lyre.formats.runs import rank_order, read_run
from lyre.indexes.passages import PASSAGE_MARK

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP", "Judged@10")


@dataclass(frozen=True)
class EvalTable:
    """Mean of each measure per run (``means[run][measure]``), and optionally per query
    (``per_query[run][qid][measure]``, qids in qrels order) over ``num_queries`` qrels queries."""

    qrels: str
    runs: list[str]
    measures: list[str]
    num_queries: int
    means: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_measures(measures: Sequence[str] | None) -> list[Any]:
    import ir_measures

    parsed = []
    for text in measures or DEFAULT_MEASURES:
        try:
            parsed.append(ir_measures.parse_measure(text))
        except (ValueError, NameError, SyntaxError, TypeError):
            raise LyreError(
                f"unknown measure {text!r}; use ir-measures names such as nDCG@10, RR@10, R@100, AP, P@5"
            ) from None
    return parsed


def _trec_eval_ranking(run: Run, judged_qids: dict[str, Any]) -> Run:
    """The run on judged queries only, scores replaced by strictly decreasing ranks in trec_eval order."""
    ranked: Run = {}
    for qid, doc_scores in run.items():
        if qid in judged_qids:
            order = rank_order(doc_scores)
            ranked[qid] = {docid: float(len(order) - i) for i, (docid, _) in enumerate(order)}
    return ranked


def unjudged_warning(
    run_path: str | Path, run: Run, qrels_path: str | Path, qrels: dict[str, Any]
) -> str | None:
    """Why ``run`` scores 0 on every measure, when it is empty or judged on none of its queries."""
    if not run:
        return f"{run_path}: the run is empty; every measure is 0"
    if not any(qid in qrels for qid in run):
        example = next(iter(run))
        return (
            f"{run_path}: none of its {count(len(run), 'queries')} is judged in {qrels_path} "
            f"(e.g. query {example!r}); "
            "every measure is 0; check that the run and the qrels are for the same queries"
        )
    return None


def unanswered_warning(run_path: str | Path, run: Run, qrels: dict[str, Any]) -> str | None:
    """How many judged queries ``run`` has no results for (they score 0), when some do and some don't."""
    missing = [qid for qid in qrels if not run.get(qid)]
    if not missing or len(missing) == len(qrels):
        return None
    return (
        f"{run_path}: {count(len(missing))} of the {count(len(qrels), 'judged queries')} have no results "
        f"in it (e.g. query {missing[0]!r}); they score 0 in every measure"
    )


def passage_id_warning(
    run_path: str | Path, run: Run, qrels_path: str | Path, qrels: dict[str, dict[str, int]]
) -> str | None:
    """Why ``run`` scores 0 when its ids are passage ids (``DOCID#N``) of documents judged in ``qrels``
    and none of its ids is judged itself: a passage run evaluated against document qrels."""
    example = None
    for qid, doc_scores in run.items():
        judged = qrels.get(qid)
        if not judged:
            continue
        if any(docid in judged for docid in doc_scores):
            return None
        if example is None:
            example = next((docid for docid in doc_scores if _parent(docid) in judged), None)
    if example is None:
        return None
    return (
        f"{run_path}: its ids are passage ids of judged documents (e.g. {example!r}) and none is judged "
        f"in {qrels_path}, so every measure is 0; make a document run (`lyre search --aggregate maxp`) "
        "or evaluate it against passage qrels"
    )


def _parent(identifier: str) -> str | None:
    """The document of passage id ``DOCID#N`` (None for an id of another shape)."""
    docid, mark, number = identifier.rpartition(PASSAGE_MARK)
    return docid if mark and docid and number.isdigit() else None


def evaluate_run(
    qrels: dict[str, dict[str, int]], run: Run, measures: list[Any]
) -> dict[str, dict[str, float]]:
    """Per-query values ``qid -> measure -> value`` for every qrels query (0 where the run has none)."""
    import ir_measures

    values: dict[str, dict[str, float]] = {qid: {} for qid in qrels}
    for metric in ir_measures.evaluator(measures, qrels).iter_calc(_trec_eval_ranking(run, qrels)):
        if metric.query_id in values:
            values[metric.query_id][str(metric.measure)] = float(metric.value)
    return values


def evaluate(
    qrels_path: str | Path,
    run_paths: Sequence[str | Path],
    measures: Sequence[str] | None = None,
    per_query: bool = False,
) -> EvalTable:
    """Evaluate each run file against the qrels file; see the module docstring for the averaging rules."""
    if not run_paths:
        raise LyreError("no run files given; pass at least one RUN")
    parsed = _parse_measures(measures)
    names = [str(m) for m in parsed]
    qrels = qrels_dict(read_qrels(qrels_path))
    means: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, dict[str, float]]] = {}
    warnings = []
    for path in run_paths:
        run = read_run(path)
        warning = (
            unjudged_warning(path, run, qrels_path, qrels)
            or passage_id_warning(path, run, qrels_path, qrels)
            or unanswered_warning(path, run, qrels)
        )
        if warning is not None:
            print(f"warning: {warning}", file=sys.stderr)
            warnings.append(warning)
        values = evaluate_run(qrels, run, parsed)
        key = str(path)
        means[key] = {name: sum(v.get(name, 0.0) for v in values.values()) / len(values) for name in names}
        details[key] = values
    return EvalTable(
        qrels=str(qrels_path),
        runs=[str(p) for p in run_paths],
        measures=names,
        num_queries=len(qrels),
        means=means,
        per_query=details if per_query else None,
        warnings=warnings,
    )


def format_table(table: EvalTable) -> str:
    """A plain-text table: one row per run (and per query of each run when per-query values are present)."""
    header = ["run", *(["query"] if table.per_query else []), *table.measures]
    rows = []
    for run in table.runs:
        if table.per_query:
            for qid, values in table.per_query[run].items():
                rows.append([run, qid, *(measure(values.get(m, 0.0)) for m in table.measures)])
            rows.append([run, "all", *(measure(table.means[run][m]) for m in table.measures)])
        else:
            rows.append([run, *(measure(table.means[run][m]) for m in table.measures)])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    text_columns = 2 if table.per_query else 1
    lines = []
    for row in [header, *rows]:
        cells = [
            str(cell).ljust(width) if i < text_columns else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append(f"({count(table.num_queries, 'queries')} in {table.qrels}; unanswered queries count as 0)")
    return "\n".join(lines)
