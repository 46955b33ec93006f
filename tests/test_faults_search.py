"""The query side under faults (issue 11): ``lyre search`` and ``lyre rerank`` killed mid-rerank, a damaged
index, and an index held by a writer.

A killed command leaves the run at ``--out`` as it was (absent, or the previous run byte for byte); the
rerun scores only the rerank groups the killed one did not finish and writes the very run an uninterrupted
command writes. A refusal is one line ``error: ...`` naming the file or the holder, exit code 2, no
traceback. All through the command line in subprocesses, on the 120-document sample's BM25 index with a
tiny random Qwen2 reranker; the kill is a real SIGKILL sent from outside once some groups are saved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPOSITORY, SAMPLE, LyreCli, holding_write_lock, one_line_error, wait_for
from lyre.basics.lock import LockedError, index_lock
from lyre.formats.runs import meta_path, rank_order, read_run
from lyre.retrieval.rerank import query_groups
from lyre.retrieval.rerank_parts import parts_folder

QUERIES = SAMPLE / "queries.tsv"
FIRST_K = 20
"""Hits per query of the first-stage run the reranking tests start from."""
DEPTH = 10
"""Documents reranked per query."""
GROUP_PAIRS = 30
"""Pairs per rerank group: about 3 queries, so the sample's 30 queries make about 10 groups of a few
tenths of a second each on a CPU (time for the test to see some saved and kill the command)."""
KILL_AFTER = 2
"""Saved groups the test waits for before it kills the command."""
SMALL_GROUPS = """
import sys
from lyre.retrieval import rerank as rerank_module
rerank_module.RERANK_GROUP_PAIRS = int(sys.argv[1])
sys.argv = ["lyre", *sys.argv[2:]]
from lyre.cli.app import main
main()
"""
"""`lyre` with rerank groups of ``argv[1]`` pairs (the default, 8192, would put the sample in one group)."""
BAR = re.compile(r"rerank: ([\d.]+)/([\d.]+) pairs")


def small_groups(*args: str | Path) -> list[str]:
    """The command line of `lyre ARGS` reranking in groups of :data:`GROUP_PAIRS` pairs."""
    return [sys.executable, "-c", SMALL_GROUPS, str(GROUP_PAIRS), *map(str, args)]


def run_to_end(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def saved_records(out: Path) -> list[dict[str, int]]:
    """The completion records of the groups saved in ``OUT.parts``."""
    return [json.loads(path.read_text()) for path in sorted(parts_folder(out).glob("group-*.json"))]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> Path:
    """The sample's BM25 index, shared: the tests here only read it (the damage test copies it)."""
    folder = tmp_path_factory.mktemp("search-faults") / "index"
    lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", folder, "--bm25-only")
    return folder


@pytest.fixture(scope="module")
def first_stage(index: Path, lyre: LyreCli) -> Path:
    """A BM25 run of the sample, :data:`FIRST_K` hits per query: what ``lyre rerank`` reranks."""
    run = index.parent / "bm25.run"
    lyre("-q", *search_args(index, run, "--rerank-depth", "0"))
    return run


def search_args(index: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "search", "--index", index, "--queries", QUERIES, "--mode", "bm25", "--k", str(FIRST_K),
        "--out", out, *extra,
    ]  # fmt: skip


def reranking(model: Path) -> list[str | Path]:
    return ["--rerank-model", model, "--rerank-depth", str(DEPTH)]


def rerank_args(index: Path, run: Path, out: Path, model: Path) -> list[str | Path]:
    return ["rerank", "--index", index, "--queries", QUERIES, "--run", run, "--out", out, *reranking(model)]


def group_sizes(run: Path) -> list[int]:
    """The pairs of each rerank group of ``run`` (every query has a text), as the reranker groups them."""
    heads = {qid: [docid for docid, _ in rank_order(docs)[:DEPTH]] for qid, docs in read_run(run).items()}
    return [sum(len(heads[qid]) for qid in group) for group in query_groups(heads, GROUP_PAIRS)]


def kill_after_some_groups(argv: list[str], out: Path, index: Path) -> list[dict[str, int]]:
    """Start ``argv``, SIGKILL it once :data:`KILL_AFTER` groups are saved, and return the saved records.
    While it reranks, it still holds the index's read lock: a writer is refused, naming it."""
    process = subprocess.Popen(argv, cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(saved_records(out)) >= KILL_AFTER or process.poll() is not None, "saved groups")
        assert process.poll() is None, "the command finished before it could be killed"
        reading = re.escape(f"{index} is being read by pid {process.pid} ")
        with pytest.raises(LockedError, match=reading), index_lock(index, "write"):
            pass
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return saved_records(out)


def check_resumed(
    rerun: subprocess.CompletedProcess[str], saved: list[dict[str, int]], sizes: list[int]
) -> None:
    """The rerun read the ``saved`` groups and scored exactly the pairs of the others."""
    assert KILL_AFTER <= len(saved) < len(sizes)
    assert f"rerank: {len(saved)} of {len(sizes)} groups already scored in " in rerun.stderr
    done, total = BAR.findall(rerun.stderr)[-1]
    missing_pairs = sum(sizes) - sum(record["pairs"] for record in saved)
    assert float(done) == float(total) == missing_pairs > 0


# Killed mid-rerank ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_rerank_resumes_with_only_the_missing_groups_and_writes_the_same_run(
    index: Path, first_stage: Path, qwen_reranker_folder: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.run"
    run_to_end(small_groups("-q", *rerank_args(index, first_stage, whole, qwen_reranker_folder)))
    sizes = group_sizes(first_stage)
    assert len(sizes) > KILL_AFTER + 2

    out = tmp_path / "resumed.run"
    # --no-cache: the whole run above kept every pair's score; these commands must score theirs.
    argv = [*small_groups(*rerank_args(index, first_stage, out, qwen_reranker_folder)), "--no-cache"]
    saved = kill_after_some_groups(argv, out, index)
    assert not out.exists() and not meta_path(out).exists()

    rerun = run_to_end(argv)
    check_resumed(rerun, saved, sizes)
    assert out.read_bytes() == whole.read_bytes()
    assert not parts_folder(out).exists()


@pytest.mark.slow
def test_a_killed_search_keeps_the_previous_run_and_resumes_to_the_same_run(
    index: Path, qwen_reranker_folder: Path, tmp_path: Path, lyre: LyreCli
) -> None:
    whole = tmp_path / "whole.run"
    run_to_end(small_groups("-q", *search_args(index, whole, *reranking(qwen_reranker_folder))))

    out = tmp_path / "out.run"
    lyre("-q", *search_args(index, out, "--rerank-depth", "0"))  # the previous run at --out
    previous, previous_meta = out.read_bytes(), meta_path(out).read_bytes()
    sizes = group_sizes(out)  # the reranked search starts from this very first stage
    argv = [*small_groups(*search_args(index, out, *reranking(qwen_reranker_folder))), "--no-cache"]
    saved = kill_after_some_groups(argv, out, index)
    assert out.read_bytes() == previous and meta_path(out).read_bytes() == previous_meta

    rerun = run_to_end(argv)
    check_resumed(rerun, saved, sizes)
    assert out.read_bytes() == whole.read_bytes()
    assert not parts_folder(out).exists()


# A damaged index ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "damaged"),
    [("search", "bm25/data.csc.index.npy"), ("search", "bm25/vocab.index.json"),
     ("rerank", "docstore/part-00000.parquet")],
)  # fmt: skip
def test_a_damaged_index_is_refused_naming_the_file_and_the_repair(
    index: Path,
    first_stage: Path,
    qwen_reranker_folder: Path,
    tmp_path: Path,
    lyre: LyreCli,
    command: str,
    damaged: str,
) -> None:
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    path = copy / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = tmp_path / "out.run"
    if command == "search":
        args = search_args(copy, out, "--rerank-depth", "0")
    else:
        args = rerank_args(copy, first_stage, out, qwen_reranker_folder)
    refused = lyre("-q", *args, check=False)
    line = one_line_error(refused, f"error: {path}: ", f"the {damaged.split('/')[0]} stage is damaged")
    assert f"--out {copy} --verify`" in line
    assert not out.exists() and not parts_folder(out).exists()


# A writer holding the index ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["search", "rerank"])
def test_a_writer_holding_the_index_is_named_and_waited_for_with_wait(
    index: Path,
    first_stage: Path,
    qwen_reranker_folder: Path,
    tmp_path: Path,
    lyre: LyreCli,
    command: str,
) -> None:
    def args(out: Path) -> list[str | Path]:
        if command == "search":
            return search_args(index, out, "--rerank-depth", "0")
        return rerank_args(index, first_stage, out, qwen_reranker_folder)

    unlocked = tmp_path / "unlocked.run"
    lyre("-q", *args(unlocked))
    with holding_write_lock(index) as holder:
        refused_out = tmp_path / "refused.run"
        refused = lyre("-q", *args(refused_out), check=False)
        one_line_error(refused, f"error: {index} is being written by pid {holder.pid} on ", "pass --wait")
        assert not refused_out.exists()

        waited_out = tmp_path / "waited.run"
        waiter = subprocess.Popen(
            lyre.argv(*args(waited_out), "--wait"), cwd=REPOSITORY, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert waiter.stderr is not None
        status = next((line for line in waiter.stderr if "waiting" in line), "(exited without waiting)")
        assert status.startswith(f"{index} is being written by pid {holder.pid} on {socket.gethostname()} ")
        assert status.rstrip().endswith("; waiting until it finishes")
        assert waiter.poll() is None and not waited_out.exists()
    _, rest = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, rest
    assert waited_out.read_bytes() == unlocked.read_bytes()
