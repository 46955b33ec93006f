"""Relevance judgments: BEIR TSV (``query-id corpus-id score`` with header) and TREC (``qid iter docid rel``).

The format is told per file from the first judgment's column count; every line must then match it.
A repeated (query, document) pair is an error: tools disagree on which label wins, so none should.
"""

from __future__ import annotations

from pathlib import Path

from lyre.basics.errors import InputError, LyreError
from lyre.formats.irds import irds_id, read_irds_qrels
from lyre.formats.records import Qrel

_HEADER_FIRST = {"query-id", "query_id", "qid", "query", "topic"}


def read_qrels(path: str | Path) -> list[Qrel]:
    """All judgments of ``path`` in file order (BEIR TSV with a header line, or TREC 4-column qrels);
    ``path`` may be an ``irds:`` id (``formats/irds.py``)."""
    if irds_id(path) is not None:
        return read_irds_qrels(path)
    path = Path(path)
    if not path.is_file():
        raise LyreError(f"{path}: no such qrels file; check the path")
    qrels: list[Qrel] = []
    seen: dict[tuple[str, str], int] = {}
    columns = 0
    with open(path, "rb") as handle:
        for number, data in enumerate(handle, start=1):
            try:
                fields = data.decode("utf-8").removeprefix("\ufeff").split()
            except UnicodeDecodeError:
                raise InputError(path, number, "invalid UTF-8", "re-encode the file as UTF-8") from None
            if not fields:
                continue
            if not columns:
                if fields[0].lower() in _HEADER_FIRST:
                    continue
                columns = len(fields)
                if columns not in (3, 4):
                    raise InputError(
                        path,
                        number,
                        f"{columns} columns; expected 'qid docid score' (BEIR) or 'qid iter docid rel'",
                        "fix the qrels file",
                    )
            if len(fields) != columns:
                raise InputError(
                    path, number, f"expected {columns} columns, found {len(fields)}", "fix the line"
                )
            qid, docid, label = (
                (fields[0], fields[1], fields[2]) if columns == 3 else (fields[0], fields[2], fields[3])
            )
            try:
                relevance = int(label)
            except ValueError:
                raise InputError(
                    path,
                    number,
                    f"relevance {label!r} is not an integer",
                    "use integer labels (0, 1, 2, ...)",
                ) from None
            if (qid, docid) in seen:
                raise InputError(
                    path,
                    number,
                    f"duplicate judgment for query {qid!r}, doc {docid!r} (first at line {seen[qid, docid]})",
                    "keep one label per pair",
                )
            seen[qid, docid] = number
            qrels.append(Qrel(qid, docid, relevance))
    if not qrels:
        raise InputError(path, None, "no judgments found", "pass a BEIR or TREC qrels file")
    return qrels


def qrels_dict(qrels: list[Qrel]) -> dict[str, dict[str, int]]:
    """qid -> docid -> relevance, the shape ir_measures and pytrec_eval take."""
    result: dict[str, dict[str, int]] = {}
    for qrel in qrels:
        result.setdefault(qrel.qid, {})[qrel.docid] = qrel.relevance
    return result
