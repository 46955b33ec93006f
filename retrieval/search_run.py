"""``lyre search``: queries searched through one plan into a run file with its sidecar.

The options are checked and the output claimed before anything is read (:mod:`retrieval.run_output`);
the index is read-locked from opening to the written run. The sidecar records the settings, the index's
stage records, the queries file and how the run was made (:func:`retrieval.run_tags.search_record`: the
dense engine, nprobe and refine actually used, the aggregation of a passage index).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.declared import check_options
from lyre.basics.numbers import count
from lyre.basics.outputs import Output, Source
from lyre.indexes.manifest import PASSAGES
from lyre.indexes.open_index import open_for_search
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan, check_plan_options, needed_stages
from lyre.retrieval.rerank_parts import GroupScores, parts_folder
from lyre.retrieval.run_output import load_queries, query_file_record, run_output, write_run_file
from lyre.retrieval.run_tags import search_record


def search_to_run(
    index_dir: Path,
    queries_path: Path,
    out: Path | Output,
    options: SearchOptions,
    rerank_options: RerankOptions,
    *,
    qrels: Path | None = None,
    topic_field: str = "title",
    cache: CacheOptions | None = None,
    settings_file: dict[str, Any] | None = None,
    aggregation: AggregationOptions | None = None,
    wait: bool = False,
) -> str:
    """``lyre search``: read queries, search them through one plan, write the run and its sidecar.

    ``cache``: reuse (and keep) earlier work in the index's cache (None: off). ``settings_file``: the
    record of an applied settings file (:func:`retrieval.settings_file.settings_record`) for the sidecar.
    The index's read lock is held from opening to the written run
    (:func:`~indexes.open_index.open_for_search`), and the output's lock from the checks to the end;
    ``wait``: wait for a command writing the index, or the same output, instead of stopping.
    """
    started = time.perf_counter()
    check_plan_options(options, rerank_options)
    if cache is not None:
        check_options(cache)
    if aggregation is not None:
        aggregation.validate()
    reranking = rerank_options.rerank_depth > 0
    inputs = [Source("queries file", queries_path), Source("index", index_dir, contents=True)]
    target = run_output(out, [*inputs, *([Source("qrels", qrels)] if qrels else [])], reranking)
    with target.claimed():
        queries = load_queries(queries_path, qrels, topic_field)
        stages = needed_stages(options.mode)
        with open_for_search(index_dir, stages, wait=wait, if_built=(PASSAGES,)) as opened:
            plan = SearchPlan.open(index_dir, options, rerank_options, cache, aggregation, opened=opened)
            progress.say(f"searching {count(len(queries), 'queries')} ({plan.tag})")
            if plan.passages is not None:
                progress.say(plan.passages.describe())
            parts = GroupScores(parts_folder(target.path)) if reranking else None
            try:
                run = plan.search(queries, parts)
            finally:
                if plan.reranker is not None:
                    plan.reranker.close()  # its worker processes or Ray actors
            meta = {
                "settings": asdict(options),
                "rerank": asdict(rerank_options),
                "reranker": plan.reranker.settings if plan.reranker is not None else None,
                "query_file": query_file_record(queries_path, len(queries)),
                "qrels_filter": str(qrels) if qrels else None,
                "index": plan.index_summary(),
                "search": search_record(plan),
                "passages": plan.passages.sidecar(options.depth) if plan.passages is not None else None,
                "feedback": plan.feedback_record(queries),
                "settings_file": settings_file,
                "cache": plan.cache.summary() if plan.cache is not None else None,
            }
            if plan.cache is not None:
                plan.cache.close()
            summary = write_run_file(target, run, plan.tag, meta, started)
        if parts is not None:
            parts.remove()
    return summary
