"""What the commands that write a run file share: the guarded output, the queries, the summary line.

``lyre search`` (:mod:`retrieval.search_run`), ``lyre rerank`` (:mod:`retrieval.rerank_run`) and ``lyre
fuse`` (:mod:`retrieval.fuse_runs`) each check their options and where they will write before reading
anything else, hold the output's lock from then on (a second command writing the same ``--out`` is refused
or waits), and publish the run with a sidecar that records the options, the inputs' hashes and the index
(:mod:`basics.outputs`).

``out`` is a path, or the :class:`~basics.outputs.Output` the command line declared (checked there against
every input the command names, a settings file included); either way the command adds the inputs and
companion files it knows of and checks again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count, seconds
from lyre.basics.outputs import Output, Source, output
from lyre.formats.irds import source_record
from lyre.formats.qrels import read_qrels
from lyre.formats.queries import read_queries
from lyre.formats.records import Query, Run
from lyre.formats.runs import meta_path, write_run
from lyre.retrieval.rerank_parts import parts_folder


def run_output(out: Path | Output, inputs: Sequence[Source], reranking: bool) -> Output:
    """The run output checked against ``inputs``, with the sidecar and (reranking) the work folder."""
    target = output(out, what="run")
    companions = [meta_path(target.path), *([parts_folder(target.path)] if reranking else [])]
    return target.guarding(inputs, companions)


def load_queries(queries_path: Path, qrels: Path | None, topic_field: str) -> list[Query]:
    """The queries to search (only those judged in ``qrels``, where given); none is an error."""
    judged = {qrel.qid for qrel in read_qrels(qrels)} if qrels else None
    queries = read_queries(queries_path, topic_field=topic_field, only_ids=judged)
    if not queries:
        filtered = f" (after keeping only the queries judged in {qrels})" if qrels else ""
        raise LyreError(f"{queries_path}: no queries to search{filtered}; check the ids")
    return queries


def query_file_record(path: Path, queries: int) -> dict[str, Any]:
    """The sidecar's record of the queries file: its hash (an irds: id, its id and version) and count."""
    return {**source_record(path, "queries"), "count": queries}


def write_run_file(out: Output, run: Run, tag: str, meta: dict[str, Any], started: float) -> str:
    """Publish ``run`` and its sidecar; the summary line the command prints."""
    write_run(out, run, tag=tag, meta=meta)
    lines = sum(len(docs) for docs in run.values())
    elapsed = time.perf_counter() - started
    return (
        f"wrote {out.path}: {count(len(run), 'queries')}, {count(lines, 'lines')}, tag {tag}, "
        f"{seconds(elapsed)}"
    )
