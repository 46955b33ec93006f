"""TREC run files: ``qid Q0 docid rank score tag``, written in the order trec_eval evaluates.

trec_eval ignores the rank column: it re-sorts each query's lines by score (descending) and breaks ties
by docid (descending). Writing lines in exactly that order with 1-based ranks makes the printed ranks
the evaluated ranks; printing scores with ``repr`` (shortest round-trip form of the double) means two
distinct float32 or float64 scores never print equal, so no ties are created by rounding.

A run and its sidecar ``RUN.meta.json`` are published as one unit through the guarded writer
(:mod:`basics.outputs`): both written to temporary names, renamed together under the run's output lock,
and the sidecar records the run's SHA-256, so a sidecar that does not describe the run beside it is seen.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.atomic import json_text
from lyre.basics.errors import InputError, LyreError, OptionError
from lyre.basics.outputs import Output, output
from lyre.basics.provenance import provenance
from lyre.formats.records import Run

_WHITESPACE = re.compile(r"\s")


def rank_order(doc_scores: dict[str, float]) -> list[tuple[str, float]]:
    """(docid, score) pairs by score descending, ties by docid descending: trec_eval's evaluation order."""
    return sorted(doc_scores.items(), key=_SCORE_THEN_DOCID, reverse=True)


_SCORE_THEN_DOCID = operator.itemgetter(1, 0)


def meta_path(path: str | Path) -> Path:
    """The sidecar of a run file: ``RUN.meta.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def format_score(score: float) -> str:
    """The shortest text that reads back as the same double (float32 values are exact in a double)."""
    return repr(float(score))


def write_run(path: str | Path | Output, run: Run, tag: str, meta: dict[str, Any]) -> None:
    """Write ``run`` (queries in the run's order) and its sidecar ``RUN.meta.json`` as one unit: both
    renamed into place together under the run's output lock, the sidecar recording the run's SHA-256."""
    if not tag or _WHITESPACE.search(tag):
        raise OptionError("tag", repr(tag), "a run tag must be non-empty without whitespace; pick another")
    target = output(path, what="run")
    lines = 0
    ranks: list[str] = []
    digest = hashlib.sha256()
    with target.publishing(target.path, meta_path(target.path)) as (run_tmp, meta_tmp):
        with open(run_tmp, "wb") as out:
            for qid, doc_scores in run.items():
                if not qid or _WHITESPACE.search(qid):
                    raise LyreError(
                        f"query id {qid!r} is empty or contains whitespace; it cannot go in a TREC run"
                    )
                docids, scores = ranked_columns(doc_scores)
                _check_query_lines(qid, docids, scores)
                if len(ranks) < len(docids):
                    ranks = [str(rank) for rank in range(1, len(docids) + 1)]
                data = _query_lines(qid, tag, docids, scores, ranks).encode("utf-8")
                digest.update(data)
                out.write(data)
                lines += len(docids)
        record = {
            "run": target.path.name,
            "sha256": digest.hexdigest(),
            "tag": tag,
            "queries": len(run),
            "lines": lines,
            **meta,
        }
        record.setdefault("provenance", provenance())
        meta_tmp.write_text(json_text(record), encoding="utf-8")


def ranked_columns(doc_scores: dict[str, float]) -> tuple[list[str], list[float]]:
    """The docids and scores of one query in :func:`rank_order`'s order. A list already in that order
    (what a search hands over) is checked with numpy and taken as it is; any other is sorted as
    (score, docid) pairs made by ``zip`` (faster than ``rank_order``'s key function)."""
    docids, scores = list(doc_scores), list(doc_scores.values())
    if len(scores) > 1:
        values = np.asarray(scores, dtype=np.float64)
        ties = np.flatnonzero(values[:-1] == values[1:]).tolist()
        ordered = bool((values[:-1] >= values[1:]).all()) and all(docids[i] > docids[i + 1] for i in ties)
        if not ordered:  # (NaN compares false, so a list with NaN is sorted, then refused)
            pairs = sorted(zip(scores, docids, strict=True), reverse=True)
            docids, scores = [docid for _, docid in pairs], [score for score, _ in pairs]
    return docids, scores


def _query_lines(qid: str, tag: str, docids: Sequence[str], scores: Sequence[float], ranks: list[str]) -> str:
    """One query's lines, made by C-level ``join``/``map`` (a search writes ~300k lines; per-line
    f-strings cost more than the exact ``repr`` of the scores, which is the cost that remains)."""
    if not docids:
        return ""
    try:
        texts = list(map(float.__repr__, scores))  # Python floats (and numpy float64, a subclass)
    except TypeError:
        texts = [repr(float(score)) for score in scores]  # ints, numpy float32
    prefix = f"{qid} Q0 "
    lines = zip(docids, ranks, texts, strict=False)  # ranks: shared, as long as the longest query
    return prefix + f" {tag}\n{prefix}".join(map(" ".join, lines)) + f" {tag}\n"


def _check_query_lines(qid: str, docids: Sequence[str], scores: Sequence[float]) -> None:
    """Refuse ids a TREC run cannot hold and NaN scores, per query in one pass over the joined ids."""
    if not all(docids) or _WHITESPACE.search("\x00".join(docids)):
        bad = next(docid for docid in docids if not docid or _WHITESPACE.search(docid))
        raise LyreError(f"document id {bad!r} is empty or contains whitespace; fix the corpus ids")
    if math.isnan(sum(scores)):  # NaN anywhere makes the sum NaN (so can inf - inf: then none is found)
        nan = next((docid for docid, score in zip(docids, scores, strict=True) if math.isnan(score)), None)
        if nan is not None:
            raise LyreError(f"score of query {qid!r}, document {nan!r} is NaN; check the model output")


def read_run(path: str | Path) -> Run:
    """Read a TREC run, checking 6 columns, integer rank, finite numeric score, no repeated (qid, docid)."""
    path = Path(path)
    if not path.is_file():
        raise LyreError(f"{path}: no such run file; check the path")
    run: Run = {}
    first_line: dict[tuple[str, str], int] = {}
    with open(path, "rb") as handle:
        for number, data in enumerate(handle, start=1):
            try:
                fields = data.decode("utf-8").split()
            except UnicodeDecodeError:
                raise InputError(path, number, "invalid UTF-8", "re-encode the file as UTF-8") from None
            if not fields:
                continue
            if len(fields) != 6:
                raise InputError(
                    path,
                    number,
                    f"expected 6 columns 'qid Q0 docid rank score tag', found {len(fields)}",
                    "fix the line",
                )
            qid, _, docid, rank, score_text, _ = fields
            try:
                int(rank)
                score = float(score_text)
            except ValueError:
                raise InputError(
                    path, number, "rank must be an integer and score a number", "fix the line"
                ) from None
            if not math.isfinite(score):
                raise InputError(path, number, f"score {score_text} is not finite", "write finite scores")
            if (qid, docid) in first_line:
                raise InputError(
                    path,
                    number,
                    f"duplicate doc {docid!r} for query {qid!r} (first at line {first_line[qid, docid]})",
                    "keep one line per (query, document)",
                )
            first_line[qid, docid] = number
            run.setdefault(qid, {})[docid] = score
    return run
