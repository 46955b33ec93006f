"""Which passages the reranker reads for each candidate document of a passage index.

The reranker scores passages, not whole documents (a document does not fit it). For each candidate
document it reads the document's top ``M`` passages by first-stage score (``rerank_passages``, default 1:
the passage MaxP chose); the reranker's passage scores are then aggregated with the same rule as the
first stage. A candidate none of whose passages is in the first-stage passage run (it can come from the
other side of a fusion whose passage list was not given) is read through its passage 0, the one passage
every document has.
"""

from __future__ import annotations

from lyre.basics.errors import OptionError
from lyre.formats.records import Run
from lyre.formats.runs import rank_order
from lyre.indexes.passages import passage_id
from lyre.retrieval.aggregation.grouping import by_document


def best_passages(candidates: Run, passages: Run, per_document: int) -> dict[str, dict[str, list[str]]]:
    """qid -> candidate docid (in the candidates' ranked order) -> its best ``per_document`` passage ids,
    best first; passages of equal score in lyre's tie order (passage id descending, as trec_eval)."""
    if per_document < 1:
        raise OptionError("rerank_passages", per_document, "must be at least 1")
    chosen: dict[str, dict[str, list[str]]] = {}
    for qid, documents in candidates.items():
        grouped = by_document(passages.get(qid, {}))
        picks: dict[str, list[str]] = {}
        for docid, _ in rank_order(documents):
            scores = {passage_id(docid, number): score for number, score in grouped.get(docid, [])}
            ranked = [identifier for identifier, _ in rank_order(scores)[:per_document]]
            picks[docid] = ranked or [passage_id(docid, 0)]
        chosen[qid] = picks
    return chosen
