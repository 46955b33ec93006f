"""Search speed with and without pseudo-relevance feedback: queries per second of each configuration of
``docs/feedback.md`` (BM25 and its RM3, Rocchio and Bo1; dense and its Rocchio; hybrid and hybrid with
both), on one index and the judged queries of one qrels file.

Each configuration gets its own plan, every part opened before the clock starts (the docstore, BM25, the
dense index, the query encoder: what a warm ``lyre serve`` holds), no cache, no reranking; the clock times
``SearchPlan.search`` of all the queries, which includes query encoding (the dense side encodes every query
again), the first search, the feedback round and the second search. The configurations take turns, round
after round, and the best of ``--repeat`` rounds is reported (a shared machine's other load only ever slows
a round down).

Usage: ``python benchmarks/feedback_speed.py --index INDEX --queries QUERIES --qrels QRELS [--repeat N]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

CONFIGURATIONS = {
    "BM25": {"mode": "bm25"},
    "BM25+RM3": {"mode": "bm25", "prf": "rm3"},
    "BM25+Rocchio": {"mode": "bm25", "prf": "rocchio"},
    "BM25+Bo1": {"mode": "bm25", "prf": "bo1"},
    "dense": {"mode": "dense"},
    "dense+Rocchio": {"mode": "dense", "dense_prf": "rocchio"},
    "hybrid": {"mode": "hybrid"},
    "hybrid+RM3+dense Rocchio": {"mode": "hybrid", "prf": "rm3", "dense_prf": "rocchio"},
}


def warm_plan(index: Path, queries: list, settings: dict) -> Any:
    """A plan with ``settings``, every part opened and one small search made (thread pools, caches of
    analysed words: what a warm server holds), without the index's cache."""
    from lyre.retrieval.cache import CacheOptions, Deferred
    from lyre.retrieval.options import RerankOptions, SearchOptions
    from lyre.retrieval.plan import SearchPlan

    options = SearchOptions(**settings)
    plan = SearchPlan.open(index, options, RerankOptions(rerank_depth=0), CacheOptions(no_cache=True))
    for part in (plan.store, plan.bm25, plan.dense, plan.embedder):
        Deferred.now(part)
    plan.search(queries[:2])
    return plan


def best_rates(plans: dict[str, Any], queries: list, repeat: int) -> dict[str, float]:
    """Each plan's best queries/s over ``repeat`` rounds; every round times each plan once, in turn, so a
    burst of load on a shared machine falls on one round of every configuration, not on one of them."""
    best = dict.fromkeys(plans, 0.0)
    for _ in range(repeat):
        for name, plan in plans.items():
            started = time.perf_counter()
            plan.search(queries)
            best[name] = max(best[name], len(queries) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="A hybrid (BM25 + dense) lyre index.")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True, help="Search only the queries judged here.")
    parser.add_argument("--repeat", type=int, default=3, help="Repetitions; the best is reported.")
    args = parser.parse_args()

    from lyre.basics import progress
    from lyre.basics.numbers import rate
    from lyre.formats.qrels import read_qrels
    from lyre.formats.queries import read_queries

    progress.set_quiet(True)
    judged = {qrel.qid for qrel in read_qrels(args.qrels)}
    queries = read_queries(args.queries, only_ids=judged)
    plans = {name: warm_plan(args.index, queries, settings) for name, settings in CONFIGURATIONS.items()}
    rates = best_rates(plans, queries, args.repeat)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    print(f"{args.index}: {len(queries)} queries; {machine}")
    print("| configuration | queries/s |")
    print("|---|---:|")
    for name, found in rates.items():
        print(f"| {name} | {rate(found, 'queries')} |")


if __name__ == "__main__":
    main()
