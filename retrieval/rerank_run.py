"""``lyre rerank``: the top of an existing run file reranked with the index's texts.

The options are checked and the output claimed before anything is read (:mod:`retrieval.run_output`).
Reranking keeps its finished groups in ``OUT.parts/`` until the run is written, so a killed command
resumes when rerun; scores are shared with ``lyre search`` through the index's cache.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lyre.basics import progress
from lyre.basics.declared import check_options
from lyre.basics.errors import InputError, OptionError, opt
from lyre.basics.numbers import count
from lyre.basics.outputs import Output, Source
from lyre.basics.provenance import sha256_file
from lyre.formats.records import Query, Run
from lyre.formats.runs import read_run
from lyre.indexes.docstore import DocStore
from lyre.indexes.manifest import DOCSTORE, PASSAGES
from lyre.indexes.open_index import open_for_search
from lyre.retrieval.cache import CacheOptions, SearchCache
from lyre.retrieval.options import RerankOptions, RerankRunOptions, check_run_options
from lyre.retrieval.plan import check_rerank_template, load_reranker, locate_reranker
from lyre.retrieval.rerank import rerank
from lyre.retrieval.rerank_parts import GroupScores, parts_folder
from lyre.retrieval.run_output import load_queries, query_file_record, run_output, write_run_file

MISSING_SHOWN = 5
"""Query ids a missing-queries error names before '...'."""


def check_queries_cover_run(run: Run, queries: Sequence[Query], queries_path: Path, skip: bool) -> None:
    """Refuse a run whose queries lack a text in ``queries_path`` unless told to keep them unreranked."""
    known = {query.qid for query in queries}
    missing = [qid for qid in run if qid not in known]
    if not missing:
        return
    if skip:
        progress.say(
            f"{count(len(missing))} of {count(len(run), 'run queries')} have no text in {queries_path}; "
            "kept unreranked"
        )
        return
    shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
    raise InputError(
        queries_path,
        None,
        f"{count(len(missing))} of the run's {count(len(run), 'queries')} are not in this file ({shown})",
        f"pass the queries the run was made from, or {opt('skip_missing_queries')} to keep them unreranked",
    )


def rerank_run_file(
    index_dir: Path,
    queries_path: Path,
    run_path: Path,
    out: Path | Output,
    rerank_options: RerankOptions,
    options: RerankRunOptions,
    *,
    topic_field: str = "title",
    cache: CacheOptions | None = None,
    wait: bool = False,
) -> str:
    """``lyre rerank``: rerank the top ``rerank_depth`` of an existing run file with the index's texts.

    ``cache``: reuse (and keep) reranker scores in the index's cache (None: off); they are shared with
    ``lyre search``, whose reranker identity is the same. The index's read lock is held from opening to
    the written run, and the output's lock from the checks to the end; ``wait``: wait for a command
    writing the index, or the same output, instead of stopping."""
    started = time.perf_counter()
    check_run_options(options)
    check_options(rerank_options)
    if cache is not None:
        check_options(cache)
    if rerank_options.rerank_depth < 1:
        raise OptionError("rerank_depth", rerank_options.rerank_depth, "must be at least 1 to rerank a run")
    check_rerank_template(rerank_options)
    inputs = [
        Source("queries file", queries_path),
        Source("input run", run_path),
        Source("index", index_dir, contents=True),
    ]
    target = run_output(out, inputs, reranking=True)
    with target.claimed():
        run = read_run(run_path)
        queries = load_queries(queries_path, None, topic_field)
        check_queries_cover_run(run, queries, queries_path, options.skip_missing_queries)
        with open_for_search(index_dir, (DOCSTORE,), wait=wait, if_built=(PASSAGES,)) as opened:
            reranker = load_reranker(locate_reranker(rerank_options, optional=False), rerank_options)
            parts = GroupScores(parts_folder(target.path))
            depth = rerank_options.rerank_depth
            store = DocStore.open(index_dir / DOCSTORE)
            pair_cache = SearchCache.open(index_dir, cache) if cache is not None else None
            try:
                reranked = rerank(
                    run,
                    queries,
                    store,
                    reranker.model,
                    depth,
                    parts=parts,
                    identity=reranker.identity,
                    pair_cache=pair_cache,
                )
            finally:
                reranker.close()  # its worker processes or Ray actors
                if pair_cache is not None:
                    pair_cache.close()
            tag = options.tag or f"{run_path.stem}.rerank{depth}"
            meta = {
                "reranked_run": {"path": str(run_path), "sha256": sha256_file(run_path)},
                "settings": {**asdict(rerank_options), **asdict(options)},
                "reranker": reranker.settings,
                "query_file": query_file_record(queries_path, len(queries)),
                "index": {"path": str(index_dir.resolve()), "stages": opened.records},
                "cache": pair_cache.summary() if pair_cache is not None else None,
            }
            summary = write_run_file(target, reranked, tag, meta, started)
        parts.remove()
    return summary
