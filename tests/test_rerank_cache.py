"""Reranker scores kept in the index's cache are reused by `lyre rerank`: a second `lyre rerank` of the
same run scores no pair and writes the same bytes as without the cache, and a rerank after a `lyre search`
reads the search's pairs. (Workers sent only the pairs the cache lacks: tests/test_rerank_workers.py.)"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import LyreCli, bm25_index_and_run
from lyre.formats.runs import meta_path
from lyre.retrieval.cache import CACHE_DIR, DATABASE

DEPTH = 5


def pair_counts(run: Path) -> tuple[int, int]:
    """The pair hits and misses a run's sidecar records."""
    cache = json.loads(meta_path(run).read_text())["cache"]
    return cache["hits"].get("pair", 0), cache["misses"].get("pair", 0)


def forget_cache(index: Path) -> None:
    shutil.rmtree(index / CACHE_DIR)


@pytest.fixture(scope="module")
def bm25(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> tuple[Path, Path]:
    """A BM25 index of the sample and a BM25 run of its 30 queries (20 documents each)."""
    return bm25_index_and_run(tmp_path_factory.mktemp("rerank-cache"), lyre, sample)


@pytest.mark.slow
def test_a_second_rerank_of_a_run_scores_no_pair_and_writes_the_same_bytes(
    bm25: tuple[Path, Path], lyre: LyreCli, sample: Path, qwen_reranker_folder: Path, tmp_path: Path
) -> None:
    index, run = bm25
    forget_cache(index)
    rerank = [
        "-q", "rerank", "--index", index, "--queries", sample / "queries.tsv", "--run", run,
        "--rerank-model", qwen_reranker_folder, "--rerank-depth", str(DEPTH), "--tag", "reranked",
    ]  # fmt: skip
    pairs = 30 * DEPTH
    lyre(*rerank, "--out", tmp_path / "first.run")
    assert pair_counts(tmp_path / "first.run") == (0, pairs)
    lyre(*rerank, "--out", tmp_path / "second.run")
    assert pair_counts(tmp_path / "second.run") == (pairs, 0)
    lyre(*rerank, "--no-cache", "--out", tmp_path / "uncached.run")
    assert json.loads(meta_path(tmp_path / "uncached.run").read_text())["cache"] is None
    first = (tmp_path / "first.run").read_bytes()
    assert first == (tmp_path / "second.run").read_bytes() == (tmp_path / "uncached.run").read_bytes()
    cached = sqlite3.connect(index / CACHE_DIR / DATABASE)
    (kept,) = cached.execute("SELECT COUNT(*) FROM entries WHERE key LIKE 'pair:%'").fetchone()
    cached.close()
    assert kept == pairs


@pytest.mark.slow
def test_a_rerank_after_a_search_reads_the_pairs_the_search_scored(
    bm25: tuple[Path, Path], lyre: LyreCli, sample: Path, qwen_reranker_folder: Path, tmp_path: Path
) -> None:
    index, run = bm25
    forget_cache(index)
    reranker = ["--rerank-model", qwen_reranker_folder, "--rerank-depth", str(DEPTH), "--tag", "same"]
    queries = sample / "queries.tsv"
    searched, reranked = tmp_path / "searched.run", tmp_path / "reranked.run"
    lyre(
        "-q", "search", "--index", index, "--queries", queries, "--mode", "bm25", "--k", "20",
        *reranker, "--out", searched,
    )  # fmt: skip
    assert pair_counts(searched) == (0, 30 * DEPTH)
    lyre("-q", "rerank", "--index", index, "--queries", queries, "--run", run, *reranker, "--out", reranked)
    assert pair_counts(reranked) == (30 * DEPTH, 0)
    assert reranked.read_bytes() == searched.read_bytes()
