"""The three commands that write a run file: ``lyre search``, ``lyre rerank`` and ``lyre fuse``.

Each checks its options and where it will write before reading anything else, holds the output's lock
from then on (a second command writing the same ``--out`` is refused or waits), reads its inputs, does the
work through the plan, the reranker or the fusion registry, and publishes the run with a sidecar that
records the options, the inputs' hashes and the index (:mod:`basics.outputs`). Reranking keeps its finished
groups in ``OUT.parts/`` until the run is written, so a killed command resumes when rerun.

``out`` is a path, or the :class:`~basics.outputs.Output` the command line declared (checked there against
every input the command names, a settings file included); either way the function adds the inputs and
companion files it knows of and checks again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.errors import InputError, LyreError, OptionError, opt
from lyre.basics.options import check_options
from lyre.basics.outputs import Output, Source, output
from lyre.formats.records import Query, Run
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.fusion.linear import parse_weights  # where the weights are checked
from lyre.retrieval.options import (
    FuseOptions,
    RerankOptions,
    RerankRunOptions,
    SearchOptions,
    check_run_options,
)
from lyre.retrieval.rerank_parts import GroupScores, parts_folder

MISSING_SHOWN = 5
"""Query ids a missing-queries error names before '...'."""


def _run_output(out: Path | Output, inputs: Sequence[Source], reranking: bool) -> Output:
    """The run output checked against ``inputs``, with the sidecar and (reranking) the work folder."""
    from lyre.formats.runs import meta_path

    target = output(out, what="run")
    companions = [meta_path(target.path), *([parts_folder(target.path)] if reranking else [])]
    return target.guarding(inputs, companions)


def _load_queries(queries_path: Path, qrels: Path | None, topic_field: str) -> list[Query]:
    from lyre.formats.qrels import read_qrels
    from lyre.formats.queries import read_queries

    judged = {qrel.qid for qrel in read_qrels(qrels)} if qrels else None
    queries = read_queries(queries_path, topic_field=topic_field, only_ids=judged)
    if not queries:
        filtered = f" (after keeping only the queries judged in {qrels})" if qrels else ""
        raise LyreError(f"{queries_path}: no queries to search{filtered}; check the ids")
    return queries


def _query_file(path: Path, count: int) -> dict[str, Any]:
    from lyre.formats.irds import source_record

    return {**source_record(path, "queries"), "count": count}  # an irds: id records its id and version


def _write(out: Output, run: Run, tag: str, meta: dict[str, Any], started: float) -> str:
    from lyre.formats.runs import write_run

    write_run(out, run, tag=tag, meta=meta)
    lines = sum(len(docs) for docs in run.values())
    elapsed = time.perf_counter() - started
    return f"wrote {out.path}: {len(run)} queries, {lines} lines, tag {tag}, {elapsed:.1f} s"


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
    from lyre.indexes.manifest import PASSAGES
    from lyre.indexes.open_index import open_for_search
    from lyre.retrieval.plan import SearchPlan, check_plan_options, needed_stages

    started = time.perf_counter()
    check_plan_options(options, rerank_options)
    if cache is not None:
        check_options(cache)
    if aggregation is not None:
        aggregation.validate()
    reranking = rerank_options.rerank_depth > 0
    inputs = [Source("queries file", queries_path), Source("index", index_dir, contents=True)]
    target = _run_output(out, [*inputs, *([Source("qrels", qrels)] if qrels else [])], reranking)
    with target.claimed():
        queries = _load_queries(queries_path, qrels, topic_field)
        stages = needed_stages(options.mode)
        with open_for_search(index_dir, stages, wait=wait, if_built=(PASSAGES,)) as opened:
            plan = SearchPlan.open(index_dir, options, rerank_options, cache, aggregation, opened=opened)
            progress.say(f"searching {len(queries)} queries ({plan.tag})")
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
                "query_file": _query_file(queries_path, len(queries)),
                "qrels_filter": str(qrels) if qrels else None,
                "index": plan.index_summary(),
                "passages": plan.passages.sidecar(options.depth) if plan.passages is not None else None,
                "settings_file": settings_file,
                "cache": plan.cache.summary() if plan.cache is not None else None,
            }
            if plan.cache is not None:
                plan.cache.close()
            summary = _write(target, run, plan.tag, meta, started)
        if parts is not None:
            parts.remove()
    return summary


def _missing_queries(run: Run, queries: Sequence[Query], queries_path: Path, skip: bool) -> None:
    """Refuse a run whose queries lack a text in ``queries_path`` unless told to keep them unreranked."""
    known = {query.qid for query in queries}
    missing = [qid for qid in run if qid not in known]
    if not missing:
        return
    if skip:
        progress.say(
            f"{len(missing)} of {len(run)} run queries have no text in {queries_path}; kept unreranked"
        )
        return
    shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
    raise InputError(
        queries_path,
        None,
        f"{len(missing)} of the run's {len(run)} queries are not in this file ({shown})",
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
    from lyre.basics.provenance import sha256_file
    from lyre.formats.runs import read_run
    from lyre.indexes.docstore import DocStore
    from lyre.indexes.manifest import DOCSTORE, PASSAGES
    from lyre.indexes.open_index import open_for_search
    from lyre.retrieval.cache import SearchCache
    from lyre.retrieval.plan import check_rerank_template, load_reranker, locate_reranker
    from lyre.retrieval.rerank import rerank

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
    target = _run_output(out, inputs, reranking=True)
    with target.claimed():
        run = read_run(run_path)
        queries = _load_queries(queries_path, None, topic_field)
        _missing_queries(run, queries, queries_path, options.skip_missing_queries)
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
                "query_file": _query_file(queries_path, len(queries)),
                "index": {"path": str(index_dir.resolve()), "stages": opened.records},
                "cache": pair_cache.summary() if pair_cache is not None else None,
            }
            summary = _write(target, reranked, tag, meta, started)
        parts.remove()
    return summary


def fuse_run_files(run_paths: Sequence[Path], out: Path | Output, options: FuseOptions) -> str:
    """``lyre fuse``: fuse existing runs with the same registry the search plan uses."""
    from lyre.basics.provenance import sha256_file
    from lyre.formats.runs import read_run
    from lyre.retrieval import fusion
    from lyre.retrieval.plan import cut

    started = time.perf_counter()
    check_run_options(options)
    if len(run_paths) < 2:
        raise LyreError(f"fusion needs at least two run files (got {len(run_paths)})")
    method = fusion.method(options.fusion)
    weights = parse_weights(options.weights, len(run_paths))
    if weights is not None and "weights" not in {param.name for param in method.params}:
        raise OptionError("weights", options.weights, f"apply to linear fusion only (not {method.name})")
    arguments = method.arguments(options, **({"weights": weights} if weights is not None else {}))
    method.check(arguments)
    target = _run_output(out, [Source("input run", path) for path in run_paths], reranking=False)
    with target.claimed():
        fused = cut(method.fuse([read_run(path) for path in run_paths], arguments), options.k)
        tag = options.tag or f"lyre.fuse-{method.label(arguments)}"
        meta = {
            "inputs": [{"path": str(path), "sha256": sha256_file(path)} for path in run_paths],
            "settings": {**asdict(options), "parsed_weights": weights},
        }
        return _write(target, fused, tag, meta, started)
