"""What a search checks about its queries before any list is made, once per plan.

- **Memory.** Each side keeps ``depth`` documents of every query until the run is written: the estimate
  (:func:`retrieval.sizes.list_bytes`) is checked against the memory available, so a search too big for
  the machine is one line naming ``depth`` instead of a swap storm or an out-of-memory traceback.
- **Queries BM25 cannot answer.** A query whose analysis gives no term of the index's vocabulary (a
  Chinese query on the English analyzer, a query of stopwords) gets an empty BM25 list: a silent 0 in
  every measure. One warning per search counts them, shows one, names the analyzer and, where one
  would help, the analyzer to build the index with (:meth:`indexes.analyzer.Analyzer.suggest_for`). It is
  printed even under ``--quiet``: it changes what the numbers mean.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lyre.basics.numbers import count
from lyre.formats.records import Query
from lyre.indexes.analyzer import Analyzer
from lyre.indexes.bm25_format import read_vocabulary
from lyre.indexes.manifest import BM25, complete_records
from lyre.retrieval.sizes import check_memory, list_bytes

SHOWN_TEXT = 60
"""Characters of the example query a warning quotes."""


def check_queries(plan: Any, queries: Sequence[Query]) -> None:
    """The memory ``queries`` need at the plan's depth, then the BM25 warning (see the module note)."""
    check_search_memory(plan, queries)
    warn_unknown_terms(plan, queries)


def warn_unknown_terms(plan: Any, queries: Sequence[Query]) -> None:
    """Print :func:`unknown_term_warning` on stderr, if there is one."""
    warning = unknown_term_warning(plan, queries)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)


def check_search_memory(plan: Any, queries: Sequence[Query]) -> None:
    """Refuse a depth whose lists would not fit in memory for these queries (before any is made)."""
    depth = plan.options.depth
    side_depth = plan.passages.side_depth(depth) if plan.passages is not None else depth
    sides = (plan.bm25 is not None) + (plan.dense is not None)
    needed = list_bytes(len(queries), side_depth, sides + 1)  # each side, and the fused or cut run
    what = f"{count(len(queries), 'queries')} x {count(side_depth, 'results')} x {count(sides, 'sides')}"
    check_memory("depth", depth, needed, what, ", or search the queries in parts")


def unknown_term_warning(plan: Any, queries: Sequence[Query]) -> str | None:
    """The warning for the queries with no term the plan's BM25 index knows, or None (none, or no BM25)."""
    if plan.bm25 is None or not queries:
        return None
    record = complete_records(plan.manifest)[BM25]
    analyzer = Analyzer.from_dict(record["params"]["analyzer"])
    known = read_vocabulary(plan.index_dir / BM25)  # alone: a search answered from the cache loads no BM25
    unknown = [q for q in queries if not any(term in known for term in analyzer.analyze(q.text))]
    if not unknown:
        return None
    example = unknown[0]
    text = example.text if len(example.text) <= SHOWN_TEXT else example.text[: SHOWN_TEXT - 3] + "..."
    which = f"{count(len(unknown))} of {count(len(queries), 'queries')}" if len(queries) > 1 else "the query"
    verb = "have" if len(queries) > 1 else "has"
    message = (
        f"{which} {verb} no term known to the BM25 index of {plan.index_dir} (analyzer "
        f"{analyzer.describe()}), so BM25 finds nothing for them: e.g. {example.qid} {text!r}"
    )
    better = analyzer.suggest_for(query.text for query in unknown)
    if better is not None:
        build = f"`lyre index CORPUS --out INDEX --analyzer {better}`"
        return f"{message}; an index built with {build} may suit them"
    if not any(analyzer.analyze(query.text) for query in unknown):
        return f"{message}; they have no word the analyzer keeps"
    return f"{message}; their words do not occur in the indexed documents"


__all__ = ["check_queries", "check_search_memory", "unknown_term_warning", "warn_unknown_terms"]
