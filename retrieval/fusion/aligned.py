"""One query's lists from several runs aligned on their union of documents, so fusion is array arithmetic.

The union is kept in docid order (Python's string order), which makes a document's position its docid
rank: one ``lexsort`` by (score, position) then orders any fused list exactly as trec_eval evaluates it
(score descending, ties by docid descending; :func:`formats.runs.rank_order`). A fusion method turns an
:class:`Aligned` into one fused score per document with numpy, adding each run's term in run order to
0.0, so the floats are those of the obvious loop over dictionaries. Aligned lists are what the search
cache keeps for a hybrid search (:mod:`retrieval.cache`): a search that changes only fusion settings
reads them and does no per-document work in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from lyre.formats.records import Run


@dataclass(frozen=True)
class Aligned:
    """The lists of one query, one row per run: ``scores[r, i]`` is run r's score of ``docids[i]`` where
    ``present[r, i]`` (0.0 elsewhere)."""

    docids: np.ndarray
    """The union of the runs' documents in ascending docid order (numpy unicode, or object)."""
    scores: np.ndarray
    present: np.ndarray

    @property
    def runs(self) -> int:
        return len(self.scores)


def docid_array(docids: Sequence[str]) -> np.ndarray:
    """``docids`` as a numpy array that sorts like Python strings: unicode, or object where a docid ends
    in NUL (numpy's unicode type drops trailing NULs)."""
    if "\x00" in "".join(docids):
        return np.array(docids, dtype=object)
    return np.array(docids, dtype=str)


def align(lists: Sequence[Mapping[str, float]]) -> Aligned:
    """Align one query's lists (one ``{docid: score}`` per run; ``{}`` for a run without the query)."""
    docids = docid_array(list(chain.from_iterable(lists)))
    union, where = np.unique(docids, return_inverse=True)
    scores = np.zeros((len(lists), len(union)))
    present = np.zeros((len(lists), len(union)), dtype=bool)
    start = 0
    for run, doc_scores in enumerate(lists):
        positions = where[start : start + len(doc_scores)]
        scores[run, positions] = np.fromiter(doc_scores.values(), dtype=np.float64, count=len(doc_scores))
        present[run, positions] = True
        start += len(doc_scores)
    return Aligned(union, scores, present)


def evaluated_order(scores: np.ndarray) -> np.ndarray:
    """Positions of ``scores`` (one per document, documents in ascending docid order) in evaluated
    order: score descending, ties by docid (= position) descending. A stable sort of the reversed scores,
    descending, keeps tied positions in reversed order."""
    return len(scores) - 1 - np.argsort(-scores[::-1], kind="stable")


def ranked(
    aligned: Aligned, fused: np.ndarray, k: int | None = None, exclude: str | None = None
) -> dict[str, float]:
    """The top ``k`` (all by default) documents of ``fused`` (one score per aligned document) in
    evaluated order: score descending, then docid descending (a larger position is a larger docid);
    ``exclude``: a docid left out (a query's own id), after fusion."""
    order = evaluated_order(fused)
    if exclude is not None:
        order = order[aligned.docids[order] != exclude]
    order = order[:k]
    return dict(zip(aligned.docids[order].tolist(), fused[order].tolist(), strict=True))


def query_ids(runs: Sequence[Run]) -> list[str]:
    """Every query of any run, first seen first (a query absent from a run takes nothing from it)."""
    return list(dict.fromkeys(qid for run in runs for qid in run))


def fuse_runs(runs: Sequence[Run], scores: Callable[[Aligned], np.ndarray]) -> Run:
    """Every query of ``runs`` aligned and fused by ``scores``, each list in evaluated order."""
    fused: Run = {}
    for qid in query_ids(runs):
        aligned = align([run.get(qid, {}) for run in runs])
        fused[qid] = ranked(aligned, scores(aligned))
    return fused
