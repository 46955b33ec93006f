"""The runs the comparison page shows: read, judged and measured once, when the server starts.

The per-query values are :func:`retrieval.evaluation.evaluate` with ``per_query``, the very numbers
``lyre eval --per-query`` prints for the same qrels, runs and measures. The queries listed are those of
the qrels (the queries the averages are over); a run that did not answer one has an empty ranking there
and scores 0, as in ``lyre eval``. Rankings are in trec_eval's order (:func:`formats.runs.rank_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lyre.basics.errors import LyreError
from lyre.formats.qrels import qrels_dict, read_qrels
from lyre.formats.queries import read_queries
from lyre.formats.records import Document, Run
from lyre.formats.runs import rank_order, read_run
from lyre.retrieval.evaluation import EvalTable, evaluate
from lyre.serve.options import RunViewOptions


@dataclass(frozen=True)
class RunView:
    """Runs by name (the path as given at start, as ``lyre eval`` names them), qrels, query texts, and
    the per-query table."""

    runs: dict[str, Run]
    qrels: dict[str, dict[str, int]]
    texts: dict[str, str]
    table: EvalTable
    depth: int

    @classmethod
    def load(cls, options: RunViewOptions) -> RunView | None:
        """The runs, qrels and queries of ``options`` read and evaluated (None when no runs are given)."""
        if not options.runs or options.qrels is None:
            return None
        names = list(dict.fromkeys(str(path) for path in options.runs))
        if len(names) < len(options.runs):
            raise LyreError(f"run {_repeated(options.runs)} is given twice; give each run once")
        measures = [name.strip() for name in options.measures.split(",") if name.strip()]
        table = evaluate(options.qrels, options.runs, measures=measures, per_query=True)
        runs = {str(path): read_run(path) for path in options.runs}
        qrels = qrels_dict(read_qrels(options.qrels))
        queries = read_queries(options.queries, only_ids=set(qrels)) if options.queries is not None else []
        texts = {query.qid: query.text for query in queries}
        return cls(runs, qrels, texts, table, options.compare_depth)

    def summary(self) -> dict[str, Any]:
        """The runs, the measures, and every judged query with each run's values (the page sorts them)."""
        return {
            "runs": list(self.runs),
            "qrels": self.table.qrels,
            "measures": self.table.measures,
            "means": self.table.means,
            "queries": [
                {
                    "qid": qid,
                    "text": self.texts.get(qid),
                    "values": {run: self.values(run, qid) for run in self.runs},
                }
                for qid in self.qrels
            ],
        }

    def values(self, run: str, qid: str) -> dict[str, float]:
        """Each measure of ``run`` on ``qid``, as ``lyre eval --per-query`` prints it (0 where none)."""
        values = (self.table.per_query or {})[run][qid]
        return {measure: values.get(measure, 0.0) for measure in self.table.measures}

    def ranking(self, run: str, qid: str) -> list[tuple[str, float]]:
        """One query's ranking of ``run`` in evaluated order."""
        return rank_order(self.runs[run].get(qid, {}))

    def comparison(
        self,
        qid: str,
        first: str,
        second: str,
        documents: Callable[[list[str]], Mapping[str, Document | None]],
    ) -> dict[str, Any]:
        """Two runs' rankings of ``qid`` side by side: each document's grade (None: unjudged), its rank in
        the other run (None: not there), and the title ``documents`` finds for it."""
        rankings = {name: self.ranking(name, qid) for name in (first, second)}
        ranks = {
            name: {docid: rank for rank, (docid, _) in enumerate(ranking, 1)}
            for name, ranking in rankings.items()
        }
        shown = {name: ranking[: self.depth] for name, ranking in rankings.items()}
        found = documents(list(dict.fromkeys(docid for ranking in shown.values() for docid, _ in ranking)))
        titles = {docid: document.title for docid, document in found.items() if document is not None}
        grades = self.qrels.get(qid, {})

        def side(name: str, other: str) -> dict[str, Any]:
            return {
                "run": name,
                "values": self.values(name, qid),
                "documents": len(rankings[name]),
                "ranking": [
                    {
                        "rank": rank,
                        "docid": docid,
                        "score": score,
                        "title": titles.get(docid),
                        "in_index": docid in titles,
                        "grade": grades.get(docid),
                        "other_rank": ranks[other].get(docid),
                    }
                    for rank, (docid, score) in enumerate(shown[name], 1)
                ],
            }

        return {
            "qid": qid,
            "text": self.texts.get(qid),
            "judged": len(grades),
            "relevant": sum(grade > 0 for grade in grades.values()),
            "first": side(first, second),
            "second": side(second, first),
        }


def _repeated(paths: list[Any]) -> str:
    seen: set[str] = set()
    for path in map(str, paths):
        if path in seen:
            return path
        seen.add(path)
    return ""
